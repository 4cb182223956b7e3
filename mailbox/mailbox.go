// Package mailbox provides the bounded priority mailbox that every agentbus
// agent runs on. It implements protoactor-go's actor.Mailbox, so an agent's PID
// behaves the same whether it is reached through the bus or through
// protoactor's own Send and RequestFuture.
//
// # Ordering
//
// User messages carry a priority from 0 to MaxPriority (see Item); higher is
// delivered first and equal priorities are delivered in the order they were
// posted. The priority is read through *actor.MessageEnvelope, so messages
// sent with protoactor's Request, RequestFuture or sender middleware keep it.
// System messages (start, stop, watch, supervision) have a queue of their own
// that is never bounded, never dropped and always served first.
//
// # Bounds
//
// A mailbox holds at most its capacity of user messages and can share a
// second, bus-wide Limit with other mailboxes. Room is reserved before a
// message is queued. Post waits for room, parked until a slot frees, bounded
// by its patience; TryPost and protoactor's PostUserMessage never wait. What
// cannot be queued, what expires in the queue and what is still queued when
// the mailbox closes is handed to the Drop function with ErrFull, ErrExpired
// or the close error: the mailbox never loses a message silently.
//
// # Concurrency
//
// Senders take no lock: a post reserves its slots with atomic additions and
// appends the message to a lock-free ring, the inbox, from which the agent
// moves messages into the priority queue once per batch. Messages from one
// sender keep their order; a message is visible to the agent once every
// message posted before it is, so a sender that is preempted while writing
// its message delays those posted after it, as a sender holding a lock
// would.
//
// # Memory
//
// A mailbox allocates its inbox, queue and batch (about 7 KB for a capacity
// of 64 or more: 64 cells of a cache line, and 2 KiB) when a message arrives, and releases them when its
// agent finds nothing left to deliver, so an idle mailbox holds 512 bytes.
// The released inbox is kept weakly: a message that arrives before the next
// garbage collection takes it back.
package mailbox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/internal/backoff"
)

var (
	// ErrFull means the mailbox, or the limit it shares with others, had no
	// room and the sender did not wait.
	ErrFull = errors.New("agentbus: mailbox full")
	// ErrBackpressureTimeout means a sender waited for room until its
	// patience ran out.
	ErrBackpressureTimeout = errors.New("agentbus: backpressure timeout")
	// ErrExpired means a message's TTL ran out before it could be delivered.
	ErrExpired = errors.New("agentbus: message expired")
	// ErrStopped means the mailbox's agent stopped.
	ErrStopped = errors.New("agentbus: agent stopped")
)

// Item is implemented by messages that carry a priority and an expiry. A
// message that does not implement it gets DefaultPriority and never expires.
type Item interface {
	// MailboxKey returns the priority, 0 to MaxPriority (values out of
	// range are clamped), and when the message expires, in Unix
	// nanoseconds: 0 means never, and a negative time has long passed.
	// It is called once a post.
	MailboxKey() (priority int, deadline int64)
}

// DropFunc receives every message the mailbox does not deliver, with the
// reason: ErrFull, ErrExpired, or the error the mailbox was closed with. It
// runs on the goroutine that discovered the drop (a sender or the agent) and
// must not block.
type DropFunc func(msg any, reason error)

// Config configures a Mailbox.
type Config struct {
	// Capacity is the most user messages the mailbox holds. Values below 1
	// mean 1.
	Capacity int
	// Shared, when set, is a limit this mailbox shares with others (the
	// bus-wide pending limit). A message takes a slot in both.
	Shared *Limit
	// Drop receives undelivered messages. Nil discards them, which only
	// tests should do.
	Drop DropFunc
	// Middlewares are protoactor mailbox middlewares, called as protoactor's
	// own mailboxes call them.
	Middlewares []actor.MailboxMiddleware
	// Latency, when set, receives how long user messages take from being
	// queued to the actor returning from them (see Latency for the
	// sampling), and makes LastActive report. Nil: nothing is timed and the
	// mailbox reads no clock.
	Latency *Latency
}

// Patience bounds how long Post waits for room.
type Patience struct {
	// Wait is the longest a sender waits in all. Zero or less: do not wait.
	Wait time.Duration
	// Backoff is how long a parked sender sleeps before it re-checks on its
	// own, in case its wake-up went to a competitor; it doubles after every
	// such re-check up to MaxBackoff. Zero means Wait.
	Backoff time.Duration
}

// MaxBackoff caps the re-check interval of a parked sender.
const MaxBackoff = time.Second

const (
	idle int32 = iota
	running
)

// batchSize is how many messages of one priority level the agent takes from
// the queue per lock. A message of higher priority posted meanwhile makes the
// agent put the rest back before it handles the next one, so the batch never
// delays a more urgent message by more than the message being handled, as
// without batching.
const batchSize = 32

