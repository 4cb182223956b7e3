package mailbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// forever is a patience no test waits out. Inside a synctest bubble a sender
// still parked when every goroutine is idle has lost its wake-up.
const forever = 24 * time.Hour

var (
	synchronized = actor.NewSynchronizedDispatcher(10) // runs the mailbox on the posting goroutine
	suspend      = &actor.SuspendMailbox{}
	resume       = &actor.ResumeMailbox{}
)

// item is a test message with a priority and an optional deadline. src and
// seq identify a producer and its posting order.
type item struct {
	name     string
	prio     int
	deadline time.Time
	src, seq int
}

func (i *item) MailboxKey() (int, int64) {
	if i.deadline.IsZero() {
		return i.prio, 0
	}
	return i.prio, max(i.deadline.UnixNano(), 1)
}
func (i *item) String() string { return i.name }

func prioItem(p int) *item { return &item{name: fmt.Sprintf("p%d", p), prio: p} }

func named(name string, p int) *item { return &item{name: name, prio: p} }

// sysMsg is a system message the fake invoker records.
type sysMsg string

type event struct {
	sys bool
	msg any
}

type failure struct{ reason, msg any }

// invoker is a fake actor.MessageInvoker. It records what the mailbox
// delivers and can block or panic on demand. Its fields are set before the
// mailbox is used.
type invoker struct {
	user   chan any      // if set, gets every user message; must have room for all of them
	gate   chan struct{} // if set, every user message waits for a token before it returns
	onUser func(any)     // if set, runs first for every user message; may panic
	onSys  func(any)     // if set, runs for every system message; may panic

	mu     sync.Mutex
	events []event
	fails  []failure
}

func (v *invoker) InvokeSystemMessage(msg any) {
	v.mu.Lock()
	v.events = append(v.events, event{sys: true, msg: msg})
	v.mu.Unlock()
	if v.onSys != nil {
		v.onSys(msg)
	}
}

func (v *invoker) InvokeUserMessage(msg any) {
	v.mu.Lock()
	v.events = append(v.events, event{msg: msg})
	v.mu.Unlock()
	if v.onUser != nil {
		v.onUser(msg)
	}
	if v.user != nil {
		v.user <- msg
	}
	if v.gate != nil {
		<-v.gate
	}
}

func (v *invoker) EscalateFailure(reason, msg any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fails = append(v.fails, failure{reason, msg})
}

func (v *invoker) log() []event {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.events)
}

func (v *invoker) delivered() []any {
	var out []any
	for _, e := range v.log() {
		if !e.sys {
			out = append(out, e.msg)
		}
	}
	return out
}

func (v *invoker) failures() []failure {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.fails)
}

type drop struct {
	msg    any
	reason error
}

// dropLog records what a mailbox drops.
type dropLog struct {
	mu    sync.Mutex
	drops []drop
}

func (d *dropLog) fn(msg any, reason error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.drops = append(d.drops, drop{msg, reason})
}

func (d *dropLog) all() []drop {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.drops)
}

func (d *dropLog) msgs() []any {
	var out []any
	for _, x := range d.all() {
		out = append(out, x.msg)
	}
	return out
}

// newTestMailbox returns a started mailbox driven by inv on d, whose drops
// are recorded.
func newTestMailbox(cfg Config, d actor.Dispatcher, inv actor.MessageInvoker) (*Mailbox, *dropLog) {
	drops := &dropLog{}
	cfg.Drop = drops.fn
	m := New(cfg)
	m.RegisterHandlers(inv, d)
	m.Start()
	return m, drops
}

// newSuspended returns a mailbox on the synchronized dispatcher that queues
// user messages until resume is posted; resuming delivers them on the
// resuming goroutine.
func newSuspended(cfg Config) (*Mailbox, *invoker, *dropLog) {
	inv := &invoker{}
	m, drops := newTestMailbox(cfg, synchronized, inv)
	m.PostSystemMessage(suspend)
	return m, inv, drops
}

// receive takes n values from ch, failing the test if they do not come.
func receive(t *testing.T, ch <-chan any, n int) []any {
	t.Helper()
	out := make([]any, 0, n)
	timeout := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case v := <-ch:
			out = append(out, v)
		case <-timeout:
			require.FailNow(t, "timed out", "received %d of %d messages", len(out), n)
		}
	}
	return out
}

// byPriority returns items in delivery order: highest clamped priority
// first, posting order within a priority.
func byPriority(items []*item) []any {
	s := slices.Clone(items)
	slices.SortStableFunc(s, func(a, b *item) int {
		return min(max(b.prio, 0), MaxPriority) - min(max(a.prio, 0), MaxPriority)
	})
	out := make([]any, len(s))
	for i, it := range s {
		out[i] = it
	}
	return out
}

func TestNewDefaults(t *testing.T) {
	tests := []struct {
		name    string
		give    int
		wantCap int
	}{
		{name: "capacity", give: 5, wantCap: 5},
		{name: "zero means one", give: 0, wantCap: 1},
		{name: "negative means one", give: -3, wantCap: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Config{Capacity: tt.give}) // nil Drop discards
			m.RegisterHandlers(&invoker{}, synchronized)
			m.PostSystemMessage(suspend)
			assert.Equal(t, tt.wantCap, m.Cap())
			for range tt.wantCap {
				require.NoError(t, m.TryPost(prioItem(1)))
			}
			require.ErrorIs(t, m.TryPost(prioItem(1)), ErrFull)
			m.PostUserMessage("dropped without a Drop func")
			assert.Equal(t, tt.wantCap, m.Len())
			assert.Equal(t, tt.wantCap, m.UserMessageCount())
			assert.False(t, m.Closed())
			assert.NoError(t, m.CloseReason())
			m.Close(nil)
			assert.Equal(t, ErrStopped, m.CloseReason(), "nil is ErrStopped")
		})
	}
}

