package mailbox

import "sync/atomic"

// maxInbox caps the cells of a mailbox's inbox. A mailbox of a smaller
// capacity gets the power of two that holds its capacity, so that its inbox
// never fills; a larger one gets maxInbox cells and, when a sender
// finds them all taken, the sender moves them into the priority queue itself.
// (64 cells of 64 bytes: 4 KiB.)
const maxInbox = 64

// inbox is the lock-free way in to a mailbox: a bounded multi-producer ring
// of cells (after Dmitry Vyukov's bounded MPMC queue) that senders append to
// without taking the mailbox's lock. The mailbox moves what it holds into
// its priority queue under the lock, so one goroutine at a time consumes.
//
// Each cell has a sequence number that tells its state for a position pos
// (the cell at pos&mask): seq == pos means free for the sender that claims
// pos; seq == pos+1 means published, ready for the consumer; seq == pos+size
// means consumed, free for the sender one lap later.
//
// A sender claims a position by moving tail forward, then writes the cell
// and publishes it. Between the two it is in flight: the consumer stops at
// an unpublished cell, and everything behind it waits until it is published,
// as senders would wait for a sender holding a lock.
type inbox struct {
	cells []cell
	mask  uint64
	_     [40]byte

	tail atomic.Uint64 // the next position to claim; written by senders
	_    [56]byte

	// head is the next position to consume. It is written only under the
	// mailbox's lock, and read without it to tell whether anything waits.
	head atomic.Uint64
	_    [56]byte
}

// cell is one slot of the inbox. It is a cache line long, so that a sender
// writing one cell does not take the line from the agent reading the one
// before. The allocator starts the cells on a line, or 8 bytes past one (its
// header, for arrays above 512 bytes): the padding at the end keeps the
// fields on one line either way.
type cell struct {
	seq  atomic.Uint64
	prio int32
	e    entry
	_    [16]byte
}

// init sizes the inbox for a mailbox of capacity messages.
func (in *inbox) init(capacity int) {
	size := 2
	for size < min(capacity, maxInbox) {
		size *= 2
	}
	in.cells = make([]cell, size)
	for i := range in.cells {
		in.cells[i].seq.Store(uint64(i))
	}
	in.mask = uint64(size - 1)
}

// claim reserves the next position and returns its cell, or ok=false if
// every cell holds a message the consumer has not taken yet. The caller must
// publish the cell.
func (in *inbox) claim() (c *cell, pos uint64, ok bool) {
	pos = in.tail.Load()
	for {
		c = &in.cells[pos&in.mask]
		switch seq := c.seq.Load(); {
		case seq == pos:
			if in.tail.CompareAndSwap(pos, pos+1) {
				return c, pos, true
			}
			pos = in.tail.Load()
		case seq < pos: // the cell still holds the message of the lap before
			return nil, 0, false
		default: // another sender claimed pos first
			pos = in.tail.Load()
		}
	}
}

// write fills c, claimed at pos, with e of priority prio and publishes it:
// from then on the consumer may take it.
func (c *cell) write(pos uint64, prio int, e entry) {
	c.prio = int32(prio)
	c.e = e
	c.seq.Store(pos + 1)
}

// ready reports whether the next cell to consume is published. It does not
// take the lock, so the answer may be out of date by the time it returns.
func (in *inbox) ready() bool {
	h := in.head.Load()
	return in.cells[h&in.mask].seq.Load() == h+1
}