// Mailbox is a bounded priority mailbox. It is safe for concurrent use; the
// protoactor methods are called by the actor system as for any mailbox.
//
// A sender reserves a slot of the mailbox (and of the shared limit) with an
// atomic addition and appends the message to the inbox, a lock-free ring.
// The agent takes a batch under the lock: straight from the inbox while the
// priority queue is empty (an agent that keeps up), otherwise after moving
// the inbox into the queue. So a sender takes no lock: only a sender that
// finds the mailbox full (to reap expired messages), the inbox's cells all
// taken, or no inbox does.
//
// The inbox, with the queue and the batch, is what only a busy mailbox
// needs: the first post allocates it, and the agent releases it whenever it
// finds the mailbox empty (see release). An idle mailbox is the 512 bytes of
// this struct.
type Mailbox struct {
	// Read by senders and the agent for every message, written seldom:
	// kept off the lines below, which are written for every message.
	in          atomic.Pointer[inbox] // nil while idle: see release
	shared      *Limit
	latency     *Latency
	born        time.Time // the origin of stamps and LastActive, with a monotonic reading
	middlewares []actor.MailboxMiddleware
	dispatcher  actor.Dispatcher
	process     func()      // m.processMessages, bound once: a method value allocates
	registered  atomic.Bool // RegisterHandlers has set invoker and dispatcher
	suspended   atomic.Bool
	closed      atomic.Bool // set under mu, after closeErr, which is read after it without mu
	// busy is the agent's word that a clock read for every message would
	// cost too much (see stamp): when it last took a batch, it had been
	// delivering without a break for exactDepth messages or more, or found
	// that many queued. It is stored only when it changes, so under a
	// steady load every sender's load hits its cache.
	busy atomic.Bool
	// urgent is the highest priority posted since the agent took its
	// batch; a sender raises it only above the batch's priority, and the
	// agent stores it only when it changes, so with equal priorities
	// nobody writes it and every sender's load hits its cache. recheck
	// makes the agent look again.
	urgent   atomic.Int32
	status   atomic.Int32
	sysCount atomic.Int32

	// room is the capacity: a slot per queued user message, counting those
	// in the inbox, in the queue and in the agent's batch. Senders wanting
	// room park on room.wq. (Padded inside: its first field, read-mostly,
	// ends the lines above; senders and the agent write a line each.)
	room Limit

	// The agent's side, written by the goroutine that runs the mailbox (mu
	// once per batch; senders take it only on a slow path).
	//
	// locksordering: Mailbox.mu and waitQueue.mu are never held together;
	// sysMu is never held with another lock. mu guards the inbox's queue,
	// the inbox's installation and release, idleTail and done.
	mu         sync.Mutex
	qn         atomic.Int32  // the inbox's q.n, written under mu and read without it
	delivered  atomic.Uint64 // user messages handed to the actor
	lastActive atomic.Int64  // see LastActive; nanoseconds since born
	curStamp   int64         // the stamp of the message being delivered
	streak     int32         // user messages delivered since the queue was last found empty
	untimed    bool          // a message without a stamp was delivered since the last clock read
	invoker    actor.MessageInvoker

	// Seldom touched: by the agent or a sender on a slow path.
	idleTail atomic.Uint64       // Posted while there is no inbox; written under mu
	spare    weak.Pointer[inbox] // the last inbox, until the collector reclaims it; under mu
	done     chan struct{}       // closed by Close, to wake senders parked on the shared limit; made on first use, under mu
	closeErr error               // written before closed is set, never after
	drop     DropFunc            // called for every undelivered message
	sysMu    sync.Mutex
	sys      ring
}

// recheck is the value of Mailbox.urgent that makes the agent put its batch
// back and look at the queue again: a message may wait in the inbox whose
// sender could not tell whether it outranks the batch.
const recheck = MaxPriority + 1

var _ actor.Mailbox = (*Mailbox)(nil)

// New returns an empty, open mailbox.
func New(cfg Config) *Mailbox {
	m := &Mailbox{
		shared:      cfg.Shared,
		drop:        cfg.Drop,
		middlewares: cfg.Middlewares,
		latency:     cfg.Latency,
		born:        time.Now(),
	}
	m.room.init(cfg.Capacity)
	m.process = m.processMessages
	if m.drop == nil {
		m.drop = func(any, error) {}
	}
	return m
}

// Producer returns a protoactor MailboxProducer that hands out m. protoactor
// calls the producer once per spawn, so each mailbox serves one actor.
func (m *Mailbox) Producer() actor.MailboxProducer {
	return func() actor.Mailbox { return m }
}