func TestProducerReturnsTheMailbox(t *testing.T) {
	m := New(Config{})
	p := m.Producer()
	assert.Same(t, m, p())
	assert.Same(t, m, p())
}

func TestOrderWithBlockedConsumer(t *testing.T) {
	inv := &invoker{user: make(chan any, 64), gate: make(chan struct{})}
	m, drops := newTestMailbox(Config{Capacity: 64}, actor.NewDefaultDispatcher(10), inv)
	blocker := named("blocker", 0)
	require.NoError(t, m.TryPost(blocker))
	require.Equal(t, blocker, <-inv.user, "the consumer is inside blocker now")

	var posted []*item
	for i, p := range []int{50, 10, 100, 50, 0, 10, 100, -3, 250, 99, 1, 50, MaxPriority, 0} {
		it := named(fmt.Sprintf("#%d@%d", i, p), p)
		require.NoError(t, m.TryPost(it))
		posted = append(posted, it)
	}
	assert.Equal(t, len(posted), m.Len())

	close(inv.gate)
	assert.Equal(t, byPriority(posted), receive(t, inv.user, len(posted)))
	assert.Empty(t, drops.all())
}

func TestOrderConcurrentProducers(t *testing.T) {
	const producers, perProducer = 8, 250
	prios := []int{0, 33, 50, 66, 100}
	for _, queuedFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("queued_first=%t", queuedFirst), func(t *testing.T) {
			inv := &invoker{user: make(chan any, producers*perProducer+1)}
			if queuedFirst {
				inv.gate = make(chan struct{})
			}
			m, drops := newTestMailbox(Config{Capacity: producers * perProducer}, actor.NewDefaultDispatcher(10), inv)
			if queuedFirst {
				blocker := named("blocker", 0)
				require.NoError(t, m.TryPost(blocker))
				require.Equal(t, blocker, <-inv.user)
			}

			var wg sync.WaitGroup
			errs := make(chan error, producers*perProducer)
			for p := range producers {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(p), 7))
					for i := range perProducer {
						it := &item{name: fmt.Sprintf("%d/%d", p, i), prio: prios[r.IntN(len(prios))], src: p, seq: i}
						switch i % 3 { // every way in must keep the order
						case 0:
							errs <- m.TryPost(it)
						case 1:
							errs <- m.Post(t.Context(), it, Patience{Wait: time.Second})
						default:
							m.PostUserMessage(&actor.MessageEnvelope{Message: it})
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			if queuedFirst {
				close(inv.gate)
			}

			got := receive(t, inv.user, producers*perProducer)
			require.Empty(t, drops.all())
			last := make(map[[2]int]int) // (src, prio) -> last seq seen
			prevPrio := MaxPriority
			for i, v := range got {
				if env, ok := v.(*actor.MessageEnvelope); ok {
					v = env.Message
				}
				it := v.(*item)
				key := [2]int{it.src, it.prio}
				if s, ok := last[key]; ok {
					require.Greater(t, it.seq, s, "delivery %d: producer %d reordered within priority %d", i, it.src, it.prio)
				}
				last[key] = it.seq
				if queuedFirst {
					require.LessOrEqual(t, it.prio, prevPrio, "delivery %d: priority went up", i)
					prevPrio = it.prio
				}
			}
		})
	}
}

func TestSystemMessagesFirst(t *testing.T) {
	inv := &invoker{user: make(chan any, 8), gate: make(chan struct{})}
	m, _ := newTestMailbox(Config{Capacity: 8}, actor.NewDefaultDispatcher(10), inv)
	blocker, u1, u2 := named("blocker", 0), named("u1", 100), named("u2", 0)
	require.NoError(t, m.TryPost(blocker))
	<-inv.user
	require.NoError(t, m.TryPost(u1))
	m.PostSystemMessage(sysMsg("s1"))
	require.NoError(t, m.TryPost(u2))
	m.PostSystemMessage(sysMsg("s2"))

	close(inv.gate)
	receive(t, inv.user, 2)
	assert.Equal(t, []event{
		{msg: blocker},
		{sys: true, msg: sysMsg("s1")},
		{sys: true, msg: sysMsg("s2")},
		{msg: u1},
		{msg: u2},
	}, inv.log())
}

func TestPostWaitsForRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inv := &invoker{user: make(chan any, 8), gate: make(chan struct{})}
		m, drops := newTestMailbox(Config{Capacity: 2}, actor.NewDefaultDispatcher(10), inv)
		blocker, a, b, c := named("blocker", 0), named("a", 1), named("b", 1), named("c", 1)
		require.NoError(t, m.TryPost(blocker))
		<-inv.user // taken off the queue: the mailbox is empty again

		require.NoError(t, m.TryPost(a))
		require.NoError(t, m.TryPost(b))
		assert.Equal(t, 2, m.Len())
		err := m.TryPost(c)
		require.ErrorIs(t, err, ErrFull)
		assert.NotErrorIs(t, err, ErrBackpressureTimeout)
		assert.Contains(t, err.Error(), "capacity 2")
		for _, p := range []Patience{{}, {Wait: -time.Second}, {Backoff: time.Second}} {
			err := m.Post(t.Context(), c, p)
			require.ErrorIs(t, err, ErrFull, "%+v does not wait", p)
			assert.NotErrorIs(t, err, ErrBackpressureTimeout)
		}

		start := time.Now()
		sent := make(chan error, 1)
		go func() { sent <- m.Post(t.Context(), c, Patience{Wait: forever}) }()
		synctest.Wait()
		require.Empty(t, sent, "Post returned before a slot was freed")

		inv.gate <- struct{}{} // blocker returns; the consumer takes a and frees its slot
		require.Equal(t, a, <-inv.user)
		synctest.Wait()
		require.Len(t, sent, 1, "the parked sender was not woken")
		require.NoError(t, <-sent)
		assert.Equal(t, start, time.Now(), "woken by the freed slot, not by a timer")
		assert.Equal(t, 2, m.Len())

		close(inv.gate)
		assert.Equal(t, []any{b, c}, receive(t, inv.user, 2))
		assert.Empty(t, drops.all())
	})
}

