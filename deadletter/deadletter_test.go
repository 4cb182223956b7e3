package deadletter_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sized returns a message whose Size is n bytes.
func sized(n int) *actors.Message {
	return &actors.Message{Type: actors.TypeBroadcast, Payload: make(json.RawMessage, n)}
}

func seqs(ls []deadletter.Letter) []uint64 {
	out := []uint64{}
	for _, l := range ls {
		out = append(out, l.Seq)
	}
	return out
}

func TestAddStamps(t *testing.T) {
	q := deadletter.New(10, 0)
	before := time.Now()
	for i := range 3 {
		l := q.Add(deadletter.Letter{Reason: deadletter.Expired})
		assert.EqualValues(t, i+1, l.Seq)
		assert.False(t, l.Time.Before(before), "Time stamped")
		assert.False(t, l.Time.After(time.Now()))
	}

	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l := q.Add(deadletter.Letter{Time: at, Seq: 99})
	assert.Equal(t, at, l.Time, "a given Time is kept")
	assert.EqualValues(t, 4, l.Seq, "Seq is always stamped")

	m := sized(1)
	m.Attempts = 5
	assert.Equal(t, 5, q.Add(deadletter.Letter{Message: m}).Attempts, "attempts from the message")
	assert.Equal(t, 2, q.Add(deadletter.Letter{Message: m, Attempts: 2}).Attempts, "explicit attempts kept")

	stored, ok := q.Get(4)
	require.True(t, ok)
	assert.Equal(t, l, stored, "Add returns the stored letter")
}

func TestBoundByCount(t *testing.T) {
	q := deadletter.New(3, 0)
	reasons := []deadletter.Reason{deadletter.Expired, deadletter.MailboxFull, deadletter.Expired, deadletter.HandlerError, deadletter.Expired}
	for _, r := range reasons {
		q.Add(deadletter.Letter{Reason: r})
	}
	assert.Equal(t, 3, q.Len())
	assert.EqualValues(t, 2, q.Evicted())
	assert.EqualValues(t, 5, q.Total())
	assert.Equal(t, []uint64{3, 4, 5}, seqs(q.List(deadletter.Filter{})), "the oldest are evicted")
	assert.Equal(t, map[deadletter.Reason]uint64{
		deadletter.Expired:      3,
		deadletter.MailboxFull:  1,
		deadletter.HandlerError: 1,
	}, q.Counts(), "counts include evicted letters")

	// Many more, so the ring wraps several times.
	for range 100 {
		q.Add(deadletter.Letter{Reason: deadletter.Shutdown})
	}
	assert.Equal(t, []uint64{103, 104, 105}, seqs(q.List(deadletter.Filter{})))
	assert.EqualValues(t, 102, q.Evicted())

	counts := q.Counts()
	counts[deadletter.Shutdown] = 0
	assert.EqualValues(t, 100, q.Counts()[deadletter.Shutdown], "Counts returns a copy")
}

func TestBoundByBytes(t *testing.T) {
	tests := []struct {
		name        string
		sizes       []int // message sizes added in order; -1 adds a foreign letter
		wantSeqs    []uint64
		wantEvicted uint64
	}{
		{name: "fits", sizes: []int{30, 30, 40}, wantSeqs: []uint64{1, 2, 3}},
		{name: "one more evicts the oldest", sizes: []int{30, 30, 40, 30}, wantSeqs: []uint64{2, 3, 4}, wantEvicted: 1},
		{name: "a big one evicts several", sizes: []int{30, 30, 40, 90}, wantSeqs: []uint64{4}, wantEvicted: 3},
		{name: "oversize is kept alone", sizes: []int{10, 20, 500}, wantSeqs: []uint64{3}, wantEvicted: 2},
		{name: "oversize into an empty queue", sizes: []int{500}, wantSeqs: []uint64{1}},
		{name: "oversize is evicted by the next", sizes: []int{500, 1}, wantSeqs: []uint64{2}, wantEvicted: 1},
		{name: "foreign letters weigh nothing", sizes: []int{100, -1, -1}, wantSeqs: []uint64{1, 2, 3}},
		{name: "exactly the bound", sizes: []int{50, 50}, wantSeqs: []uint64{1, 2}},
		{name: "one byte over the bound", sizes: []int{50, 51}, wantSeqs: []uint64{2}, wantEvicted: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := deadletter.New(100, 100)
			for _, n := range tt.sizes {
				if n < 0 {
					q.Add(deadletter.Letter{Value: "foreign", Reason: deadletter.UnsupportedMessage})
				} else {
					q.Add(deadletter.Letter{Message: sized(n), Reason: deadletter.Expired})
				}
			}
			assert.Equal(t, tt.wantSeqs, seqs(q.List(deadletter.Filter{})))
			assert.Equal(t, tt.wantEvicted, q.Evicted())
			assert.EqualValues(t, len(tt.sizes), q.Total())
		})
	}
}