// Cap returns the capacity.
func (m *Mailbox) Cap() int { return m.room.Max() }

// Len returns the number of queued user messages, counting those a sender
// is queueing at the moment. It does not block.
func (m *Mailbox) Len() int { return m.room.Used() }

// Posted returns how many user messages were ever queued, counting those a
// sender is queueing at the moment. It does not block.
func (m *Mailbox) Posted() uint64 { return m.postedFrom(m.in.Load()) }

// postedFrom is Posted for in, the inbox as the caller loaded it.
func (m *Mailbox) postedFrom(in *inbox) uint64 {
	if in != nil {
		return in.posted()
	}
	return m.idleTail.Load() // stored before the inbox is dropped: never behind a reading of its tail
}

// Delivered returns how many user messages were handed to the actor; the
// others that left the queue were dropped (expired, or at Close).
func (m *Mailbox) Delivered() uint64 { return m.delivered.Load() }

// UserMessageCount implements actor.Mailbox; it equals Len.
func (m *Mailbox) UserMessageCount() int { return m.Len() }

// Post queues it, waiting for room as p allows. It returns nil once msg is
// queued; ErrFull if there was no room and p allows no wait;
// ErrBackpressureTimeout (wrapping ErrFull) if p's wait ran out; ctx's error
// if ctx ended first; or the close error if the mailbox is closed. On any error
// msg was not queued and the caller still owns it.
func (m *Mailbox) Post(ctx context.Context, it Item, p Patience) error {
	prio, deadline := itemKey(it)
	full, err := m.tryPost(it, prio, deadline)
	if full == nil {
		return err
	}
	if p.Wait <= 0 {
		return m.fullError(full)
	}
	until := time.Now().Add(p.Wait)
	retry := backoff.Policy{Initial: p.Backoff, Max: MaxBackoff}
	if retry.Initial <= 0 {
		retry.Initial = p.Wait
	}
	delay := retry.Initial
	w := newWaiter()
	done := m.doneChan()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	woken := false // the last wait ended with a wake-up from full
	for {
		full.park(w)
		next, err := m.tryPost(it, prio, deadline)
		if next == nil {
			full.leave(w)
			return err
		}
		if next != full { // the other bound filled up meanwhile
			full.leave(w)
			if woken && full == &m.room.wq {
				// The mailbox slot this sender was woken for may still be
				// free: pass the wake-up on instead of taking it to the
				// shared limit's queue. (A shared slot needs no such care:
				// tryPost gave it back with Release, which wakes the next.)
				full.wake(1)
			}
			woken = false
			full = next
			continue
		}
		left := time.Until(until)
		if left <= 0 {
			full.leave(w)
			return fmt.Errorf("%w after %v: %w", ErrBackpressureTimeout, p.Wait, m.fullError(full))
		}
		d := min(delay, left)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		woken = false
		select {
		case <-w.ch: // a slot was released for us: retry at once
			timer.Stop() // Go 1.23+ timers: no stale value to drain
			woken = true
		case <-timer.C:
			full.leave(w)
			delay = retry.Next(delay)
		case <-done: // closed; the retry returns the close error
			full.leave(w)
		case <-ctx.Done():
			full.leave(w)
			return fmt.Errorf("%w: %w", ErrBackpressureTimeout, context.Cause(ctx))
		}
	}
}

// TryPost queues it if there is room and never waits. It returns ErrFull or
// the close error when it was not queued; the caller still owns it then.
func (m *Mailbox) TryPost(it Item) error {
	prio, deadline := itemKey(it)
	full, err := m.tryPost(it, prio, deadline)
	if full != nil {
		return m.fullError(full)
	}
	return err
}

// doneChan returns a channel that is closed when the mailbox closes, made on
// first use: only a sender that waits needs it.
func (m *Mailbox) doneChan() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		m.done = make(chan struct{})
		if m.closed.Load() {
			close(m.done)
		}
	}
	return m.done
}

func (m *Mailbox) fullError(full *waitQueue) error {
	if full == &m.room.wq {
		return fmt.Errorf("%w (capacity %d)", ErrFull, m.Cap())
	}
	return fmt.Errorf("%w (bus pending limit %d)", ErrFull, m.shared.Max())
}

// tryPost queues msg at priority prio with deadline (Unix ns, 0: none) if
// the mailbox and the shared limit have room. It returns the wait queue of
// the bound that was full, or nil and the close error (nil when queued).
func (m *Mailbox) tryPost(msg any, prio int, deadline int64) (*waitQueue, error) {
	depth, expired, full, err := m.reserve()
	if full != nil || err != nil {
		m.dropExpired(expired)
		return full, err
	}
	in := m.in.Load()
	stamp := m.stamp(depth, m.postedFrom(in)+1)
	in, c, pos := m.claim(in)
	c.write(pos, prio, entry{msg, deadline, stamp})
	m.dropExpired(expired)
	m.announce(in, pos, prio, msg)
	return nil, nil
}