func TestPostTimeout(t *testing.T) {
	tests := []struct {
		name string
		give Patience
	}{
		{name: "wait", give: Patience{Wait: 10 * time.Second}},
		{name: "wait with backoff", give: Patience{Wait: 10 * time.Second, Backoff: time.Second}},
		{name: "backoff longer than wait", give: Patience{Wait: 2 * time.Second, Backoff: time.Minute}},
		{name: "backoff capped", give: Patience{Wait: time.Minute, Backoff: 30 * time.Second}},
		{name: "tiny wait", give: Patience{Wait: time.Nanosecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, _, drops := newSuspended(Config{Capacity: 1})
				require.NoError(t, m.TryPost(prioItem(1)))

				start := time.Now()
				err := m.Post(t.Context(), prioItem(2), tt.give)
				assert.Equal(t, tt.give.Wait, time.Since(start))
				require.ErrorIs(t, err, ErrBackpressureTimeout)
				require.ErrorIs(t, err, ErrFull)
				assert.Zero(t, m.room.wq.nwait.Load(), "the sender left the wait queue")
				assert.Equal(t, 1, m.Len())
				assert.Empty(t, drops.all(), "a refused message is the caller's, not dropped")
			})
		})
	}
}

func TestPostContext(t *testing.T) {
	cause := errors.New("caller gave up")
	tests := []struct {
		name        string
		ctx         func(context.Context) (context.Context, context.CancelCauseFunc)
		cancelAfter time.Duration // cancel this long after the sender parked; 0: never
		wantErr     []error
		wantElapsed time.Duration
	}{
		{
			name: "canceled while parked",
			ctx: func(parent context.Context) (context.Context, context.CancelCauseFunc) {
				return context.WithCancelCause(parent)
			},
			cancelAfter: time.Minute,
			wantErr:     []error{ErrBackpressureTimeout, cause},
			wantElapsed: time.Minute,
		},
		{
			name: "deadline before patience",
			ctx: func(parent context.Context) (context.Context, context.CancelCauseFunc) {
				ctx, cancel := context.WithTimeout(parent, 5*time.Second)
				return ctx, func(error) { cancel() }
			},
			wantErr:     []error{ErrBackpressureTimeout, context.DeadlineExceeded},
			wantElapsed: 5 * time.Second,
		},
		{
			name: "canceled before the call",
			ctx: func(parent context.Context) (context.Context, context.CancelCauseFunc) {
				ctx, cancel := context.WithCancelCause(parent)
				cancel(cause)
				return ctx, cancel
			},
			wantErr: []error{ErrBackpressureTimeout, cause},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, _, _ := newSuspended(Config{Capacity: 1})
				require.NoError(t, m.TryPost(prioItem(1)))
				ctx, cancel := tt.ctx(t.Context())
				defer cancel(nil)

				start := time.Now()
				sent := make(chan error, 1)
				go func() { sent <- m.Post(ctx, prioItem(2), Patience{Wait: forever}) }()
				if tt.cancelAfter > 0 {
					synctest.Wait()
					require.Empty(t, sent)
					time.Sleep(tt.cancelAfter) // advances the bubble's fake clock
					cancel(cause)
				}
				err := <-sent
				assert.Equal(t, tt.wantElapsed, time.Since(start))
				for _, want := range tt.wantErr {
					require.ErrorIs(t, err, want)
				}
				assert.Zero(t, m.room.wq.nwait.Load(), "the sender left the wait queue")
				assert.Equal(t, 1, m.Len())
			})
		})
	}

	t.Run("done ctx does not refuse a message there is room for", func(t *testing.T) {
		m, _, _ := newSuspended(Config{Capacity: 1})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		require.NoError(t, m.Post(ctx, prioItem(1), Patience{Wait: time.Second}))
		assert.Equal(t, 1, m.Len())
	})
}

func TestSharedLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLimit(3)
		a, invA, _ := newSuspended(Config{Capacity: 10, Shared: l})
		b, invB, _ := newSuspended(Config{Capacity: 10, Shared: l})
		require.NoError(t, a.TryPost(named("a1", 1)))
		require.NoError(t, a.TryPost(named("a2", 1)))
		require.NoError(t, b.TryPost(named("b1", 1)))
		assert.Equal(t, 3, l.Used())

		for _, m := range []*Mailbox{a, b} {
			err := m.TryPost(named("x", 1))
			require.ErrorIs(t, err, ErrFull)
			assert.Contains(t, err.Error(), "bus pending limit 3")
		}
		assert.Equal(t, 2, a.Len())
		assert.Equal(t, 1, b.Len())
		assert.Equal(t, 3, l.Used(), "a refused post keeps no slot")

		b2 := named("b2", 1)
		sent := make(chan error, 1)
		go func() { sent <- b.Post(t.Context(), b2, Patience{Wait: forever}) }()
		synctest.Wait()
		require.Empty(t, sent, "precondition: parked on the shared limit")

		a.PostSystemMessage(resume) // a delivers both, releasing their shared slots
		assert.Len(t, invA.delivered(), 2)
		synctest.Wait()
		require.Len(t, sent, 1, "b's sender was not woken by a's release")
		require.NoError(t, <-sent)
		assert.Equal(t, 2, l.Used())
		assert.Equal(t, 2, b.Len())

		b.PostSystemMessage(resume)
		assert.Equal(t, []any{named("b1", 1), b2}, invB.delivered())
		assert.Zero(t, l.Used())
	})
}