func TestBytesFreedByEviction(t *testing.T) {
	// Evictions by count must give their bytes back, or the byte bound
	// would later evict letters it has room for.
	q := deadletter.New(2, 100)
	for range 10 {
		q.Add(deadletter.Letter{Message: sized(40)})
	}
	q.Add(deadletter.Letter{Message: sized(60)})
	assert.Equal(t, []uint64{10, 11}, seqs(q.List(deadletter.Filter{})))

	q.Purge()
	q.Add(deadletter.Letter{Message: sized(60)})
	q.Add(deadletter.Letter{Message: sized(40)})
	assert.Equal(t, 2, q.Len(), "Purge gives the bytes back")
}

func TestList(t *testing.T) {
	q := deadletter.New(100, 0)
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	add := func(min int, r deadletter.Reason, agent, topic string) {
		l := deadletter.Letter{Reason: r, Agent: agent, Time: t0.Add(time.Duration(min) * time.Minute)}
		if topic != "-" {
			l.Message = &actors.Message{Type: actors.TypePublish, Topic: topic}
		} else {
			l.Value = 42
		}
		q.Add(l)
	}
	add(0, deadletter.Expired, "a", "jobs")         // 1
	add(1, deadletter.HandlerError, "b", "jobs")    // 2
	add(2, deadletter.Expired, "b", "news")         // 3
	add(3, deadletter.NoRecipient, "", "")          // 4
	add(4, deadletter.UnsupportedMessage, "a", "-") // 5
	add(5, deadletter.Expired, "a", "jobs")         // 6

	tests := []struct {
		name string
		give deadletter.Filter
		want []uint64
	}{
		{name: "everything", want: []uint64{1, 2, 3, 4, 5, 6}},
		{name: "reason", give: deadletter.Filter{Reason: deadletter.Expired}, want: []uint64{1, 3, 6}},
		{name: "reason without letters", give: deadletter.Filter{Reason: deadletter.Shutdown}, want: []uint64{}},
		{name: "agent", give: deadletter.Filter{Agent: "a"}, want: []uint64{1, 5, 6}},
		{name: "unknown agent", give: deadletter.Filter{Agent: "zz"}, want: []uint64{}},
		{name: "topic", give: deadletter.Filter{Topic: "jobs"}, want: []uint64{1, 2, 6}},
		{name: "topic skips foreign letters", give: deadletter.Filter{Topic: "news"}, want: []uint64{3}},
		{name: "since is inclusive", give: deadletter.Filter{Since: t0.Add(3 * time.Minute)}, want: []uint64{4, 5, 6}},
		{name: "since after all", give: deadletter.Filter{Since: t0.Add(time.Hour)}, want: []uint64{}},
		{name: "limit keeps the newest", give: deadletter.Filter{Limit: 2}, want: []uint64{5, 6}},
		{name: "limit above the count", give: deadletter.Filter{Limit: 50}, want: []uint64{1, 2, 3, 4, 5, 6}},
		{name: "negative limit is none", give: deadletter.Filter{Limit: -1}, want: []uint64{1, 2, 3, 4, 5, 6}},
		{name: "limit after filtering", give: deadletter.Filter{Reason: deadletter.Expired, Limit: 2}, want: []uint64{3, 6}},
		{
			name: "every field",
			give: deadletter.Filter{Reason: deadletter.Expired, Agent: "a", Topic: "jobs", Since: t0.Add(time.Minute), Limit: 5},
			want: []uint64{6},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, seqs(q.List(tt.give)))
		})
	}

	t.Run("returns copies", func(t *testing.T) {
		ls := q.List(deadletter.Filter{Limit: 1})
		ls[0].Reason = "changed"
		l, ok := q.Get(6)
		require.True(t, ok)
		assert.Equal(t, deadletter.Expired, l.Reason)
	})
}