// dropExpired drops messages reap removed.
func (m *Mailbox) dropExpired(expired []entry) {
	for _, e := range expired {
		m.drop(e.v, ErrExpired)
	}
}

// reserve takes a slot of the shared limit and one of the mailbox, reaping
// expired messages if the mailbox is full, and returns how many messages
// were queued before it, and the expired messages it removed, which the
// caller must drop. It returns the wait queue of the bound that was full, or
// the close error, having taken nothing.
//
// Holding a slot of the mailbox is what orders a post with Close: Close
// waits until every slot taken has its message in the inbox (room.in ==
// tail), and a post that takes its slot checks closed afterwards, so either
// Close counts it and waits, or it sees closed and gives the slot back.
func (m *Mailbox) reserve() (depth int64, expired []entry, full *waitQueue, err error) {
	if m.closed.Load() {
		return 0, nil, nil, m.closeErr
	}
	return m.reserveSlots()
}

// reserveSlots is reserve after its first look at closed: Close may run
// from there on.
func (m *Mailbox) reserveSlots() (depth int64, expired []entry, full *waitQueue, err error) {
	if m.shared != nil && !m.shared.TryAcquire() {
		if m.closed.Load() { // a closed mailbox refuses with its reason, not ErrFull
			return 0, nil, nil, m.closeErr
		}
		return 0, nil, &m.shared.wq, nil
	}
	depth, ok := m.room.acquire()
	if !ok {
		if expired = m.reap(); expired != nil {
			depth, ok = m.room.acquire() // a sender it woke may take the room first
		}
		if !ok {
			m.releaseShared(1)
			if m.closed.Load() {
				return 0, expired, nil, m.closeErr
			}
			return 0, expired, &m.room.wq, nil
		}
	}
	if m.closed.Load() {
		m.room.giveBack()
		m.releaseShared(1)
		return 0, expired, nil, m.closeErr
	}
	return depth, expired, nil, nil
}

// announce tells the agent about the message just published at pos of in,
// of priority prio, and wakes it.
func (m *Mailbox) announce(in *inbox, pos uint64, prio int, msg any) {
	for u := m.urgent.Load(); int32(prio) > u; u = m.urgent.Load() {
		if m.urgent.CompareAndSwap(u, int32(prio)) {
			break
		}
	}
	if in.posted() > pos+1 && in.head.Load() == pos {
		// The agent's last look at the inbox may have stopped at this
		// cell, claimed but not yet published, while senders queued
		// behind it. Those may outrank the agent's batch and yet, having
		// seen the urgency of an earlier batch, have raised nothing: make
		// the agent look again.
		m.urgent.Store(recheck)
	}
	for _, mw := range m.middlewares {
		mw.MessagePosted(msg)
	}
	m.schedule()
}

// claim reserves a cell of in, the mailbox's inbox as the caller last
// loaded it, and returns the inbox it claimed in: in, or the one it
// installed if in was nil or has been released since. If every cell is
// taken, it moves the inbox into the queue itself (under the lock) and tries
// again; if the oldest cell is still being written by another sender, it
// yields to that sender first.
func (m *Mailbox) claim(in *inbox) (*inbox, *cell, uint64) {
	for {
		if in == nil {
			in = m.install()
		}
		c, pos, res := in.claim()
		switch res {
		case claimed:
			return in, c, pos
		case inboxRetired: // the agent released it since it was loaded
			in = m.install()
			continue
		}
		m.mu.Lock()
		n := m.drainLocked()
		m.mu.Unlock()
		if n == 0 {
			runtime.Gosched() // the sender publishing the oldest cell needs to run
			continue
		}
		m.schedule() // see reap
	}
}

// install returns the mailbox's inbox, giving it one if it has none: the
// inbox it last released, if the collector has not reclaimed it, or a new
// one. It takes the lock.
func (m *Mailbox) install() *inbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in := m.in.Load(); in != nil {
		return in // a sender installed one first; the agent releases only under mu
	}
	base := m.idleTail.Load()
	if in := m.spare.Value(); in != nil {
		// Released at base (its head) and untouched since, as a new
		// inbox: clearing the bit reopens it.
		in.tail.Store(base)
		m.in.Store(in)
		return in
	}
	in := newInbox(inboxCells(m.Cap()), base, m.Cap())
	m.spare = weak.Make(in)
	m.in.Store(in)
	return in
}