// A sender parked on a full mailbox that is woken, finds the shared limit
// full instead and moves to wait there, must pass the mailbox's wake-up on:
// the slot it was woken for may stay free, and the next sender parked on the
// mailbox must not sleep beside it until its timer fires.
func TestSwitchingBoundPassesWakeupOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLimit(2)
		m, _, _ := newSuspended(Config{Capacity: 1, Shared: l})
		require.NoError(t, m.TryPost(named("m0", 1))) // mailbox full, limit 1 of 2

		ctx1, cancel1 := context.WithCancel(t.Context())
		sent1, sent2 := make(chan error, 1), make(chan error, 1)
		go func() { sent1 <- m.Post(ctx1, named("w1", 1), Patience{Wait: forever}) }()
		synctest.Wait()
		go func() { sent2 <- m.Post(t.Context(), named("w2", 1), Patience{Wait: forever}) }()
		synctest.Wait()
		require.EqualValues(t, 2, m.room.wq.nwait.Load(), "precondition: both parked on the mailbox")

		// The consumer takes m0 and gives its shared slot back, and before
		// w1 retries, senders to other mailboxes fill the shared limit. The
		// steps of popUser are played one by one to fix that interleaving.
		require.True(t, takeQueued(m))
		m.room.out.Add(1)
		l.Release(1)
		require.True(t, l.TryAcquire())
		require.True(t, l.TryAcquire())
		m.room.wq.wake(1)
		synctest.Wait()
		require.Positive(t, l.wq.nwait.Load(), "precondition: w1 moved to the shared limit")

		cancel1() // w1 gives up,
		require.ErrorIs(t, <-sent1, context.Canceled)
		l.Release(1) // and one of the other mailboxes' messages is consumed.
		synctest.Wait()

		// The mailbox and the limit have room: w2 must have been woken.
		require.Len(t, sent2, 1, "w2 sleeps beside a free slot")
		require.NoError(t, <-sent2)
		m.Close(nil)
	})
}

func TestPostUserMessageFull(t *testing.T) {
	m, inv, drops := newSuspended(Config{Capacity: 3})
	var posted []any
	for i := range 5 {
		msg := fmt.Sprintf("m%d", i)
		m.PostUserMessage(msg)
		posted = append(posted, msg)
	}
	got := drops.all()
	require.Len(t, got, 2)
	for _, d := range got {
		assert.ErrorIs(t, d.reason, ErrFull)
	}
	assert.Equal(t, []any{"m3", "m4"}, drops.msgs())
	assert.Equal(t, 3, m.Len())

	m.PostSystemMessage(resume)
	assert.Equal(t, posted[:3], inv.delivered())
	assert.ElementsMatch(t, posted, append(inv.delivered(), drops.msgs()...), "every message delivered or dropped")
}

func TestEnvelopePriority(t *testing.T) {
	m, inv, _ := newSuspended(Config{Capacity: 10})
	low := &actor.MessageEnvelope{Message: named("low", 10)}
	high := &actor.MessageEnvelope{Message: named("high", 90)}
	plain := &actor.MessageEnvelope{Message: "no priority"}
	mid := named("mid", DefaultPriority)
	for _, msg := range []any{low, "raw default", plain, high, mid} {
		m.PostUserMessage(msg)
	}
	m.PostSystemMessage(resume)
	assert.Equal(t, []any{high, "raw default", plain, mid, low}, inv.delivered(),
		"envelopes are ordered by what they carry and delivered whole")
}

func TestExpiredAtDequeue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, inv, drops := newSuspended(Config{Capacity: 10})
		now := time.Now()
		soon := &item{name: "soon", prio: 90, deadline: now.Add(time.Second)}
		exact := &item{name: "exact", prio: 80, deadline: now.Add(2 * time.Second)}
		later := &item{name: "later", prio: 70, deadline: now.Add(time.Hour)}
		past := &item{name: "past", prio: 60, deadline: now.Add(-time.Second)}
		never := named("never", 50)
		env := &actor.MessageEnvelope{Message: &item{name: "env", prio: 40, deadline: now.Add(time.Second)}}
		for _, it := range []*item{soon, exact, later, past, never} {
			require.NoError(t, m.TryPost(it), "expiry is checked at delivery, not at post")
		}
		m.PostUserMessage(env)

		time.Sleep(2 * time.Second) // advances the bubble's fake clock to exact's deadline
		m.PostSystemMessage(resume)

		assert.Equal(t, []any{later, never}, inv.delivered())
		got := drops.all()
		assert.Equal(t, []any{soon, exact, past, env}, drops.msgs())
		for _, d := range got {
			assert.ErrorIs(t, d.reason, ErrExpired, "%v", d.msg)
		}
		assert.Zero(t, m.Len())
	})
}

