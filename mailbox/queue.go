package mailbox

import "math/bits"

// MaxPriority is the highest priority a message can carry; 0 is the lowest.
const MaxPriority = 100

// DefaultPriority is the priority of a message that states none.
const DefaultPriority = 50

// levels is the number of priority levels, 0 through MaxPriority.
const levels = MaxPriority + 1

// shrinkAbove is the ring size above which an emptied level may give its
// buffer back (see queue.keep), so a burst does not pin memory for the
// agent's lifetime.
const shrinkAbove = 64

// entry is one queued message and its deadline in Unix nanoseconds (0: none),
// kept beside it so that neither push nor pop has to ask the message again,
// and, in a timed mailbox, when it was queued (see Mailbox.stamp; 0: not
// timed).
type entry struct {
	v        any
	deadline int64
	stamp    int64
}

// queue is a priority queue of 101 FIFO levels. A two-word bitmap records
// which levels are non-empty, so push and pop are O(1): pop finds the highest
// non-empty level with one bits.Len64 per word instead of scanning the levels.
// Levels are allocated on first use, so an idle queue costs one pointer per
// level. queue is not safe for concurrent use; Mailbox guards it.
//
// An emptied level keeps a buffer of up to shrinkAbove entries. A larger one
// is kept only while the empty levels' buffers total at most keep entries
// (about the mailbox's capacity, at most maxKeep), and is freed otherwise: a
// queue that fills and empties over and over (a sender faster than its
// agent) does not regrow its buffer from 8 entries every time, and what an
// idle queue pins is bounded: 24 KiB for the default capacity of 1024.
type queue struct {
	levels [levels]*ring
	bits   [2]uint64
	n      int
	keep   int // entries of empty levels' large buffers that may be kept
	kept   int // entries of empty levels' large buffers kept now
}

// maxKeep caps queue.keep: 4096 entries (96 KiB). A mailbox of a larger
// capacity whose queue fills and empties over and over regrows its buffer
// from 8 entries each time, which is cheap at that depth (the copies of
// doubling come to one per message).
const maxKeep = 4096

// setKeep sets how many entries of large buffers empty levels may keep: the
// mailbox's capacity rounded up to the ring size that holds it, at most
// maxKeep.
func (q *queue) setKeep(capacity int) {
	size := 8
	for size < min(capacity, maxKeep) {
		size *= 2
	}
	q.keep = size
}

// push appends v at priority p, which must be in [0, MaxPriority].
func (q *queue) push(p int, v entry) {
	r := q.levels[p]
	if r == nil {
		r = &ring{}
		q.levels[p] = r
	}
	if r.n == 0 {
		q.reuse(r)
	}
	r.push(v)
	q.bits[p>>6] |= 1 << (p & 63)
	q.n++
}

// pop removes and returns the oldest value of the highest non-empty level.
func (q *queue) pop() (entry, bool) {
	p := q.top()
	if p < 0 {
		return entry{}, false
	}
	return q.popFrom(p)
}

// popFrom removes and returns the oldest value of level p, if any.
func (q *queue) popFrom(p int) (entry, bool) {
	r := q.levels[p]
	if r == nil || r.n == 0 {
		return entry{}, false
	}
	v := r.pop()
	if r.n == 0 {
		q.bits[p>>6] &^= 1 << (p & 63)
		q.emptied(r)
	}
	q.n--
	return v, true
}

// emptied decides whether r, just emptied, keeps its buffer.
func (q *queue) emptied(r *ring) {
	if len(r.buf) <= shrinkAbove {
		return
	}
	if q.kept+len(r.buf) <= q.keep {
		q.kept += len(r.buf)
		return
	}
	r.buf = nil
}

// reuse takes r, empty, off the kept buffers' account before it fills again.
func (q *queue) reuse(r *ring) {
	if len(r.buf) > shrinkAbove {
		q.kept -= len(r.buf)
	}
}