// release drops the inbox if the agent, having found nothing to deliver,
// finds it empty: no message in its cells, its queue or the batch, and no
// cell claimed. It keeps a weak reference in spare, so that the next post
// takes the same inbox back unless a garbage collection came first. Only
// the goroutine running the mailbox calls it, and it must not hold mu.
//
// A sender that claims a cell first makes the compare-and-swap on tail fail,
// and the inbox stays; one that tries after it finds tail retired and
// installs an inbox under mu, which release holds from the swap until the
// inbox is dropped. A sender that holds a slot of the mailbox but has not
// claimed a cell yet does not keep the inbox: it installs one.
func (m *Mailbox) release() {
	in := m.in.Load()
	if in == nil {
		return
	}
	m.mu.Lock()
	if in.empty() {
		h := in.head.Load()
		if in.tail.CompareAndSwap(h, h|retired) {
			m.idleTail.Store(h) // before the inbox goes: see Posted
			m.in.Store(nil)
		}
	}
	m.mu.Unlock()
}

// drainLocked moves the published cells of the inbox, in order, into the
// queue and returns how many it moved. It raises urgent to the highest
// priority it moved, so that an agent holding a batch of a lower one puts
// it back. The caller holds mu.
func (m *Mailbox) drainLocked() int {
	in := m.in.Load()
	if in == nil {
		return 0
	}
	h := in.head.Load()
	start, size := h, uint64(len(in.cells))
	top := int32(-1)
	for {
		c := &in.cells[h&in.mask]
		if c.seq.Load() != h+1 {
			break
		}
		e := c.e
		in.q.push(int(c.prio), e)
		top = max(top, c.prio)
		if e.deadline != 0 {
			if in.ttlQueued == 0 || e.deadline < in.nextExpiry {
				in.nextExpiry = e.deadline
			}
			in.ttlQueued++
		}
		c.e = entry{}
		c.seq.Store(h + size)
		h++
	}
	if h == start {
		return 0
	}
	in.head.Store(h)
	m.qn.Store(int32(in.q.n))
	for u := m.urgent.Load(); top > u; u = m.urgent.Load() {
		if m.urgent.CompareAndSwap(u, top) {
			break
		}
	}
	return int(h - start)
}

func (m *Mailbox) releaseShared(n int) {
	if m.shared != nil {
		m.shared.Release(n)
	}
}

// reap is the slow path of a post that found the mailbox full: it removes
// the messages that expired meanwhile, releases their slots and returns them;
// the caller must drop them.
func (m *Mailbox) reap() []entry {
	m.mu.Lock()
	if m.closed.Load() {
		m.mu.Unlock()
		return nil
	}
	drained := m.drainLocked()
	var expired []entry
	if in := m.in.Load(); in != nil {
		expired = in.reapLocked()
		m.qn.Store(int32(in.q.n))
	}
	m.mu.Unlock()
	if drained > 0 {
		// Their senders woke the agent when they published them, but it
		// may have looked at the inbox while this moved them and gone
		// idle: wake it again. (It stores idle, then reads qn; this
		// stored qn, and now reads its status.)
		m.schedule()
	}
	if len(expired) > 0 {
		m.room.Release(len(expired))
		m.releaseShared(len(expired))
	}
	return expired
}

// reapLocked removes expired messages from the queue and returns them; the
// caller holds the mailbox's lock and must drop them after unlocking. It
// scans only when some queued message may have expired, so a mailbox full of
// live messages costs one comparison per refused post.
func (in *inbox) reapLocked() []entry {
	if in.ttlQueued == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	if now < in.nextExpiry {
		return nil
	}
	var next int64
	live := 0
	expired := in.q.removeIf(func(e entry) bool {
		if e.deadline == 0 {
			return false
		}
		if now >= e.deadline {
			return true
		}
		if live == 0 || e.deadline < next {
			next = e.deadline
		}
		live++
		return false
	})
	in.ttlQueued, in.nextExpiry = int32(live), next
	return expired
}

// discard releases the slots of entries, which have left the queue, and
// drops their messages with reason. It must be called without m.mu held.
func (m *Mailbox) discard(entries []entry, reason error) {
	if len(entries) == 0 {
		return
	}
	m.room.Release(len(entries))
	m.releaseShared(len(entries))
	for _, e := range entries {
		m.drop(e.v, reason)
	}
}

