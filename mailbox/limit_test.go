package mailbox

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewLimit(t *testing.T) {
	tests := []struct {
		name    string
		give    int
		wantMax int
	}{
		{name: "positive", give: 3, wantMax: 3},
		{name: "one", give: 1, wantMax: 1},
		{name: "zero means one", give: 0, wantMax: 1},
		{name: "negative means one", give: -7, wantMax: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimit(tt.give)
			assert.Equal(t, tt.wantMax, l.Max())
			assert.Zero(t, l.Used())
		})
	}
}

func TestLimitAcquireRelease(t *testing.T) {
	l := NewLimit(3)
	for i := range 3 {
		require.True(t, l.TryAcquire(), "slot %d", i)
		assert.Equal(t, i+1, l.Used())
	}
	assert.False(t, l.TryAcquire(), "full")
	assert.Equal(t, 3, l.Used())

	l.Release(0)
	l.Release(-2)
	assert.Equal(t, 3, l.Used(), "non-positive releases are ignored")

	l.Release(2)
	assert.Equal(t, 1, l.Used())
	assert.True(t, l.TryAcquire())
	assert.True(t, l.TryAcquire())
	assert.False(t, l.TryAcquire())
	l.Release(3)
	assert.Zero(t, l.Used())
}

func TestLimitTryAcquireConcurrent(t *testing.T) {
	const max, workers = 50, 16
	l := NewLimit(max)
	got := make(chan int, workers)
	start := make(chan struct{})
	for range workers {
		go func() {
			<-start
			n := 0
			for range 100 {
				if l.TryAcquire() {
					n++
				}
			}
			got <- n
		}()
	}
	close(start)
	total := 0
	for range workers {
		total += <-got
	}
	assert.Equal(t, max, total, "exactly max acquisitions succeed")
	assert.Equal(t, max, l.Used())
}

// TestLimitGiveBackWakes replays, step by step, a refusal caused by another
// sender's momentary over-count: the give-back that leaves room must wake the
// parked sender, and one that leaves the limit full must wake nobody.
func TestLimitGiveBackWakes(t *testing.T) {
	l := NewLimit(1)
	require.True(t, l.TryAcquire()) // H holds the only slot
	p := newWaiter()
	l.wq.park(p) // P waits for it

	l.in.Add(1)  // A's TryAcquire: past max, about to give it back
	l.Release(1) // H is done: wakes P
	require.Len(t, p.ch, 1)
	<-p.ch
	require.False(t, l.TryAcquire(), "P is refused: A's slot is still counted")
	assert.Empty(t, p.ch, "a give-back that leaves the limit full wakes nobody")
	l.wq.park(p)

	l.giveBack() // A gives its slot back: the limit is free
	assert.Len(t, p.ch, 1, "P must be woken, or it sleeps with a free slot")
	assert.Zero(t, l.Used())
	assert.True(t, l.TryAcquire())
}

// TestLimitBoundaryChurn has more senders than slots acquire and release in
// a loop, each waiting as Post does (park, re-check, sleep until woken) when
// refused. A refusal caused by another sender's momentary over-count must be
// followed by a wake-up, or a sender would sleep forever; and nobody may hold
// more than max slots at once.
func TestLimitBoundaryChurn(t *testing.T) {
	const max, workers, rounds = 2, 8, 2000
	l := NewLimit(max)
	var held atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, workers)
	for range workers {
		go func() {
			w := newWaiter()
			for range rounds {
				for !l.TryAcquire() {
					l.wq.park(w)
					if l.TryAcquire() {
						l.wq.leave(w)
						break
					}
					select {
					case <-w.ch:
					case <-ctx.Done():
						l.wq.leave(w)
						errs <- fmt.Errorf("stranded: %w", ctx.Err())
						return
					}
				}
				if n := held.Add(1); n > max {
					errs <- fmt.Errorf("%d slots held, max %d", n, max)
					return
				}
				held.Add(-1)
				l.Release(1)
			}
			errs <- nil
		}()
	}
	for range workers {
		require.NoError(t, <-errs)
	}
	assert.Zero(t, l.Used())
}

func TestWaitZero(t *testing.T) {
	t.Run("free limit returns at once", func(t *testing.T) {
		require.NoError(t, NewLimit(2).WaitZero(t.Context()))
	})
	t.Run("returns when the last slot is released", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := NewLimit(3)
			require.True(t, l.TryAcquire())
			require.True(t, l.TryAcquire())
			done := make(chan error, 1)
			go func() { done <- l.WaitZero(t.Context()) }()
			synctest.Wait()
			require.Empty(t, done, "returned while 2 slots were taken")

			l.Release(1)
			synctest.Wait()
			require.Empty(t, done, "returned while 1 slot was taken")

			l.Release(1)
			synctest.Wait()
			require.Len(t, done, 1)
			require.NoError(t, <-done)
		})
	})
	t.Run("ctx canceled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			l := NewLimit(1)
			require.True(t, l.TryAcquire())
			cause := errors.New("give up")
			ctx, cancel := context.WithCancelCause(t.Context())
			done := make(chan error, 1)
			go func() { done <- l.WaitZero(ctx) }()
			synctest.Wait()
			cancel(cause)
			require.ErrorIs(t, <-done, context.Canceled)
			assert.Zero(t, l.wq.nwait.Load(), "the waiter left the queue")
			assert.Zero(t, l.zq.nwait.Load(), "the waiter left the queue")
		})
	})
}