// popN moves up to len(dst) of the oldest values of level p into dst, in
// order, and returns how many it moved, with the level's bookkeeping done
// once rather than per value: the agent calls it under the mailbox's lock,
// which a sender that found the mailbox full may be waiting for.
func (q *queue) popN(p int, dst []entry) int {
	r := q.levels[p]
	if r == nil || r.n == 0 {
		return 0
	}
	n := r.popN(dst)
	if r.n == 0 {
		q.bits[p>>6] &^= 1 << (p & 63)
		q.emptied(r)
	}
	q.n -= n
	return n
}

// pushFront puts v back at the head of level p, before everything queued
// there, for values taken out and returned unprocessed.
func (q *queue) pushFront(p int, v entry) {
	r := q.levels[p]
	if r == nil {
		r = &ring{}
		q.levels[p] = r
	}
	if r.n == 0 {
		q.reuse(r)
	}
	r.pushFront(v)
	q.bits[p>>6] |= 1 << (p & 63)
	q.n++
}

// top returns the highest non-empty level, or -1.
func (q *queue) top() int {
	if q.bits[1] != 0 {
		return 64 + bits.Len64(q.bits[1]) - 1
	}
	return bits.Len64(q.bits[0]) - 1
}

// drain removes every value, highest priority first, and returns them.
func (q *queue) drain() []entry {
	if q.n == 0 {
		return nil
	}
	out := make([]entry, 0, q.n)
	for {
		v, ok := q.pop()
		if !ok {
			return out
		}
		out = append(out, v)
	}
}

// removeIf removes every value for which drop returns true, keeping the order
// of the rest, and returns the removed values. It is O(n) and is meant for
// rare housekeeping (reaping expired messages from a full mailbox).
func (q *queue) removeIf(drop func(entry) bool) []entry {
	var out []entry
	for p := range q.levels {
		r := q.levels[p]
		if r == nil || r.n == 0 {
			continue
		}
		kept := 0
		for i := range r.n {
			v := r.buf[(r.head+i)&(len(r.buf)-1)]
			if drop(v) {
				out = append(out, v)
				continue
			}
			r.buf[(r.head+kept)&(len(r.buf)-1)] = v
			kept++
		}
		for i := kept; i < r.n; i++ {
			r.buf[(r.head+i)&(len(r.buf)-1)] = entry{}
		}
		q.n -= r.n - kept
		r.n = kept
		if kept == 0 {
			r.head = 0
			q.bits[p>>6] &^= 1 << (p & 63)
			q.emptied(r)
		}
	}
	return out
}

// ring is a growable FIFO ring buffer; its size is always a power of two.
type ring struct {
	buf  []entry
	head int
	n    int
}

func (r *ring) push(v entry) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

func (r *ring) pushFront(v entry) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = v
	r.n++
}

func (r *ring) pop() entry {
	v := r.buf[r.head]
	r.buf[r.head] = entry{} // let the message be collected
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if r.n == 0 {
		r.head = 0
	}
	return v
}

// popN moves up to len(dst) values into dst, oldest first, clearing their
// slots, and returns how many it moved. It copies element by element: copy
// and clear on a slice of entries (which hold pointers) go through the
// runtime's typed bulk copy, which costs more than the loop for the few
// entries a batch usually has.
func (r *ring) popN(dst []entry) int {
	n := min(len(dst), r.n)
	mask := len(r.buf) - 1
	for i, j := 0, r.head; i < n; i, j = i+1, (j+1)&mask {
		dst[i] = r.buf[j]
		r.buf[j] = entry{}
	}
	r.head = (r.head + n) & mask
	r.n -= n
	if r.n == 0 {
		r.head = 0
	}
	return n
}

func (r *ring) grow() {
	size := 2 * len(r.buf)
	if size == 0 {
		size = 8
	}
	buf := make([]entry, size)
	for i := range r.n {
		buf[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf = buf
	r.head = 0
}