// Close closes the mailbox with reason (ErrStopped if nil): every queued user
// message is dropped with reason, later posts fail with it, and parked senders
// are woken to see it. System messages are still delivered. Close is
// idempotent; only the first reason counts. It waits only for the posts that
// are writing their message into the mailbox at that moment (a few
// instructions; never a wait for room), so that none is queued after it.
func (m *Mailbox) Close(reason error) {
	if reason == nil {
		reason = ErrStopped
	}
	m.mu.Lock()
	if m.closed.Load() {
		m.mu.Unlock()
		return
	}
	m.closeErr = reason
	m.closed.Store(true)
	// Wait for the posts in flight: every slot taken must have its message
	// published (see reserve). They take no lock and wait for nothing but,
	// when the inbox is full or there is none, this lock.
	for m.drainLocked(); !m.settledLocked(); m.drainLocked() {
		m.mu.Unlock()
		runtime.Gosched()
		m.mu.Lock()
	}
	var queued []entry
	if in := m.in.Load(); in != nil {
		queued = in.q.drain()
		in.ttlQueued = 0
	}
	m.qn.Store(0)
	if m.done != nil {
		close(m.done)
	}
	m.mu.Unlock()
	m.discard(queued, reason)
	m.room.wq.wakeAll()
	// Run once more, even if suspended, so that the agent drops the batch it
	// had taken from the queue (schedule waits for RegisterHandlers).
	m.schedule()
}

// settledLocked reports whether every slot taken has its message moved out
// of the inbox: no post is in flight and the inbox holds nothing. The caller
// holds mu, so no inbox is installed meanwhile.
func (m *Mailbox) settledLocked() bool {
	in := m.in.Load()
	if in == nil {
		return m.room.in.Load() == int64(m.idleTail.Load())
	}
	tail := in.posted()
	return m.room.in.Load() == int64(tail) && in.head.Load() == tail
}

// CloseFromActor is Close for the actor's own goroutine (inside its Receive,
// such as on *actor.Stopped): it also drops, at once, the messages the actor
// had taken from the queue but not yet received, so that when it returns
// everything that was queued has been dropped. Calling it from any other
// goroutine is a data race.
func (m *Mailbox) CloseFromActor(reason error) {
	m.Close(reason)
	m.dropBatch()
}

// Closed reports whether Close was called.
func (m *Mailbox) Closed() bool { return m.closed.Load() }

// CloseReason returns the reason the mailbox was closed with, or nil if it
// is open.
func (m *Mailbox) CloseReason() error {
	if !m.closed.Load() {
		return nil
	}
	return m.closeErr // written before closed is set, never after
}

// PostUserMessage implements actor.Mailbox for protoactor senders. It never
// waits: a message that finds no room is dropped with ErrFull (after expired
// messages are reaped), and one that finds the mailbox closed is dropped with
// the close error.
func (m *Mailbox) PostUserMessage(msg any) {
	prio, deadline := classify(msg)
	full, err := m.tryPost(msg, prio, deadline)
	switch {
	case full != nil:
		m.drop(msg, m.fullError(full))
	case err != nil:
		m.drop(msg, err)
	}
}

// PostSystemMessage implements actor.Mailbox. System messages are never
// bounded or dropped.
func (m *Mailbox) PostSystemMessage(msg any) {
	for _, mw := range m.middlewares {
		mw.MessagePosted(msg)
	}
	m.sysMu.Lock()
	m.sys.push(entry{v: msg})
	m.sysMu.Unlock()
	m.sysCount.Add(1)
	m.schedule()
}

// RegisterHandlers implements actor.Mailbox. protoactor puts an actor's PID
// in its registry before it registers the mailbox's handlers, so a message
// can arrive first (a sender that looks the name up, a supervisor restarting
// the name's previous holder): it is queued, and runs once the handlers are
// registered.
func (m *Mailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker = invoker
	m.dispatcher = dispatcher
	m.registered.Store(true)
	if m.sysCount.Load() > 0 || !m.room.idle() {
		m.schedule()
	}
}

// Start implements actor.Mailbox.
func (m *Mailbox) Start() {
	for _, mw := range m.middlewares {
		mw.MailboxStarted()
	}
}

func (m *Mailbox) schedule() {
	// Loading first avoids a contended CAS while the mailbox runs. This is
	// safe: the poster increments its counter before it loads the status,
	// and processMessages stores idle before it loads the counters, so one
	// of the two always sees the other (sequentially consistent atomics).
	if !m.registered.Load() {
		return // RegisterHandlers schedules what was queued before it
	}
	if m.status.Load() == idle && m.status.CompareAndSwap(idle, running) {
		m.dispatcher.Schedule(m.process)
	}
}

func (m *Mailbox) processMessages() {
	for {
		m.run()
		m.release() // while still running: the batch is this goroutine's
		// Read before idle: another runner may start after.
		in := m.in.Load()
		leftover := in != nil && in.batchI < in.batchN
		m.status.Store(idle)
		// A message counted in room but neither in the queue nor ready in
		// the inbox is being written by its sender, which schedules the
		// mailbox once it is published: waiting for it here would spin.
		// (The inbox is loaded again: a sender may have installed one.)
		user := leftover || m.qn.Load() > 0 || m.ready()
		if m.sysCount.Load() > 0 || (user && !m.suspended.Load()) || (m.closed.Load() && leftover) {
			if m.status.CompareAndSwap(idle, running) {
				continue
			}
		}
		if !user && !m.suspended.Load() {
			for _, mw := range m.middlewares {
				mw.MailboxEmpty()
			}
		}
		return
	}
}