// A WaitZero caller must not take a wake-up that a release meant for a
// sender waiting for a slot: the sender would then sleep with a free slot
// until its own timer fires.
func TestWaitZeroDoesNotSwallowWakeups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLimit(1)
		require.True(t, l.TryAcquire())
		m := New(Config{Capacity: 4, Shared: l})
		m.RegisterHandlers(&invoker{}, synchronized)
		m.PostSystemMessage(suspend) // keep what is posted queued

		zero := make(chan error, 1)
		go func() { zero <- l.WaitZero(t.Context()) }()
		synctest.Wait() // WaitZero parks first, so it is the oldest waiter

		sent := make(chan error, 1)
		go func() { sent <- m.Post(t.Context(), prioItem(1), Patience{Wait: forever}) }()
		synctest.Wait()
		require.Empty(t, sent, "precondition: the sender waits for the slot")

		l.Release(1)
		synctest.Wait()
		require.Len(t, sent, 1, "the sender was not woken although a slot was free")
		require.NoError(t, <-sent)
		assert.Equal(t, 1, l.Used())

		m.Close(nil)
		require.NoError(t, <-zero)
	})
}

func TestWaitQueueWakeFIFO(t *testing.T) {
	var q waitQueue
	ws := make([]*waiter, 5)
	for i := range ws {
		ws[i] = newWaiter()
		q.park(ws[i])
	}
	require.EqualValues(t, 5, q.nwait.Load())

	signaled := func() []int {
		var out []int
		for i, w := range ws {
			select {
			case <-w.ch:
				out = append(out, i)
			default:
			}
		}
		return out
	}
	q.wake(2)
	assert.Equal(t, []int{0, 1}, signaled(), "oldest first")
	assert.EqualValues(t, 3, q.nwait.Load())
	q.wake(1)
	assert.Equal(t, []int{2}, signaled())
	q.wake(10)
	assert.Equal(t, []int{3, 4}, signaled(), "waking more than are parked")
	assert.Zero(t, q.nwait.Load())
	assert.Nil(t, q.waiters, "an emptied queue drops its backing array")
	q.wake(1) // nobody parked: no-op
	q.wakeAll()
}

func TestWaitQueueLeave(t *testing.T) {
	t.Run("still parked", func(t *testing.T) {
		var q waitQueue
		a, b, c := newWaiter(), newWaiter(), newWaiter()
		q.park(a)
		q.park(b)
		q.park(c)
		q.leave(b)
		assert.EqualValues(t, 2, q.nwait.Load())
		q.wake(2)
		assert.Len(t, a.ch, 1)
		assert.Empty(t, b.ch)
		assert.Len(t, c.ch, 1)
	})
	t.Run("already woken passes the wake-up on", func(t *testing.T) {
		var q waitQueue
		a, b := newWaiter(), newWaiter()
		q.park(a)
		q.park(b)
		q.wake(1) // meant for a, which is about to give up
		q.leave(a)
		assert.Empty(t, a.ch, "a's signal was consumed")
		assert.Len(t, b.ch, 1, "b got the wake-up a did not use")
		assert.Zero(t, q.nwait.Load())
	})
	t.Run("woken and signal consumed", func(t *testing.T) {
		var q waitQueue
		a, b := newWaiter(), newWaiter()
		q.park(a)
		q.park(b)
		q.wake(1)
		<-a.ch     // a used its wake-up
		q.leave(a) // and leaves: nothing to pass on
		assert.Empty(t, b.ch)
		assert.EqualValues(t, 1, q.nwait.Load())
	})
	t.Run("wakeAll", func(t *testing.T) {
		var q waitQueue
		ws := []*waiter{newWaiter(), newWaiter(), newWaiter()}
		for _, w := range ws {
			q.park(w)
		}
		q.wakeAll()
		for i, w := range ws {
			assert.Len(t, w.ch, 1, "waiter %d", i)
		}
		assert.Zero(t, q.nwait.Load())
	})
}

// A sender compares with its last reading of the released half, which lags:
// room it has not read yet must still be found, and the bound is exact both
// ways.
func TestLimitStaleReading(t *testing.T) {
	l := NewLimit(2)
	require.True(t, l.TryAcquire())
	require.True(t, l.TryAcquire())
	assert.False(t, l.TryAcquire(), "full")
	assert.EqualValues(t, 0, l.seen.Load(), "nothing released yet")
	l.Release(2)
	assert.Less(t, l.seen.Load(), l.out.Load(), "precondition: the senders' reading is stale")
	assert.Zero(t, l.Used())
	require.True(t, l.TryAcquire(), "room the stale reading hides is found")
	require.True(t, l.TryAcquire())
	assert.False(t, l.TryAcquire(), "and no more than max")
	assert.Equal(t, 2, l.Used())
	d, ok := l.acquire()
	assert.False(t, ok)
	assert.Zero(t, d)
	l.Release(1)
	d, ok = l.acquire()
	require.True(t, ok)
	assert.EqualValues(t, 1, d, "one slot was taken before it")
	assert.EqualValues(t, 1, l.depth())
}