func TestReapWhenFull(t *testing.T) {
	t.Run("expired messages free their slots", func(t *testing.T) {
		l := NewLimit(4)
		m, inv, drops := newSuspended(Config{Capacity: 3, Shared: l})
		past := time.Now().Add(-time.Minute)
		old1 := &item{name: "old1", prio: 1, deadline: past}
		old2 := &item{name: "old2", prio: 99, deadline: past}
		live := named("live", 50)
		for _, it := range []*item{old1, live, old2} {
			require.NoError(t, m.TryPost(it))
		}
		assert.Equal(t, 3, l.Used())

		fresh := named("fresh", 50)
		require.NoError(t, m.TryPost(fresh), "the expired messages make room")
		assert.Equal(t, 2, m.Len())
		assert.Equal(t, 2, l.Used(), "the reaped messages released their shared slots")
		assert.ElementsMatch(t, []any{old1, old2}, drops.msgs())
		for _, d := range drops.all() {
			assert.ErrorIs(t, d.reason, ErrExpired)
		}
		m.PostSystemMessage(resume)
		assert.Equal(t, []any{live, fresh}, inv.delivered())
	})
	t.Run("through PostUserMessage", func(t *testing.T) {
		m, inv, drops := newSuspended(Config{Capacity: 1})
		old := &actor.MessageEnvelope{Message: &item{name: "old", prio: 1, deadline: time.Now().Add(-time.Second)}}
		m.PostUserMessage(old)
		m.PostUserMessage("new")
		require.Len(t, drops.all(), 1)
		assert.ErrorIs(t, drops.all()[0].reason, ErrExpired)
		m.PostSystemMessage(resume)
		assert.Equal(t, []any{"new"}, inv.delivered())
	})
	t.Run("only what has expired, when it has", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			m, inv, drops := newSuspended(Config{Capacity: 3})
			now := time.Now()
			a := &item{name: "a", prio: 1, deadline: now.Add(time.Second)}
			b := &item{name: "b", prio: 1, deadline: now.Add(2 * time.Second)}
			c := named("c", 1)
			for _, it := range []*item{a, b, c} {
				require.NoError(t, m.TryPost(it))
			}
			require.ErrorIs(t, m.TryPost(named("d0", 1)), ErrFull, "nothing has expired yet")

			time.Sleep(1500 * time.Millisecond) // fake clock: a expired, b not
			d := named("d", 1)
			require.NoError(t, m.TryPost(d))
			assert.Equal(t, []any{a}, drops.msgs())
			require.ErrorIs(t, m.TryPost(named("e0", 1)), ErrFull, "b has not expired")

			time.Sleep(time.Second) // fake clock: b expired too
			e := named("e", 1)
			require.NoError(t, m.TryPost(e))
			assert.Equal(t, []any{a, b}, drops.msgs())

			m.PostSystemMessage(resume)
			assert.Equal(t, []any{c, d, e}, inv.delivered())
		})
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reason := errors.New("agent went away")
		l := NewLimit(10)
		m, inv, drops := newSuspended(Config{Capacity: 3, Shared: l})
		queued := []any{named("q1", 1), named("q2", 50), named("q3", 99)}
		for _, it := range queued {
			require.NoError(t, m.TryPost(it.(*item)))
		}
		sent := make(chan error, 1)
		go func() { sent <- m.Post(t.Context(), named("parked", 1), Patience{Wait: forever}) }()
		synctest.Wait()
		require.Empty(t, sent)

		m.Close(reason)
		assert.True(t, m.Closed())
		assert.Equal(t, reason, m.CloseReason())
		m.Close(errors.New("later"))
		assert.Equal(t, reason, m.CloseReason(), "only the first reason counts")
		assert.Zero(t, m.Len())
		assert.ElementsMatch(t, queued, drops.msgs())
		for _, d := range drops.all() {
			assert.ErrorIs(t, d.reason, reason)
		}
		synctest.Wait()
		require.Len(t, sent, 1, "the parked sender was not woken")
		require.ErrorIs(t, <-sent, reason)
		// Checked once the woken sender is done: its retry holds a shared
		// slot for an instant before it finds the mailbox closed.
		assert.Zero(t, l.Used(), "dropped messages release their shared slots")

		require.ErrorIs(t, m.TryPost(named("late", 1)), reason)
		require.ErrorIs(t, m.Post(t.Context(), named("late", 1), Patience{Wait: time.Hour}), reason)
		m.PostUserMessage("late")
		last := drops.all()[len(drops.all())-1]
		assert.Equal(t, "late", last.msg)
		assert.ErrorIs(t, last.reason, reason)
		assert.Zero(t, l.Used(), "refused posts keep no shared slot")

		m.Close(errors.New("second reason"))
		require.ErrorIs(t, m.TryPost(named("late", 1)), reason, "only the first reason counts")

		m.PostSystemMessage(sysMsg("still delivered"))
		assert.Contains(t, inv.log(), event{sys: true, msg: sysMsg("still delivered")})
		m.PostSystemMessage(resume)
		assert.Empty(t, inv.delivered(), "nothing queued before Close is delivered")
	})
}

func TestCloseNilReason(t *testing.T) {
	m, _, drops := newSuspended(Config{Capacity: 1})
	require.NoError(t, m.TryPost(prioItem(1)))
	m.Close(nil)
	require.Len(t, drops.all(), 1)
	assert.ErrorIs(t, drops.all()[0].reason, ErrStopped)
	assert.ErrorIs(t, m.TryPost(prioItem(1)), ErrStopped)
}

// Close must reach senders parked on the shared limit too, and a closed
// mailbox refuses with its close error even while the shared limit is full.
func TestCloseWithSharedLimitFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reason := errors.New("closed")
		l := NewLimit(1)
		other, _, _ := newSuspended(Config{Capacity: 5, Shared: l})
		require.NoError(t, other.TryPost(named("holds the limit", 1)))
		m, _, _ := newSuspended(Config{Capacity: 5, Shared: l})

		sent := make(chan error, 1)
		go func() { sent <- m.Post(t.Context(), named("parked", 1), Patience{Wait: forever}) }()
		synctest.Wait()
		require.Empty(t, sent, "precondition: parked on the shared limit")

		m.Close(reason)
		synctest.Wait()
		require.Len(t, sent, 1, "the sender parked on the shared limit was not woken by Close")
		require.ErrorIs(t, <-sent, reason)

		require.ErrorIs(t, m.TryPost(named("late", 1)), reason)
		require.ErrorIs(t, m.Post(t.Context(), named("late", 1), Patience{Wait: time.Hour}), reason)
		assert.Equal(t, 1, l.Used())
		other.Close(nil)
	})
}

