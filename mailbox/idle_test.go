package mailbox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// spareInbox returns the inbox m keeps weakly, or nil once it was collected.
func (m *Mailbox) spareInbox() *inbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spare.Value()
}

// A mailbox whose agent has delivered everything holds no inbox (no cells,
// queue or batch) and no buffer for system messages; its counters stay. The
// next post gives it an inbox again, where the last one stopped.
func TestIdleMailboxReleasesInbox(t *testing.T) {
	m, inv, drops := newSuspended(Config{Capacity: 16})
	assert.Nil(t, m.in.Load(), "a new mailbox has no inbox")
	a, b, c := named("a", 1), named("b", 90), named("c", 1)
	for _, it := range []*item{a, b, c} {
		require.NoError(t, m.TryPost(it))
	}
	require.NotNil(t, m.in.Load(), "a post installs one")
	m.PostSystemMessage(resume)

	assert.Equal(t, []any{b, a, c}, inv.delivered())
	assert.Nil(t, m.in.Load(), "released once the agent found it empty")
	assert.Nil(t, m.sys.buf, "no buffer kept for system messages")
	assert.EqualValues(t, 3, m.Posted())
	assert.EqualValues(t, 3, m.Delivered())
	assert.Zero(t, m.Len())

	d := named("d", 1)
	require.NoError(t, m.TryPost(d))
	assert.Equal(t, []any{b, a, c, d}, inv.delivered())
	assert.Nil(t, m.in.Load())
	assert.EqualValues(t, 4, m.Posted())

	stopped := errors.New("stopped")
	m.Close(stopped)
	assert.EqualValues(t, 4, m.Posted(), "closing an idle mailbox changes no count")
	assert.ErrorIs(t, m.TryPost(named("late", 1)), stopped)
	assert.Nil(t, m.in.Load(), "a refused post installs nothing")
	assert.Empty(t, drops.all())
}

// A released inbox is taken back while it is reachable; once the collector
// has reclaimed it, a new one starts at the position the last one stopped
// at, so counts and order carry on.
func TestReleasedInboxReusedUntilCollected(t *testing.T) {
	m, inv, drops := newSuspended(Config{Capacity: 4})
	items := []*item{named("a", 1), named("b", 1)}
	func() { // holds the first inbox only in here, so that it can be collected after
		require.NoError(t, m.TryPost(items[0]))
		first := m.in.Load()
		m.PostSystemMessage(resume)
		require.Nil(t, m.in.Load())
		require.Same(t, first, m.spareInbox(), "kept weakly")

		m.PostSystemMessage(suspend)
		require.NoError(t, m.TryPost(items[1]))
		require.Same(t, first, m.in.Load(), "taken back, not allocated again")
		m.PostSystemMessage(resume)
		require.Nil(t, m.in.Load())
	}()
	require.Eventually(t, func() bool {
		runtime.GC()
		return m.spareInbox() == nil
	}, 10*time.Second, time.Millisecond, "the released inbox was never collected")

	m.PostSystemMessage(suspend)
	for i := range 3 { // more than one lap of the new inbox's cells from its base
		items = append(items, named(fmt.Sprintf("c%d", i), 1))
		require.NoError(t, m.TryPost(items[len(items)-1]))
	}
	in := m.in.Load()
	require.NotNil(t, in)
	assert.EqualValues(t, 5, m.Posted(), "the new inbox starts where the last one stopped")
	assert.EqualValues(t, 2, in.head.Load())
	m.PostSystemMessage(resume)
	want := make([]any, len(items))
	for i, it := range items {
		want[i] = it
	}
	assert.Equal(t, want, inv.delivered())
	assert.Nil(t, m.in.Load())
	assert.EqualValues(t, 5, m.Posted())
	assert.Empty(t, drops.all())
}

// The agent looks at its inbox, finds the next cell claimed but not
// published, and goes idle: it must keep the inbox, or the message would be
// published into one it dropped.
func TestReleaseKeepsInboxWithCellInFlight(t *testing.T) {
	inv := &invoker{}
	m, drops := newTestMailbox(Config{Capacity: 4}, synchronized, inv)
	slow := startPost(t, m)
	behind := named("behind", 1)
	require.NoError(t, m.TryPost(behind)) // runs the agent: it stops at the slow cell and goes idle
	require.Empty(t, inv.delivered())
	require.Same(t, slow.in, m.in.Load(), "an inbox with a claimed cell is kept")

	m.release() // as the agent, again: still not empty
	require.Same(t, slow.in, m.in.Load())

	first := named("slow", 1)
	slow.finish(first)
	assert.Equal(t, []any{first, behind}, inv.delivered())
	assert.Nil(t, m.in.Load(), "released once both were delivered")
	assert.EqualValues(t, 2, m.Posted())
	assert.Empty(t, drops.all())
}

