package mailbox

import (
	"errors"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInboxSize(t *testing.T) {
	for _, tc := range []struct{ capacity, cells int }{
		{1, 2}, {2, 2}, {3, 4}, {8, 8}, {9, 16}, {maxInbox, maxInbox}, {maxInbox + 1, maxInbox}, {1 << 20, maxInbox},
	} {
		t.Run(fmt.Sprint(tc.capacity), func(t *testing.T) {
			m, _, _ := newSuspended(Config{Capacity: tc.capacity})
			require.NoError(t, m.TryPost(named("x", 1)))
			assert.Len(t, m.in.Load().cells, tc.cells)
		})
	}
}

// inFlight plays a sender that has reserved room and claimed an inbox cell
// but not yet published it, as a sender preempted between the two would be.
type inFlight struct {
	m   *Mailbox
	in  *inbox
	c   *cell
	pos uint64
}

func startPost(t *testing.T, m *Mailbox) *inFlight {
	t.Helper()
	_, _, full, err := m.reserve()
	require.NoError(t, err)
	require.Nil(t, full)
	in, c, pos := m.claim(m.in.Load())
	return &inFlight{m, in, c, pos}
}

// finish publishes it, as the preempted sender does when it runs again.
func (f *inFlight) finish(it *item) {
	f.c.write(f.pos, it.prio, entry{v: it})
	f.m.announce(f.in, f.pos, it.prio, it)
}

// A message queued behind a cell that a slower sender has claimed but not
// published is invisible to the agent until that cell is published. If it
// outranks the batch the agent took meanwhile, it must still go first once it
// is visible, though its sender, having seen the urgency of an earlier batch,
// raised nothing.
func TestUrgentMessageBehindUnpublishedCell(t *testing.T) {
	inv := &invoker{user: make(chan any, 16), gate: make(chan struct{}, 16)}
	m, drops := newTestMailbox(Config{Capacity: 16}, actor.NewDefaultDispatcher(10), inv)
	h := named("h", 95)
	require.NoError(t, m.TryPost(h))
	require.Equal(t, h, <-inv.user) // the agent is inside h: urgency 95
	l1, l2 := named("l1", 10), named("l2", 10)
	require.NoError(t, m.TryPost(l1))
	require.NoError(t, m.TryPost(l2))
	slow := startPost(t, m)
	x := named("x", 90)
	require.NoError(t, m.TryPost(x)) // behind the slow cell; 90 < 95: raises nothing
	assert.EqualValues(t, 95, m.urgent.Load(), "precondition: x did not raise urgency")

	inv.gate <- struct{}{}           // h returns; the agent sees l1 and l2 only
	require.Equal(t, l1, <-inv.user) // inside l1, with l2 batched at 10
	a := named("a", 10)
	slow.finish(a) // now x is visible behind a

	for range 4 {
		inv.gate <- struct{}{}
	}
	assert.Equal(t, []any{x, l2, a}, receive(t, inv.user, 3), "x outranks the rest of the batch")
	assert.Equal(t, []any{h, l1, x, l2, a}, inv.delivered())
	assert.Empty(t, drops.all())
}

// Close waits for a post that is writing its message into the inbox, and
// drops that message with the rest: nothing is left in a closed mailbox, and
// Posted no longer moves once Close has returned.
func TestCloseWaitsForPostInFlight(t *testing.T) {
	m, _, drops := newSuspended(Config{Capacity: 4})
	queued := named("queued", 1)
	require.NoError(t, m.TryPost(queued))
	slow := startPost(t, m)

	stopped := errors.New("stopped")
	closed := closeBlocked(t, m, stopped)

	late := named("late", 1)
	slow.finish(late)
	<-closed
	assert.Equal(t, []any{queued, late}, drops.msgs())
	for _, dr := range drops.all() {
		assert.ErrorIs(t, dr.reason, stopped)
	}
	assert.EqualValues(t, 2, m.Posted())
	assert.Zero(t, m.Len())
	assert.ErrorIs(t, m.TryPost(named("after", 1)), stopped)
	assert.EqualValues(t, 2, m.Posted(), "a post after Close is refused, not counted")
}

// closeBlocked runs m.Close(reason) on a goroutine and checks that it has
// not returned a while later, as it must not while a post is in flight; the
// channel it returns is closed once Close returns.
func closeBlocked(t *testing.T, m *Mailbox, reason error) <-chan struct{} {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		m.Close(reason)
		close(closed)
	}()
	require.Never(t, func() bool {
		select {
		case <-closed:
			return true
		default:
			return false
		}
	}, 50*time.Millisecond, time.Millisecond, "Close returned while a post was in flight")
	return closed
}