func TestSuspendResume(t *testing.T) {
	mw := &middleware{}
	inv := &invoker{}
	m, _ := newTestMailbox(Config{Capacity: 10, Middlewares: []actor.MailboxMiddleware{mw}}, synchronized, inv)
	m.PostSystemMessage(suspend)
	for _, it := range []*item{named("a", 1), named("b", 2)} {
		require.NoError(t, m.TryPost(it))
	}
	assert.Empty(t, inv.delivered(), "suspended: nothing delivered")
	assert.Equal(t, 2, m.Len())

	m.PostSystemMessage(sysMsg("watch"))
	assert.Equal(t, []event{{sys: true, msg: sysMsg("watch")}}, inv.log(), "system messages pass while suspended")
	assert.NotContains(t, mw.calls(), "empty", "a suspended mailbox with messages is not empty")

	m.PostSystemMessage(resume)
	assert.Equal(t, []any{named("b", 2), named("a", 1)}, inv.delivered())
	assert.Zero(t, m.Len())
	for _, e := range inv.log() {
		assert.NotEqual(t, suspend, e.msg, "suspend and resume are the mailbox's, not the actor's")
		assert.NotEqual(t, resume, e.msg)
	}
}

func TestPanicEscalation(t *testing.T) {
	boom := errors.New("boom")
	bad := named("bad", 50)
	inv := &invoker{onUser: func(msg any) {
		if msg == bad {
			panic(boom)
		}
	}}
	m, _ := newTestMailbox(Config{Capacity: 10}, synchronized, inv)
	m.PostSystemMessage(suspend)
	before, after := named("before", 90), named("after", 10)
	for _, it := range []*item{before, bad, after} {
		require.NoError(t, m.TryPost(it))
	}
	m.PostSystemMessage(resume)

	assert.Equal(t, []failure{{reason: boom, msg: bad}}, inv.failures())
	assert.Equal(t, []any{before, bad, after}, inv.delivered(), "the mailbox goes on after a recovered panic")

	t.Run("in a system message", func(t *testing.T) {
		inv := &invoker{onSys: func(msg any) { panic(msg) }}
		m, _ := newTestMailbox(Config{}, synchronized, inv)
		m.PostSystemMessage(sysMsg("poison"))
		assert.Equal(t, []failure{{reason: sysMsg("poison"), msg: sysMsg("poison")}}, inv.failures())
	})
	t.Run("after an expired message", func(t *testing.T) {
		// A panic must blame the message being handled, not one dropped before.
		inv := &invoker{onUser: func(any) { panic("x") }}
		m, _ := newTestMailbox(Config{Capacity: 2}, synchronized, inv)
		m.PostSystemMessage(suspend)
		expired := &item{name: "expired", prio: 99, deadline: time.Now().Add(-time.Second)}
		require.NoError(t, m.TryPost(expired))
		require.NoError(t, m.TryPost(bad))
		m.PostSystemMessage(resume)
		assert.Equal(t, []failure{{reason: "x", msg: bad}}, inv.failures())
	})
}

