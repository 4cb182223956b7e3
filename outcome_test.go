package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
)

// outcomeLog is an observer that keeps every outcome it is told.
type outcomeLog struct {
	mu  sync.Mutex
	got []agentbus.Outcome
}

func (l *outcomeLog) Observe(o agentbus.Outcome) {
	l.mu.Lock()
	l.got = append(l.got, o)
	l.mu.Unlock()
}

// of returns "kind dest" for every outcome of message id, sorted: the
// goroutines that report them do not order them among each other.
func (l *outcomeLog) of(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, o := range l.got {
		if o.Message != nil && o.Message.ID == id {
			out = append(out, fmt.Sprintf("%s %s", o.Kind, o.Dest))
		}
	}
	slices.Sort(out)
	return out
}

// terminal checks that no delivery ended twice.
func (l *outcomeLog) terminal(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	ended := map[string]int{}
	for _, o := range l.got {
		if o.Message != nil && (o.Kind == agentbus.OutcomeHandled || o.Kind == agentbus.OutcomeDeadLettered) {
			ended[o.Message.ID+" "+o.Dest]++
		}
	}
	for k, n := range ended {
		assert.Equal(t, 1, n, "delivery %s ended %d times", k, n)
	}
}

// TestOutcomes drives each kind of traffic through a bus with an observer
// and checks what it is told about the message: each delivery ends once.
func TestOutcomes(t *testing.T) {
	failing := func(context.Context, *agentbus.Message) error { return errors.New("no") }
	tests := []struct {
		name string
		send func(t *testing.T, bus *agentbus.Bus) *agentbus.Message
		want []string
	}{
		{
			name: "handled",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				m := from("planner", "worker", "1")
				_, err := bus.Send(t.Context(), m)
				require.NoError(t, err)
				return m
			},
			want: []string{"accepted ", "handled worker"},
		},
		{
			name: "refused",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				m := from("planner", "nobody", "1")
				_, err := bus.Send(t.Context(), m)
				require.ErrorIs(t, err, agentbus.ErrNoRecipient)
				return m
			},
			want: []string{"refused "},
		},
		{
			name: "handler error",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				m := from("planner", "failing", "1")
				_, err := bus.Send(t.Context(), m)
				require.NoError(t, err)
				return m
			},
			want: []string{"accepted ", "dead_lettered failing", "failed failing"},
		},
		{
			name: "retried then handled",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				m := from("planner", "flaky", "1").RequireAck()
				_, err := bus.Send(t.Context(), m)
				require.NoError(t, err)
				return m
			},
			want: []string{"accepted ", "failed flaky", "handled flaky", "retried flaky"},
		},
		{
			name: "published to two",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				m := agentbus.NewMessage(agentbus.TypePublish, "planner", []byte(`1`)).WithTopic("jobs.new")
				_, err := bus.Send(t.Context(), m)
				require.NoError(t, err)
				return m
			},
			want: []string{"accepted ", "handled monitor", "handled worker"},
		},
		{
			name: "published to none",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				m := agentbus.NewMessage(agentbus.TypePublish, "planner", []byte(`1`)).WithTopic("nobody.listens")
				_, err := bus.Send(t.Context(), m)
				require.NoError(t, err)
				return m
			},
			want: []string{"accepted ", "dead_lettered "},
		},
		{
			name: "request and its response",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				resp, err := bus.Request(t.Context(), from("planner", "echo", "1"))
				require.NoError(t, err)
				return resp
			},
			want: []string{"accepted ", "handled planner"},
		},
		{
			name: "expired in the queue",
			send: func(t *testing.T, bus *agentbus.Bus) *agentbus.Message {
				m := from("planner", "slow", "1").WithTTL(20 * time.Millisecond)
				_, err := bus.Send(t.Context(), m)
				require.NoError(t, err)
				<-time.After(time.Until(m.Deadline())) // it expires behind the blocker
				return m
			},
			want: []string{"accepted ", "dead_lettered slow"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := &outcomeLog{}
			bus := newBus(t, quickRetries(agentbus.Config{Observers: []agentbus.Observer{log}}))
			for name, h := range map[string]agentbus.HandlerFunc{"worker": sink, "monitor": sink, "failing": failing} {
				_, err := bus.Spawn(name, h)
				require.NoError(t, err)
			}
			_, err := bus.Spawn("flaky", &flaky{failures: 1, got: make(chan *agentbus.Message, 1)})
			require.NoError(t, err)
			_, err = bus.Spawn("echo", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
				_, err := bus.Reply(ctx, m, m.Payload)
				return err
			}))
			require.NoError(t, err)
			g := newGate(agentbus.HandlerFunc(sink))
			_, err = bus.Spawn("slow", g)
			require.NoError(t, err)
			_, err = bus.Send(t.Context(), from("planner", "slow", `"blocker"`))
			require.NoError(t, err)
			<-g.Entered
			require.NoError(t, bus.Subscribe("jobs.*", "worker"))
			require.NoError(t, bus.Subscribe("jobs.new", "monitor"))

			id := tt.send(t, bus).ID
			close(g.Open)
			require.Eventually(t, func() bool { return len(log.of(id)) >= len(tt.want) }, 5*time.Second, time.Millisecond)
			quiet(t, bus)
			assert.Equal(t, tt.want, log.of(id))
			log.terminal(t)
		})
	}
}