func TestGet(t *testing.T) {
	q := deadletter.New(4, 0)
	_, ok := q.Get(1)
	assert.False(t, ok, "empty queue")

	for i := range 10 { // wraps the ring
		q.Add(deadletter.Letter{Agent: fmt.Sprint("agent", i+1)})
	}
	tests := []struct {
		seq       uint64
		wantOK    bool
		wantAgent string
	}{
		{seq: 0},
		{seq: 1}, // evicted
		{seq: 6}, // evicted, just
		{seq: 7, wantOK: true, wantAgent: "agent7"},
		{seq: 8, wantOK: true, wantAgent: "agent8"},
		{seq: 10, wantOK: true, wantAgent: "agent10"},
		{seq: 11},         // not yet
		{seq: ^uint64(0)}, // far off
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.seq), func(t *testing.T) {
			l, ok := q.Get(tt.seq)
			require.Equal(t, tt.wantOK, ok)
			if ok {
				assert.Equal(t, tt.seq, l.Seq)
				assert.Equal(t, tt.wantAgent, l.Agent)
			}
		})
	}
}

func TestPurge(t *testing.T) {
	q := deadletter.New(3, 0)
	for _, r := range []deadletter.Reason{deadletter.Expired, deadletter.Expired, deadletter.Shutdown, deadletter.HandlerPanic} {
		q.Add(deadletter.Letter{Reason: r})
	}
	counts := q.Counts()
	assert.Equal(t, 3, q.Purge())
	assert.Zero(t, q.Len())
	assert.Empty(t, q.List(deadletter.Filter{}))
	_, ok := q.Get(4)
	assert.False(t, ok)
	assert.EqualValues(t, 4, q.Total(), "Total is kept")
	assert.EqualValues(t, 1, q.Evicted(), "Evicted is kept")
	assert.Equal(t, counts, q.Counts(), "Counts are kept")
	assert.Zero(t, q.Purge(), "purging an empty queue")

	l := q.Add(deadletter.Letter{Reason: deadletter.Expired})
	assert.EqualValues(t, 5, l.Seq, "sequence numbers go on")
	got, ok := q.Get(5)
	require.True(t, ok)
	assert.Equal(t, l, got)
	assert.Equal(t, []uint64{5}, seqs(q.List(deadletter.Filter{})))
}

func TestConcurrent(t *testing.T) {
	const (
		writers, each = 16, 500
		max           = 100
	)
	q := deadletter.New(max, 10_000)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				l := q.Add(deadletter.Letter{
					Message: sized(i % 50),
					Reason:  deadletter.Reasons[(w+i)%len(deadletter.Reasons)],
					Agent:   fmt.Sprint("agent", w),
				})
				if l.Seq == 0 {
					t.Errorf("writer %d: Seq not stamped", w)
				}
			}
		})
	}
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				ls := q.List(deadletter.Filter{Agent: "agent3", Limit: 10})
				for i := 1; i < len(ls); i++ {
					if ls[i].Seq <= ls[i-1].Seq {
						t.Errorf("List out of order: %d after %d", ls[i].Seq, ls[i-1].Seq)
					}
				}
				if n := q.Len(); n > max {
					t.Errorf("Len %d above %d", n, max)
				}
				if total := q.Total(); total > 0 {
					if l, ok := q.Get(total); ok && l.Seq != total {
						t.Errorf("Get(%d) returned Seq %d", total, l.Seq)
					}
				}
				_ = q.Counts()
				_ = q.Evicted()
			}
		})
	}
	wg.Wait()
	close(done)
	readers.Wait()

	assert.EqualValues(t, writers*each, q.Total())
	assert.LessOrEqual(t, q.Len(), max)
	assert.EqualValues(t, q.Total()-uint64(q.Len()), q.Evicted())
	var sum uint64
	for _, n := range q.Counts() {
		sum += n
	}
	assert.Equal(t, q.Total(), sum)
	ls := q.List(deadletter.Filter{})
	for i := 1; i < len(ls); i++ {
		require.Equal(t, ls[i-1].Seq+1, ls[i].Seq, "held letters are consecutive")
	}
}