func TestThroughputOne(t *testing.T) {
	for _, d := range []struct {
		name string
		d    actor.Dispatcher
	}{
		{name: "default", d: actor.NewDefaultDispatcher(1)},
		{name: "synchronized", d: actor.NewSynchronizedDispatcher(1)},
		{name: "zero", d: actor.NewDefaultDispatcher(0)},
	} {
		t.Run(d.name, func(t *testing.T) {
			const producers, each = 8, 500
			inv := &invoker{user: make(chan any, producers*each)}
			m, drops := newTestMailbox(Config{Capacity: 64}, d.d, inv)
			var wg sync.WaitGroup
			for p := range producers {
				wg.Go(func() {
					for i := range each {
						it := &item{prio: i % 7, src: p, seq: i}
						if err := m.Post(t.Context(), it, Patience{Wait: time.Minute, Backoff: time.Millisecond}); err != nil {
							t.Errorf("post: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			got := receive(t, inv.user, producers*each)
			assert.Len(t, got, producers*each)
			assert.Empty(t, drops.all())
			require.Eventually(t, func() bool { return m.Len() == 0 }, 10*time.Second, time.Millisecond)
		})
	}
}

// middleware records the calls of a protoactor mailbox middleware.
type middleware struct {
	mu  sync.Mutex
	log []string
}

func (w *middleware) add(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, s)
}

func (w *middleware) calls() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

func (w *middleware) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = nil
}

func (w *middleware) MailboxStarted()         { w.add("started") }
func (w *middleware) MessagePosted(msg any)   { w.add(fmt.Sprint("posted ", msg)) }
func (w *middleware) MessageReceived(msg any) { w.add(fmt.Sprint("received ", msg)) }
func (w *middleware) MailboxEmpty()           { w.add("empty") }

func TestMiddlewares(t *testing.T) {
	mw1, mw2 := &middleware{}, &middleware{}
	inv := &invoker{}
	m, _ := newTestMailbox(Config{Capacity: 1, Middlewares: []actor.MailboxMiddleware{mw1, mw2}}, synchronized, inv)
	for _, mw := range []*middleware{mw1, mw2} {
		assert.Equal(t, []string{"started"}, mw.calls())
		mw.reset()
	}

	require.NoError(t, m.TryPost(named("a", 1)))
	m.PostUserMessage("b")
	m.PostSystemMessage(sysMsg("s"))
	for _, mw := range []*middleware{mw1, mw2} {
		assert.Equal(t, []string{
			"posted a", "received a", "empty",
			"posted b", "received b", "empty",
			"posted s", "received s", "empty",
		}, mw.calls())
		mw.reset()
	}

	// Refused and dropped messages were never posted.
	m.PostSystemMessage(suspend)
	require.NoError(t, m.TryPost(named("c", 1)))
	require.ErrorIs(t, m.TryPost(named("refused", 1)), ErrFull)
	m.PostUserMessage("dropped")
	assert.Equal(t, []string{
		fmt.Sprint("posted ", suspend), fmt.Sprint("received ", suspend),
		"posted c",
	}, mw1.calls())
}

func TestWaitersWokenInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inv := &invoker{user: make(chan any, 16), gate: make(chan struct{})}
		m, _ := newTestMailbox(Config{Capacity: 1}, actor.NewDefaultDispatcher(10), inv)
		blocker := named("blocker", 0)
		require.NoError(t, m.TryPost(blocker))
		<-inv.user
		first := named("first", 0)
		require.NoError(t, m.TryPost(first))

		const n = 5
		sent := make([]chan error, n)
		senders := make([]*item, n)
		for i := range n {
			sent[i] = make(chan error, 1)
			senders[i] = named(fmt.Sprintf("s%d", i), 1)
			go func() { sent[i] <- m.Post(t.Context(), senders[i], Patience{Wait: forever}) }()
			synctest.Wait() // parked before the next one starts
		}
		require.EqualValues(t, n, m.room.wq.nwait.Load())

		want := first
		for i := range n {
			inv.gate <- struct{}{}             // finish the current message; the consumer takes the next
			require.Equal(t, want, <-inv.user) // and frees its slot
			synctest.Wait()
			for j := range n {
				if j == i {
					require.Len(t, sent[j], 1, "sender %d, parked next, was not woken", j)
					require.NoError(t, <-sent[j])
				} else {
					require.Empty(t, sent[j], "sender %d got in out of turn (step %d)", j, i)
				}
			}
			want = senders[i]
		}
		close(inv.gate)
		require.Equal(t, senders[n-1], <-inv.user)
	})
}

// A sender that gives up just after it was chosen for a free slot passes the
// wake-up on, so the next sender gets the slot at once.
func TestLeavingWaiterPassesWakeupOn(t *testing.T) {
	for i := range 50 { // each round races the wake-up against the cancellation
		synctest.Test(t, func(t *testing.T) {
			m, _, _ := newSuspended(Config{Capacity: 1})
			require.NoError(t, m.TryPost(named("full", 1)))
			ctx1, cancel1 := context.WithCancel(t.Context())
			sent1, sent2 := make(chan error, 1), make(chan error, 1)
			go func() { sent1 <- m.Post(ctx1, named("w1", 1), Patience{Wait: forever}) }()
			synctest.Wait()
			go func() { sent2 <- m.Post(t.Context(), named("w2", 1), Patience{Wait: forever}) }()
			synctest.Wait()

			// Free the slot: pop "full" without delivering it, as a consumer
			// would, and cancel w1 at the same moment.
			takeQueued(m)
			m.room.out.Add(1)
			m.room.wq.wake(1)
			cancel1()
			synctest.Wait()

			err1 := <-sent1
			switch {
			case err1 == nil: // w1 took the slot before it saw the cancel
				require.Empty(t, sent2, "round %d: w2 got in beside w1", i)
			default:
				require.ErrorIs(t, err1, context.Canceled)
				require.Len(t, sent2, 1, "round %d: w1 left with the wake-up meant for the free slot", i)
				require.NoError(t, <-sent2)
			}
			assert.Equal(t, 1, m.Len())
			m.Close(nil)
		})
	}
}

// Many senders, patient and impatient, race a slow consumer through a small
// mailbox and a shared limit. Every post must end delivered or refused, the
// bounds must hold, the slot accounting must return to zero, and patient
// senders must never wait out their patience while impatient ones come and go
// (a lost wake-up would make them).
func TestStressNoLostMessages(t *testing.T) {
	const (
		patient, impatient = 4, 8
		each               = 300
	)
	l := NewLimit(6)
	var delivered atomic.Int64
	var maxLen atomic.Int64
	inv := &invoker{}
	var m *Mailbox
	inv.onUser = func(any) {
		delivered.Add(1)
		if n := int64(m.Len()); n > maxLen.Load() {
			maxLen.Store(n)
		}
	}
	m, drops := newTestMailbox(Config{Capacity: 4, Shared: l}, actor.NewDefaultDispatcher(3), inv)
	// A second mailbox competes for the shared limit.
	var otherDelivered atomic.Int64
	other, otherDrops := newTestMailbox(Config{Capacity: 4, Shared: l}, actor.NewDefaultDispatcher(3),
		&invoker{onUser: func(any) { otherDelivered.Add(1) }})

	var accepted, refused, otherAccepted atomic.Int64
	var wg sync.WaitGroup
	for p := range patient {
		wg.Go(func() {
			for i := range each {
				err := m.Post(t.Context(), &item{prio: i % 5, src: p, seq: i}, Patience{Wait: time.Minute, Backoff: time.Minute})
				if err != nil {
					t.Errorf("patient sender %d: %v", p, err)
					return
				}
				accepted.Add(1)
			}
		})
	}
	for p := range impatient {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(p), 99))
			for i := range each {
				target, count := m, &accepted
				if i%3 == 0 {
					target, count = other, &otherAccepted
				}
				var err error
				switch r.IntN(4) {
				case 0:
					err = target.TryPost(&item{prio: r.IntN(101)})
				case 1:
					err = target.Post(t.Context(), &item{prio: r.IntN(101)}, Patience{Wait: time.Duration(r.IntN(200)) * time.Microsecond})
				case 2:
					ctx, cancel := context.WithTimeout(t.Context(), time.Duration(r.IntN(200))*time.Microsecond)
					err = target.Post(ctx, &item{prio: r.IntN(101)}, Patience{Wait: time.Minute})
					cancel()
				default:
					err = target.Post(t.Context(), &item{prio: r.IntN(101)}, Patience{Wait: time.Millisecond, Backoff: 10 * time.Microsecond})
				}
				switch {
				case err == nil:
					count.Add(1)
				case errors.Is(err, ErrFull), errors.Is(err, ErrBackpressureTimeout):
					refused.Add(1)
				default:
					t.Errorf("impatient sender %d: unexpected error %v", p, err)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		require.FailNow(t, "senders stuck: a wake-up was lost")
	}

	require.Eventually(t, func() bool {
		return delivered.Load() == accepted.Load() && otherDelivered.Load() == otherAccepted.Load()
	}, 10*time.Second, time.Millisecond, "accepted %d/%d, delivered %d/%d",
		accepted.Load(), otherAccepted.Load(), delivered.Load(), otherDelivered.Load())
	assert.EqualValues(t, patient*each+impatient*each, accepted.Load()+otherAccepted.Load()+refused.Load(),
		"every post accepted or refused")
	assert.GreaterOrEqual(t, accepted.Load(), int64(patient*each), "every patient post got in")
	assert.LessOrEqual(t, maxLen.Load(), int64(m.Cap()))
	assert.Empty(t, drops.all())
	assert.Empty(t, otherDrops.all())
	require.Eventually(t, func() bool { return l.Used() == 0 && m.Len() == 0 && other.Len() == 0 },
		10*time.Second, time.Millisecond, "slots leaked: used %d", l.Used())
	assert.Zero(t, m.room.wq.nwait.Load(), "waiters left behind")
	assert.Zero(t, l.wq.nwait.Load(), "waiters left behind")
	t.Logf("accepted %d+%d, refused %d", accepted.Load(), otherAccepted.Load(), refused.Load())
}

// The mailbox serves real protoactor actors: priorities through Send and
// RequestFuture envelopes, supervision (suspend, restart, resume) after a
// panic, and stopping.
func TestActorSystem(t *testing.T) {
	system := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		// A dead letter starts a protoactor goroutine that lives for this
		// interval (1s by default), longer than goleak waits for it.
		actor.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	defer system.Shutdown()

	got := make(chan any, 32)
	gate := make(chan struct{})
	restarted := make(chan struct{}, 1)
	m := New(Config{Capacity: 16})
	props := actor.PropsFromProducer(func() actor.Actor {
		return actor.ReceiveFunc(func(c actor.Context) {
			switch msg := c.Message().(type) {
			case *actor.Restarting:
				restarted <- struct{}{}
			case *item:
				got <- msg
				if msg.name == "blocker" {
					<-gate
				}
				if msg.name == "panic" {
					panic("handler failed")
				}
				if c.Sender() != nil {
					c.Respond(msg.name)
				}
			}
		})
	}, actor.WithMailbox(m.Producer()))
	pid := system.Root.Spawn(props)

	system.Root.Send(pid, named("blocker", 0))
	require.Equal(t, "blocker", (<-got).(*item).name)
	system.Root.Send(pid, named("low", 1))
	fut := system.Root.RequestFuture(pid, named("high", 99), 10*time.Second)
	system.Root.Send(pid, named("panic", 50))
	system.Root.Send(pid, named("after", 0))
	close(gate)

	var names []string
	for _, v := range receive(t, got, 4) {
		names = append(names, v.(*item).name)
	}
	assert.Equal(t, []string{"high", "panic", "low", "after"}, names)
	<-restarted
	res, err := fut.Result()
	require.NoError(t, err)
	assert.Equal(t, "high", res)

	require.NoError(t, system.Root.StopFuture(pid).Wait())
}

// TestPostBeforeRegisterHandlers: protoactor makes an actor's PID reachable
// before it registers the mailbox's handlers, so messages can arrive first.
// They must neither crash the sender nor be lost: they are queued and run,
// system messages first, once the handlers are registered.
func TestPostBeforeRegisterHandlers(t *testing.T) {
	m := New(Config{Capacity: 4})
	a, b := named("a", 1), named("b", 90)
	require.NoError(t, m.TryPost(a))
	m.PostUserMessage(b)
	m.PostSystemMessage(sysMsg("early"))

	inv := &invoker{}
	m.RegisterHandlers(inv, synchronized)
	m.Start()
	assert.Equal(t, []any{b, a}, inv.delivered(), "by priority, once registered")
	require.NotEmpty(t, inv.events)
	assert.Equal(t, sysMsg("early"), inv.events[0].msg, "the system message first")
}

// takeQueued takes the oldest of the highest-priority queued messages out of
// m as its agent would, without delivering it or freeing its slot, and
// reports whether there was one: for tests that play a consumer's steps one
// by one.
func takeQueued(m *Mailbox) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drainLocked()
	in := m.in.Load()
	if in == nil {
		return false
	}
	_, ok := in.q.pop()
	m.qn.Store(int32(in.q.n))
	return ok
}