// The agent keeps an inbox whose queue or batch holds messages, even with
// every cell consumed.
func TestReleaseKeepsInboxWithQueuedMessages(t *testing.T) {
	t.Run("queue", func(t *testing.T) {
		m, inv, drops := newSuspended(Config{Capacity: 4})
		x := named("x", 1)
		require.NoError(t, m.TryPost(x))
		in := m.in.Load()
		m.mu.Lock()
		require.Equal(t, 1, m.drainLocked(), "moved into the queue")
		m.mu.Unlock()
		m.release()
		require.Same(t, in, m.in.Load(), "an inbox whose queue holds a message is kept")
		m.PostSystemMessage(resume)
		assert.Equal(t, []any{x}, inv.delivered())
		assert.Nil(t, m.in.Load())
		assert.Empty(t, drops.all())
	})
	t.Run("batch", func(t *testing.T) {
		m, inv, drops := newSuspended(Config{Capacity: 4})
		x, y := named("x", 1), named("y", 1)
		require.NoError(t, m.TryPost(x))
		require.NoError(t, m.TryPost(y))
		in, ok := m.refill() // as the agent: both into the batch
		require.True(t, ok)
		require.EqualValues(t, 2, in.batchN)
		m.release()
		require.Same(t, in, m.in.Load(), "an inbox whose batch holds messages is kept")
		m.PostSystemMessage(resume)
		assert.Equal(t, []any{x, y}, inv.delivered())
		assert.Nil(t, m.in.Load())
		assert.Empty(t, drops.all())
	})
}

// A sender that loaded the inbox before the agent released it finds it
// retired when it claims a cell, and installs one: nothing is written into
// a released inbox.
func TestClaimOnReleasedInbox(t *testing.T) {
	m, inv, drops := newSuspended(Config{Capacity: 4})
	a := named("a", 1)
	require.NoError(t, m.TryPost(a))
	stale := m.in.Load()
	m.PostSystemMessage(resume) // delivers a and releases the inbox
	require.Nil(t, m.in.Load())

	_, _, res := stale.claim()
	require.Equal(t, inboxRetired, res, "a released inbox refuses claims")

	// A post that loaded the inbox before the release claims now.
	_, _, full, err := m.reserve()
	require.NoError(t, err)
	require.Nil(t, full)
	claimed := make(chan *inFlight, 1)
	go func() {
		in, c, pos := m.claim(stale)
		claimed <- &inFlight{m, in, c, pos}
	}()
	var got *inFlight
	select {
	case got = <-claimed:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the claim on a released inbox never returned")
	}
	require.Same(t, got.in, m.in.Load(), "claimed in the installed inbox")
	assert.Same(t, stale, got.in, "the sender's reference kept the inbox alive: taken back")
	assert.EqualValues(t, 1, got.pos)
	b := named("b", 1)
	got.finish(b)
	assert.Equal(t, []any{a, b}, inv.delivered())
	assert.EqualValues(t, 2, m.Posted())
	assert.Nil(t, m.in.Load())
	assert.Empty(t, drops.all())
}

// Close waits for a post that holds a slot while the mailbox has no inbox:
// the post installs one and publishes, and Close drops its message.
func TestCloseWaitsForPostWithoutInbox(t *testing.T) {
	m, _, drops := newSuspended(Config{Capacity: 4})
	_, _, full, err := m.reserve()
	require.NoError(t, err)
	require.Nil(t, full)
	require.Nil(t, m.in.Load())

	stopped := errors.New("stopped")
	closed := closeBlocked(t, m, stopped)

	late := named("late", 1)
	in, c, pos := m.claim(m.in.Load()) // installs an inbox under the lock Close lets go of
	(&inFlight{m, in, c, pos}).finish(late)
	<-closed
	assert.Equal(t, []any{late}, drops.msgs())
	for _, dr := range drops.all() {
		assert.ErrorIs(t, dr.reason, stopped)
	}
	assert.EqualValues(t, 1, m.Posted())
	assert.Zero(t, m.Len())
}

// The channel that wakes waiting senders at Close is made by the first
// sender that waits; made after Close, it is closed already.
func TestDoneChanAfterClose(t *testing.T) {
	m := New(Config{Capacity: 1})
	m.Close(nil)
	select {
	case <-m.doneChan():
	default:
		t.Fatal("the done channel of a closed mailbox is open")
	}
}