// TestObserversComeAfterTheBus checks that Config.Observers are told after
// the bus's own: a dead letter they see is stored already, with its Seq,
// and counted in the ledger; and that OutcomeKind names its kinds.
func TestObserversComeAfterTheBus(t *testing.T) {
	var bus *agentbus.Bus
	seen := make(chan agentbus.Outcome, 1)
	balanced := make(chan bool, 1)
	obs := agentbus.ObserverFunc(func(o agentbus.Outcome) {
		if o.Kind == agentbus.OutcomeDeadLettered {
			balanced <- bus.Accounting().Balanced()
			seen <- o
		}
	})
	bus = newBus(t, agentbus.Config{Observers: []agentbus.Observer{obs}})
	id, err := bus.Publish(t.Context(), "nobody.listens", "planner", []byte(`1`))
	require.NoError(t, err)
	o := recv(t, seen)
	assert.True(t, recv(t, balanced), "the ledger counted it first")
	require.NotNil(t, o.Letter)
	assert.NotZero(t, o.Letter.Seq, "stored before the user's observer is told")
	got, ok := bus.DeadLetters().Get(o.Letter.Seq)
	require.True(t, ok)
	assert.Equal(t, id, got.Message.ID)
	assert.False(t, o.Queued)
	assert.False(t, o.Tap)

	for k, want := range map[agentbus.OutcomeKind]string{
		agentbus.OutcomeAccepted: "accepted", agentbus.OutcomeRefused: "refused", agentbus.OutcomeHandled: "handled",
		agentbus.OutcomeFailed: "failed", agentbus.OutcomeRetried: "retried", agentbus.OutcomeDeadLettered: "dead_lettered",
		agentbus.OutcomeKind(99): "OutcomeKind(99)",
	} {
		assert.Equal(t, want, k.String())
	}
}

// TestStampers checks that stampers see every message before it is
// accepted, with the sender's ctx, and that what they change is validated.
func TestStampers(t *testing.T) {
	type key struct{}
	var bus *agentbus.Bus
	stamp := agentbus.StamperFunc(func(ctx context.Context, m *agentbus.Message) {
		from := "outside"
		if v, ok := ctx.Value(key{}).(string); ok {
			from = v
		}
		if string(m.Payload) == `"break"` {
			m.Priority = 200
		}
		md := map[string]string{"stamped": from + ":" + m.Sender}
		for k, v := range m.Metadata {
			md[k] = v
		}
		m.Metadata = md
	})
	bus = newBus(t, agentbus.Config{Stampers: []agentbus.Stamper{stamp}})
	rec := newRecorder(4)
	_, err := bus.Spawn("sink", rec)
	require.NoError(t, err)
	_, err = bus.Spawn("relay", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`"relayed"`)).WithRecipient("sink"))
		return err
	}))
	require.NoError(t, err)

	_, err = bus.Send(context.WithValue(t.Context(), key{}, "main"), from("planner", "sink", `"direct"`))
	require.NoError(t, err)
	assert.Equal(t, "main:planner", rec.next(t).Metadata["stamped"])

	_, err = bus.Send(t.Context(), from("planner", "relay", `"go"`))
	require.NoError(t, err)
	got := rec.next(t)
	assert.Equal(t, "outside:relay", got.Metadata["stamped"], "a handler's send is stamped with its name, after the bus's own stamps")

	_, err = bus.Send(t.Context(), from("planner", "sink", `"break"`))
	require.ErrorIs(t, err, agentbus.ErrInvalidMessage, "a stamper's change is validated")
}