// run delivers messages until both queues are empty or the mailbox is
// suspended, yielding every dispatcher-throughput messages. A panic in the
// actor is recovered and escalated with the message being handled, as
// protoactor's own mailbox does, so supervision decides what happens next.
func (m *Mailbox) run() {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, msg)
		}
	}()
	i, t := 0, m.dispatcher.Throughput()
	for {
		if i > t {
			i = 0
			runtime.Gosched()
		}
		i++
		if m.sysCount.Load() > 0 {
			m.sysMu.Lock()
			msg = m.sys.pop().v
			if m.sys.n == 0 {
				m.sys.buf = nil // system messages are few: an idle agent keeps no buffer for them
			}
			m.sysMu.Unlock()
			m.sysCount.Add(-1)
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended.Store(true)
			case *actor.ResumeMailbox:
				m.suspended.Store(false)
			case *actor.Restart:
				// protoactor restarts an actor that has already stopped
				// (its handleRestart does not look at the state), bringing
				// it back without a name or a mailbox to serve, to stop,
				// and report stopping, a second time. A supervisor's
				// restart can race with a stop like that; the mailbox
				// closes as its actor stops, so a closed one drops it.
				if !m.closed.Load() {
					m.invoker.InvokeSystemMessage(msg)
				}
			default:
				m.invoker.InvokeSystemMessage(msg)
			}
			for _, mw := range m.middlewares {
				mw.MessageReceived(msg)
			}
			continue
		}
		if m.closed.Load() {
			m.dropBatch() // even when suspended: a stopped agent resumes no more
		}
		if m.suspended.Load() {
			return
		}
		var ok bool
		if msg, ok = m.popUser(); !ok {
			if m.latency != nil {
				m.settle()
			}
			return
		}
		if msg == nil { // expired and dropped; msg cleared so a panic
			continue // below cannot blame it
		}
		m.delivered.Add(1)
		m.invoker.InvokeUserMessage(msg)
		if m.latency != nil {
			m.timed()
		}
		for _, mw := range m.middlewares {
			mw.MessageReceived(msg)
		}
	}
}

// popUser takes the next user message. It returns ok=false when there is
// none, and a nil message when the one it took had expired (and was dropped).
// Only the goroutine running the mailbox calls it.
func (m *Mailbox) popUser() (any, bool) {
	in := m.in.Load() // only this goroutine drops it
	for {
		if in == nil || in.batchI == in.batchN {
			var ok bool
			in, ok = m.refill()
			if !ok {
				m.streak = 0
			}
			if m.latency != nil {
				m.sayBusy(in, ok)
			}
			if !ok {
				return nil, false
			}
		} else if m.urgent.Load() > in.batchPrio {
			// Something more urgent arrived: it goes first. (A fresh batch
			// is taken from the top level, so its first entry goes in any
			// case, and a recheck cannot repeat forever.)
			m.unbatch(in)
			continue
		}
		e := in.batch[in.batchI]
		in.batch[in.batchI] = entry{}
		in.batchI++
		m.room.Release(1)
		m.releaseShared(1)
		if m.closed.Load() {
			// Closed while this was in the batch: drop it as Close
			// dropped the rest of the queue.
			m.drop(e.v, m.closeErr)
			return nil, true
		}
		if e.deadline != 0 && time.Now().UnixNano() >= e.deadline {
			m.drop(e.v, ErrExpired)
			return nil, true
		}
		m.curStamp = e.stamp
		m.streak++
		return e.v, true
	}
}

// dropBatch drops what is left of the batch with the close error. Only the
// goroutine running the mailbox calls it.
func (m *Mailbox) dropBatch() {
	in := m.in.Load()
	if in == nil || in.batchI == in.batchN {
		return
	}
	for in.batchI < in.batchN {
		e := in.batch[in.batchI]
		in.batch[in.batchI] = entry{}
		in.batchI++
		m.room.Release(1)
		m.releaseShared(1)
		m.drop(e.v, m.closeErr)
	}
	m.room.wq.wakeAll()
}

// ready reports whether the next cell of the inbox, if there is one, is
// published. It does not take the lock.
func (m *Mailbox) ready() bool {
	in := m.in.Load()
	return in != nil && in.ready()
}