// A sender that finds every inbox cell taken moves the inbox into the queue
// itself; the order is kept across the move.
func TestFullInboxMovedBySender(t *testing.T) {
	const n = 3*maxInbox + 5
	m, inv, drops := newSuspended(Config{Capacity: n})
	items := make([]*item, n)
	for i := range items {
		items[i] = named(fmt.Sprintf("m%d", i), i%7*10)
		require.NoError(t, m.TryPost(items[i]))
	}
	assert.Equal(t, n, m.Len())
	m.mu.Lock()
	inQueue := m.in.Load().q.n
	m.mu.Unlock()
	assert.GreaterOrEqual(t, inQueue, n-maxInbox, "senders moved the full inbox into the queue")
	m.PostSystemMessage(resume)
	assert.Equal(t, byPriority(items), inv.delivered())
	assert.Empty(t, drops.all())
}

// When the inbox is full and its oldest cell is still being written, a sender
// cannot move the inbox past that cell: it yields until the cell is
// published, then queues behind it.
func TestFullInboxWaitsForOldestCell(t *testing.T) {
	m, inv, drops := newSuspended(Config{Capacity: 2 * maxInbox})
	slow := startPost(t, m)
	items := make([]*item, maxInbox)
	items[0] = named("slow", 1)
	for i := 1; i < maxInbox; i++ {
		items[i] = named(fmt.Sprintf("m%d", i), 1)
		require.NoError(t, m.TryPost(items[i]))
	}
	last := named("last", 1)
	posted := make(chan error, 1)
	go func() { posted <- m.TryPost(last) }()
	require.Never(t, func() bool { return len(posted) > 0 }, 20*time.Millisecond, time.Millisecond,
		"the post got in ahead of the cell being written")
	slow.finish(items[0])
	require.NoError(t, <-posted)
	m.PostSystemMessage(resume)
	want := make([]any, 0, maxInbox+1)
	for _, it := range items {
		want = append(want, it)
	}
	assert.Equal(t, append(want, last), inv.delivered())
	assert.Empty(t, drops.all())
}

// Every cell's fields lie within one cache line, and no two cells share one,
// whatever the inbox's size: allocations above 512 bytes start 8 bytes past a
// line (the allocator's header), which the cell's trailing padding absorbs.
func TestCellFillsACacheLine(t *testing.T) {
	assert.EqualValues(t, 64, unsafe.Sizeof(cell{}))
	for _, capacity := range []int{2, 8, 16, maxInbox} {
		in := newInbox(inboxCells(capacity), 0, capacity)
		for i := range in.cells {
			c := &in.cells[i]
			first := uintptr(unsafe.Pointer(c)) / 64
			last := (uintptr(unsafe.Pointer(&c.e)) + unsafe.Sizeof(c.e) - 1) / 64
			require.Equal(t, first, last, "capacity %d: cell %d spans two lines", capacity, i)
		}
	}
}

// A post that saw the mailbox open and then lost the race to Close must not
// queue anything: it checks again once it holds its slots, and gives them
// back.
func TestPostOvertakenByClose(t *testing.T) {
	l := NewLimit(4)
	m, _, drops := newSuspended(Config{Capacity: 4, Shared: l})
	stopped := errors.New("stopped")
	m.Close(stopped)
	_, _, full, err := m.reserveSlots() // as a post past its first look at closed
	assert.Nil(t, full)
	require.ErrorIs(t, err, stopped)
	assert.Zero(t, m.Len(), "the mailbox slot was given back")
	assert.Zero(t, l.Used(), "the shared slot was given back")
	assert.Zero(t, m.Posted())
	assert.Empty(t, drops.all())
}