// Senders race an agent that keeps going idle, and releasing its inbox, in
// rounds: each round they post a burst at once, and between rounds the
// mailbox goes idle and, every other round, the collector reclaims the
// inbox it released, so that the next burst races to install a new one.
// Half the runs close the mailbox midway. Every post is delivered once, in
// its sender's order, or refused or dropped with the close error, and the
// idle mailbox holds no inbox.
func TestStressReleaseRaces(t *testing.T) {
	for _, closeMidway := range []bool{false, true} {
		t.Run(fmt.Sprintf("close=%t", closeMidway), func(t *testing.T) {
			const senders, rounds, burst = 4, 30, 100
			var (
				mu        sync.Mutex
				last      [senders]int
				delivered atomic.Int64
				disorder  atomic.Int64
			)
			for i := range last {
				last[i] = -1
			}
			inv := &invoker{onUser: func(v any) {
				it := v.(*item)
				mu.Lock()
				if it.seq <= last[it.src] {
					disorder.Add(1)
				}
				last[it.src] = it.seq
				mu.Unlock()
				delivered.Add(1)
			}}
			drops := &dropLog{}
			m := New(Config{Capacity: 8, Drop: drops.fn})
			m.RegisterHandlers(inv, actor.NewDefaultDispatcher(5))
			m.Start()

			stopped := errors.New("stopped")
			var accepted, refused atomic.Int64
			settled := func() bool {
				return delivered.Load()+int64(len(drops.all())) == accepted.Load() &&
					m.in.Load() == nil && m.status.Load() == idle
			}
			for r := range rounds {
				var wg sync.WaitGroup
				for p := range senders {
					wg.Go(func() {
						for i := range burst {
							seq := r*burst + i
							err := m.Post(t.Context(), &item{prio: 50, src: p, seq: seq}, Patience{Wait: time.Minute})
							switch {
							case err == nil:
								accepted.Add(1)
							case errors.Is(err, stopped):
								refused.Add(1)
							default:
								t.Errorf("sender %d: %v", p, err)
								return
							}
							if i%7 == 0 {
								runtime.Gosched() // let the agent catch up and go idle
							}
							if closeMidway && p == 0 && seq == rounds*burst/2 {
								m.Close(stopped)
							}
						}
					})
				}
				sent := make(chan struct{})
				go func() { wg.Wait(); close(sent) }()
				select {
				case <-sent:
				case <-time.After(30 * time.Second):
					require.FailNow(t, "senders stuck", "round %d: accepted %d, refused %d", r, accepted.Load(), refused.Load())
				}
				require.Eventually(t, settled, 10*time.Second, 100*time.Microsecond,
					"round %d: accepted %d, delivered %d, dropped %d, inbox %p",
					r, accepted.Load(), delivered.Load(), len(drops.all()), m.in.Load())
				if r%2 == 1 {
					require.Eventually(t, func() bool {
						runtime.GC()
						return m.spareInbox() == nil
					}, 10*time.Second, time.Millisecond, "round %d: the released inbox was never collected", r)
				}
			}
			assert.Zero(t, disorder.Load(), "a sender's messages out of order")
			assert.EqualValues(t, accepted.Load(), m.Posted())
			assert.EqualValues(t, senders*rounds*burst, accepted.Load()+refused.Load())
			for _, dr := range drops.all() {
				assert.ErrorIs(t, dr.reason, stopped)
			}
			if !closeMidway {
				assert.Zero(t, refused.Load())
				assert.Empty(t, drops.all())
			}
			assert.Zero(t, m.Len())
			t.Logf("accepted %d, delivered %d, dropped %d, refused %d",
				accepted.Load(), delivered.Load(), len(drops.all()), refused.Load())
		})
	}
}

// What every agent keeps allocated while idle: the Mailbox fits the
// 512-byte size class (below which the allocator adds no header), and the
// inbox a busy agent adds fits 2 KiB with its header.
func TestMailboxSize(t *testing.T) {
	assert.LessOrEqual(t, unsafe.Sizeof(Mailbox{}), uintptr(512))
	assert.LessOrEqual(t, unsafe.Sizeof(inbox{}), uintptr(2048-8))
}

// Mailboxes that have each delivered a message keep, after a collection,
// little more than the Mailbox itself (512 bytes): no inbox (4 KiB of cells
// and 2 KiB of queue and batch) and no system queue buffer.
func TestIdleMailboxMemory(t *testing.T) {
	const n = 2000
	inv := &countInvoker{}
	drop := func(any, error) {}
	msg := named("x", 1)
	mailboxes := make([]*Mailbox, n)
	before := liveBytes()
	for i := range mailboxes {
		m := New(Config{Capacity: 1024, Drop: drop})
		m.RegisterHandlers(inv, synchronized)
		m.PostSystemMessage(&actor.Started{})
		require.NoError(t, m.Post(context.Background(), msg, Patience{}))
		mailboxes[i] = m
	}
	per := float64(liveBytes()-before) / n
	runtime.KeepAlive(mailboxes)
	require.Equal(t, n, inv.n)
	t.Logf("%.0f bytes per idle mailbox", per)
	assert.Less(t, per, 1024.0, "an idle mailbox keeps what only a busy one needs")
}

// liveBytes returns the live heap after a full collection.
func liveBytes() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
