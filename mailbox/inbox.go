package mailbox

import "sync/atomic"

// maxInbox caps the cells of a mailbox's inbox. A mailbox of a smaller
// capacity gets the power of two that holds its capacity, so that its inbox
// never fills; a larger one gets maxInbox cells and, when a sender
// finds them all taken, the sender moves them into the priority queue itself.
// (64 cells of 64 bytes: 4 KiB.)
const maxInbox = 64

// retired is the bit of inbox.tail that says the inbox was released: no
// sender may claim a cell of it any more (see Mailbox.release).
const retired = 1 << 63

// inbox is what only a busy mailbox needs: the lock-free way in, the
// priority queue and the agent's batch. A mailbox allocates one when a
// sender first finds it has none, and its agent releases it when it finds
// the mailbox empty (see Mailbox.release), so an idle agent holds none.
//
// The way in is a bounded multi-producer ring of cells (after Dmitry
// Vyukov's bounded MPMC queue) that senders append to without taking the
// mailbox's lock. The mailbox moves what it holds into its priority queue
// under the lock, so one goroutine at a time consumes.
//
// Positions count the mailbox's posts, across every inbox it has had: an
// inbox starts at the position its predecessor was released at. Each cell
// has a sequence number that tells its state for a position pos (the cell at
// pos&mask): seq == pos means free for the sender that claims pos; seq ==
// pos+1 means published, ready for the consumer; seq == pos+size means
// consumed, free for the sender one lap later.
//
// A sender claims a position by moving tail forward, then writes the cell
// and publishes it. Between the two it is in flight: the consumer stops at
// an unpublished cell, and everything behind it waits until it is published,
// as senders would wait for a sender holding a lock.
//
// Releasing an inbox sets the retired bit of tail with a compare-and-swap
// from head: it succeeds only if every claimed cell was consumed, and from
// then on a sender's claim sees the bit and fails, so no message can be left
// in a released inbox. A released inbox is therefore in the state of a new
// one that starts at its head, and the mailbox takes it back as it is if the
// garbage collector has not reclaimed it meanwhile.
type inbox struct {
	cells []cell
	mask  uint64
	_     [40]byte

	tail atomic.Uint64 // the next position to claim, and the retired bit; written by senders
	_    [56]byte

	// The consumer's side: written under the mailbox's lock, or (the
	// batch's cursor) by the agent alone.

	// head is the next position to consume. It is read without the lock
	// to tell whether anything waits.
	head atomic.Uint64

	// The agent's batch: entries taken from one priority level under one
	// lock, so that the agent does not contend with senders for the lock
	// on every message. Only the goroutine running the mailbox touches
	// it, and with the lock when it puts entries back.
	batchI    int32
	batchN    int32
	batchPrio int32

	ttlQueued int32 // messages in q that have a deadline; under the mailbox's lock

	batch [batchSize]entry

	// Under the mailbox's lock.
	q          queue
	nextExpiry int64 // no message in q expires before this (Unix ns)
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

// inboxCells returns the number of cells of the inbox of a mailbox of
// capacity messages.
func inboxCells(capacity int) int {
	size := 2
	for size < min(capacity, maxInbox) {
		size *= 2
	}
	return size
}

// newInbox returns an empty inbox of size cells (a power of two) whose
// first position is base, for a mailbox of capacity messages.
func newInbox(size int, base uint64, capacity int) *inbox {
	in := &inbox{cells: make([]cell, size), mask: uint64(size - 1)}
	for pos := base; pos < base+uint64(size); pos++ {
		in.cells[pos&in.mask].seq.Store(pos)
	}
	in.head.Store(base)
	in.tail.Store(base)
	in.q.setKeep(capacity)
	return in
}

// claimResult says how a claim went.
type claimResult int

const (
	claimed      claimResult = iota
	inboxFull                // every cell holds a message the consumer has not taken yet
	inboxRetired             // the inbox was released
)

// claim reserves the next position and returns its cell, or why it could
// not: every cell is taken, or the inbox was released. The caller must
// publish a claimed cell.
func (in *inbox) claim() (c *cell, pos uint64, res claimResult) {
	pos = in.tail.Load()
	for {
		if pos&retired != 0 {
			return nil, 0, inboxRetired
		}
		c = &in.cells[pos&in.mask]
		switch seq := c.seq.Load(); {
		case seq == pos:
			if in.tail.CompareAndSwap(pos, pos+1) {
				return c, pos, claimed
			}
			pos = in.tail.Load()
		case seq < pos: // the cell still holds the message of the lap before
			return nil, 0, inboxFull
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

// posted returns the position of the next claim: how many posts the
// mailbox has had.
func (in *inbox) posted() uint64 { return in.tail.Load() &^ retired }

// empty reports whether nothing is in the inbox, its queue or its batch,
// and no cell is claimed. The caller holds the mailbox's lock and is the
// agent (the batch is its own).
func (in *inbox) empty() bool {
	return in.batchI == in.batchN && in.q.n == 0 && in.tail.Load() == in.head.Load()
}