// A restart that reaches a mailbox after its actor stopped (and closed it) is
// dropped: protoactor would bring the stopped actor back to life. Before the
// close, restarts go through.
func TestRestartAfterCloseDropped(t *testing.T) {
	m, inv, _ := newSuspended(Config{Capacity: 4})
	m.PostSystemMessage(resume)
	m.PostSystemMessage(&actor.Restart{})
	m.Close(nil)
	m.PostSystemMessage(&actor.Restart{})
	m.PostSystemMessage(&actor.Stop{})
	var sys []any
	for _, e := range inv.log() {
		if e.sys {
			sys = append(sys, e.msg)
		}
	}
	assert.Equal(t, []any{&actor.Restart{}, &actor.Stop{}}, sys, "only the restart before the close")
}

// keyed is an Item that returns a fixed key.
type keyed struct{ prio, deadline int64 }

func (k keyed) MailboxKey() (int, int64) { return int(k.prio), k.deadline }

func TestItemKey(t *testing.T) {
	tests := []struct {
		name           string
		give           keyed
		prio, deadline int64
	}{
		{name: "in range, no deadline", give: keyed{prio: 7}, prio: 7},
		{name: "priority below 0 is clamped", give: keyed{prio: -3}, prio: 0},
		{name: "priority above the top is clamped", give: keyed{prio: MaxPriority + 1}, prio: MaxPriority},
		{name: "a deadline is kept", give: keyed{prio: 1, deadline: 42}, prio: 1, deadline: 42},
		{name: "a deadline before 1970 has passed, it is not never", give: keyed{prio: 1, deadline: -5}, prio: 1, deadline: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, d := itemKey(tt.give)
			assert.Equal(t, int(tt.prio), p)
			assert.Equal(t, tt.deadline, d)
		})
	}
}
