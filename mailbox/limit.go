package mailbox

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

// Limit is a counting bound on queued messages. A sender reserves a slot with
// TryAcquire before it queues a message, and the slot is released when the
// message leaves the queue, so a full Limit refuses instead of growing. Senders
// that choose to wait park on the Limit and are woken, one per released slot,
// in the order they parked.
//
// The slots taken are counted in two halves, so that senders and consumers
// do not write the same cache line for every message: senders count the slots
// they take (in), consumers those they release (out), and in - out are taken.
// A sender compares in with a recent reading of out, which is never more
// than out: if that leaves room there is room, and it reads out itself only
// when it does not. So with room to spare a sender touches no line a consumer
// writes, and the bound is still exact.
//
// A Limit is safe for concurrent use. The zero value is not usable; call
// NewLimit.
type Limit struct {
	max int64
	_   [56]byte

	in   atomic.Int64 // slots taken, less those given back at once; written by senders
	seen atomic.Int64 // a reading of out, never more than out; written by senders
	_    [48]byte

	// out and the wait queues share a line: a consumer reads whether
	// anyone waits whenever it releases, and waiters come and go only on
	// a slow path. A struct that embeds a Limit may put what its consumer
	// writes after it.
	out atomic.Int64 // slots released; written by consumers
	wq  waitQueue    // senders waiting for a slot
	zq  waitQueue    // WaitZero callers, woken when no slot is taken
}

// waitQueue is a FIFO of parked senders. Whoever frees room wakes as many
// waiters as it freed slots; a woken waiter re-checks and parks again if a
// competitor took the room first.
type waitQueue struct {
	nwait atomic.Int32

	mu      sync.Mutex
	waiters []*waiter // bounded by the number of parked goroutines
}

// waiter is one parked goroutine. Its channel has room for one signal, so a
// wake never blocks the releaser.
type waiter struct {
	ch chan struct{}
}

func newWaiter() *waiter { return &waiter{ch: make(chan struct{}, 1)} }

// NewLimit returns a Limit of max slots. A max below 1 is treated as 1.
func NewLimit(max int) *Limit {
	l := &Limit{}
	l.init(max)
	return l
}

func (l *Limit) init(max int) {
	if max < 1 {
		max = 1
	}
	l.max = int64(max)
}

// Max returns the number of slots.
func (l *Limit) Max() int { return int(l.max) }

// Used returns the number of slots taken, between 0 and Max. It does not
// block. Under load it is a moment's reading: the two halves of the count are
// read one after the other.
func (l *Limit) Used() int { return int(min(max(l.in.Load()-l.out.Load(), 0), l.max)) }

// TryAcquire takes one slot if one is free and reports whether it did. It
// never blocks.
//
// It takes the slot with one atomic addition and gives it back if that went
// past max, rather than loading and compare-and-swapping. A sender racing
// another one at the boundary may be refused for a slot that the other gives
// back at once; the give-back wakes a parked sender when it leaves room, so
// the refused one, which re-checks after parking, is not stranded. A
// give-back that leaves the limit full wakes nobody, so refused senders
// never wake each other in a loop.
func (l *Limit) TryAcquire() bool {
	_, ok := l.acquire()
	return ok
}

// acquire is TryAcquire that also returns, when it took a slot, how many
// were taken before it, as far as the sender knows: never fewer than were,
// and more by the releases it has not read yet.
func (l *Limit) acquire() (int64, bool) {
	i := l.in.Add(1)
	if u := i - l.seen.Load(); u <= l.max {
		return u - 1, true
	}
	o := l.readOut()
	if u := i - o; u <= l.max {
		return u - 1, true
	}
	l.giveBack()
	return 0, false
}

// depth returns how many slots are taken, reading out: for a sender whose
// acquire reported a depth that is out of date.
func (l *Limit) depth() int64 {
	o := l.readOut()
	return l.in.Load() - o - 1
}

// readOut reads out and keeps the reading in seen for the senders that
// follow.
func (l *Limit) readOut() int64 {
	o := l.out.Load()
	if o > l.seen.Load() {
		l.seen.Store(o) // a racing sender may store an older reading: still never more than out
	}
	return o
}

// giveBack returns the slot a refused acquire took past max.
func (l *Limit) giveBack() {
	u := l.in.Add(-1) - l.out.Load()
	if u <= 0 && l.zq.nwait.Load() > 0 {
		l.zq.wakeAll()
	}
	if u < l.max && l.wq.nwait.Load() > 0 {
		l.wq.wake(1)
	}
}

// Release gives back n slots and wakes up to n parked waiters. It never blocks
// for long: it takes the waiter lock only when someone is parked.
func (l *Limit) Release(n int) {
	if n <= 0 {
		return
	}
	o := l.out.Add(int64(n))
	if l.zq.nwait.Load() > 0 && l.in.Load() <= o {
		l.zq.wakeAll()
	}
	if l.wq.nwait.Load() > 0 {
		l.wq.wake(n)
	}
}

// idle reports whether no slot is taken. It reads out before in: a slot
// taken after out was read shows in in, so it never reports a slot that
// was held all along as free.
func (l *Limit) idle() bool {
	o := l.out.Load()
	return l.in.Load() <= o
}

// WaitZero blocks until no slot is taken or ctx is done, and returns ctx.Err()
// in the latter case. It parks in a queue of its own, apart from the senders,
// so that it never takes a wake-up meant for a sender, and is woken by the
// release that frees the last slot.
func (l *Limit) WaitZero(ctx context.Context) error {
	w := newWaiter()
	for {
		if l.idle() {
			return nil
		}
		l.zq.park(w)
		if l.idle() {
			l.zq.leave(w)
			return nil
		}
		select {
		case <-w.ch:
		case <-ctx.Done():
			l.zq.leave(w)
			return ctx.Err()
		}
	}
}

// wakeAll signals every parked waiter, which then re-checks its condition.
func (q *waitQueue) wakeAll() {
	if q.nwait.Load() == 0 {
		return
	}
	q.wake(int(^uint(0) >> 1))
}

// park queues w. The caller must re-check its condition after park and
// before it blocks, so that a release between the check and the park is not
// missed: Release decrements before it looks for waiters, and park registers
// before the caller re-checks.
func (q *waitQueue) park(w *waiter) {
	q.mu.Lock()
	q.waiters = append(q.waiters, w)
	q.nwait.Add(1)
	q.mu.Unlock()
}

// leave removes w if it is still queued. If a waker already took w off the
// queue, its signal is consumed and passed on to the next waiter, so that a
// goroutine that stops waiting never swallows a wake-up meant for a slot.
func (q *waitQueue) leave(w *waiter) {
	q.mu.Lock()
	for i, x := range q.waiters {
		if x == w {
			q.waiters = slices.Delete(q.waiters, i, i+1) // zeroes the vacated slot
			q.nwait.Add(-1)
			q.mu.Unlock()
			return
		}
	}
	q.mu.Unlock()
	select {
	case <-w.ch:
		q.wake(1)
	default:
	}
}

// wake signals up to n waiters, oldest first. It never blocks on them.
func (q *waitQueue) wake(n int) {
	q.mu.Lock()
	for n > 0 && len(q.waiters) > 0 {
		w := q.waiters[0]
		q.waiters[0] = nil
		q.waiters = q.waiters[1:]
		q.nwait.Add(-1)
		n--
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	if len(q.waiters) == 0 {
		q.waiters = nil // drop the backing array a long queue left behind
	}
	q.mu.Unlock()
}