// refill takes the next batch into the inbox, which it returns: up to
// batchSize messages of the highest priority available, in order. When the
// queue is empty, as it is for an agent that keeps up, it takes them
// straight from the inbox's cells; otherwise it moves the cells into the
// queue and takes them from its top level. It returns false, without taking
// the lock, when nothing is there.
func (m *Mailbox) refill() (*inbox, bool) {
	in := m.in.Load()
	if in == nil || m.qn.Load() == 0 && !in.ready() {
		return in, false // a message being published now is announced by its sender
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, p := 0, -1
	if in.q.n == 0 {
		n, p = in.takeCells()
	}
	m.drainLocked()
	// Lower urgent to the batch's priority, then look at the inbox once
	// more: a sender that published before the store is seen here, one
	// that publishes after it sees the store and raises urgent if it
	// outranks the batch. Each round moves what arrived meanwhile; after a
	// few, the agent leaves the rest to recheck.
	for i := 0; ; i++ {
		if top := in.q.top(); top > p {
			if n > 0 { // taken from the cells, and outranked by what followed them
				in.batchI, in.batchN, in.batchPrio = 0, int32(n), int32(p)
				m.unbatchLocked(in)
				n = 0
			}
			p = top
		}
		if p < 0 {
			return in, false
		}
		if m.urgent.Load() != int32(p) {
			m.urgent.Store(int32(p))
		}
		if !in.ready() {
			break
		}
		if i == 3 {
			m.urgent.Store(recheck)
			break
		}
		m.drainLocked()
	}
	if n == 0 {
		n = in.q.popN(p, in.batch[:])
		m.qn.Store(int32(in.q.n))
		if in.ttlQueued > 0 {
			for _, e := range in.batch[:n] {
				if e.deadline != 0 {
					in.ttlQueued--
				}
			}
		}
	}
	in.batchI, in.batchN, in.batchPrio = 0, int32(n), int32(p)
	return in, true
}

// sayBusy updates busy once the agent has tried to take a batch and found
// one (ok) or nothing. Only the goroutine running the mailbox calls it.
func (m *Mailbox) sayBusy(in *inbox, ok bool) {
	// What was queued is the batch just taken and what refill left in the
	// queue, having moved the inbox there: counted without reading a line
	// that senders write, which for an agent taking one message at a time
	// would cost its senders and itself a cache miss a message.
	busy := ok && (m.streak >= exactDepth || in.batchN+m.qn.Load() >= exactDepth)
	if m.busy.Load() != busy {
		m.busy.Store(busy)
	}
}

// takeCells moves the published cells at the head of the inbox that share
// the first one's priority, up to batchSize, straight into the batch, and
// returns how many it moved and their priority (-1 if none). The caller
// holds the mailbox's lock, and the queue is empty: nothing queued can come
// before them.
func (in *inbox) takeCells() (n, prio int) {
	h := in.head.Load()
	size := uint64(len(in.cells))
	p := int32(-1)
	for n < batchSize {
		c := &in.cells[h&in.mask]
		if c.seq.Load() != h+1 || (n > 0 && c.prio != p) {
			break
		}
		p = c.prio
		in.batch[n] = c.e
		c.e = entry{}
		c.seq.Store(h + size)
		h++
		n++
	}
	if n > 0 {
		in.head.Store(h)
	}
	return n, int(p)
}

// unbatch returns the untaken part of in's batch to the front of its level.
func (m *Mailbox) unbatch(in *inbox) {
	m.mu.Lock()
	m.unbatchLocked(in)
	m.urgent.Store(-1)
	m.mu.Unlock()
}

// unbatchLocked is unbatch for a caller that holds mu; it leaves urgent be.
func (m *Mailbox) unbatchLocked(in *inbox) {
	for i := in.batchN - 1; i >= in.batchI; i-- {
		e := in.batch[i]
		in.batch[i] = entry{}
		in.q.pushFront(int(in.batchPrio), e)
		if e.deadline != 0 {
			if in.ttlQueued == 0 || e.deadline < in.nextExpiry {
				in.nextExpiry = e.deadline
			}
			in.ttlQueued++
		}
	}
	in.batchI, in.batchN = 0, 0
	m.qn.Store(int32(in.q.n))
}

// classify returns the priority and deadline of a message posted through
// protoactor, looking through its envelope.
func classify(msg any) (int, int64) {
	if env, ok := msg.(*actor.MessageEnvelope); ok {
		msg = env.Message
	}
	if it, ok := msg.(Item); ok {
		return itemKey(it)
	}
	return DefaultPriority, 0
}

// itemKey returns it's priority, clamped to [0, MaxPriority], and its
// deadline in Unix nanoseconds (0: none).
func itemKey(it Item) (int, int64) {
	p, deadline := it.MailboxKey()
	if deadline < 0 {
		deadline = 1 // before 1970: long expired, not never
	}
	return min(max(p, 0), MaxPriority), deadline
}