func TestNewDefaults(t *testing.T) {
	for _, args := range [][2]int{{0, 0}, {-1, -1}} {
		t.Run(fmt.Sprint(args), func(t *testing.T) {
			q := deadletter.New(args[0], args[1])
			for range deadletter.DefaultMaxLetters + 1 {
				q.Add(deadletter.Letter{Reason: deadletter.Expired})
			}
			assert.Equal(t, deadletter.DefaultMaxLetters, q.Len())
			assert.EqualValues(t, 1, q.Evicted())

			q.Purge()
			half := make(json.RawMessage, deadletter.DefaultMaxBytes/2+1) // shared: allocated once
			q.Add(deadletter.Letter{Message: &actors.Message{Payload: half}})
			q.Add(deadletter.Letter{Message: &actors.Message{Payload: half}})
			assert.Equal(t, 1, q.Len(), "the default byte bound holds one of two")
			q.Purge()
			q.Add(deadletter.Letter{Message: &actors.Message{Payload: half[:deadletter.DefaultMaxBytes/2]}})
			q.Add(deadletter.Letter{Message: &actors.Message{Payload: half[:deadletter.DefaultMaxBytes/2]}})
			assert.Equal(t, 2, q.Len(), "and both of two halves")
		})
	}
}

func TestReasons(t *testing.T) {
	seen := map[deadletter.Reason]bool{}
	for _, r := range deadletter.Reasons {
		assert.False(t, seen[r], "duplicate %q", r)
		seen[r] = true
		assert.Equal(t, strings.ToLower(string(r)), string(r))
		assert.NotContains(t, string(r), " ")
	}
	assert.Len(t, deadletter.Reasons, 17)
}

func TestLetterString(t *testing.T) {
	m := &actors.Message{ID: "m-1"}
	tests := []struct {
		name string
		give deadletter.Letter
		want string
	}{
		{
			name: "message",
			give: deadletter.Letter{Seq: 3, Message: m, Reason: deadletter.Expired, Agent: "bob", Err: "agentbus: message expired"},
			want: `dead letter 3: m-1 for "bob" (expired) agentbus: message expired`,
		},
		{
			name: "foreign value",
			give: deadletter.Letter{Seq: 4, Value: 42, Reason: deadletter.UnsupportedMessage},
			want: `dead letter 4: int for "" (unsupported_message) `,
		},
		{
			name: "nothing",
			give: deadletter.Letter{Seq: 5, Reason: deadletter.Shutdown},
			want: `dead letter 5: - for "" (shutdown) `,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.give.String())
		})
	}
}

func TestActor(t *testing.T) {
	system := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		// A dead letter starts a protoactor goroutine that lives for this
		// interval (1s by default), longer than goleak waits for it.
		actor.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	defer system.Shutdown()
	q := deadletter.New(10, 0)
	pid := system.Root.Spawn(deadletter.Actor(q))
	defer func() { _ = system.Root.StopFuture(pid).Wait() }()

	m := &actors.Message{ID: "m-1", Type: actors.TypeDirect, Recipient: "gone"}
	system.Root.Send(pid, &deadletter.Letter{Message: m, Reason: deadletter.Expired, Agent: "x"})
	system.Root.Send(pid, m)
	system.Root.Send(pid, "stray")

	res, err := system.Root.RequestFuture(pid, &deadletter.Query{}, 10*time.Second).Result()
	require.NoError(t, err)
	ls := res.(*deadletter.Letters).Letters
	require.Len(t, ls, 3)
	assert.Equal(t, deadletter.Expired, ls[0].Reason)
	assert.Equal(t, "x", ls[0].Agent)
	assert.Same(t, m, ls[1].Message)
	assert.Equal(t, deadletter.NoRecipient, ls[1].Reason)
	assert.Nil(t, ls[2].Message)
	assert.Equal(t, "stray", ls[2].Value)
	assert.Equal(t, deadletter.UnsupportedMessage, ls[2].Reason)

	res, err = system.Root.RequestFuture(pid, &deadletter.Query{Filter: deadletter.Filter{Reason: deadletter.NoRecipient}}, 10*time.Second).Result()
	require.NoError(t, err)
	assert.Len(t, res.(*deadletter.Letters).Letters, 1)
	assert.Equal(t, 3, q.Len())
}
