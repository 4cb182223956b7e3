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
package mailbox

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
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
	// MailboxPriority returns the priority, 0 to MaxPriority; values out
	// of range are clamped.
	MailboxPriority() int
	// Deadline returns when the message expires; the zero time means never.
	Deadline() time.Time
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

// Mailbox is a bounded priority mailbox. It is safe for concurrent use; the
// protoactor methods are called by the actor system as for any mailbox.
type Mailbox struct {
	limit       Limit
	shared      *Limit
	drop        DropFunc
	middlewares []actor.MailboxMiddleware

	invoker    actor.MessageInvoker
	dispatcher actor.Dispatcher

	userCount atomic.Int32
	sysCount  atomic.Int32
	status    atomic.Int32
	suspended atomic.Bool

	// locksordering: Mailbox.mu -> Limit.mu (never the reverse). sysMu is
	// never held with another lock.
	mu         sync.Mutex
	q          queue
	closed     bool
	closeErr   error
	ttlQueued  int       // queued messages that have a deadline
	nextExpiry time.Time // no queued message expires before this

	sysMu sync.Mutex
	sys   ring
}

var _ actor.Mailbox = (*Mailbox)(nil)

// New returns an empty, open mailbox.
func New(cfg Config) *Mailbox {
	m := &Mailbox{
		shared:      cfg.Shared,
		drop:        cfg.Drop,
		middlewares: cfg.Middlewares,
	}
	m.limit.init(cfg.Capacity)
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
func (m *Mailbox) Cap() int { return m.limit.Max() }

// Len returns the number of queued user messages.
func (m *Mailbox) Len() int { return int(m.userCount.Load()) }

// UserMessageCount implements actor.Mailbox; it equals Len.
func (m *Mailbox) UserMessageCount() int { return m.Len() }

// Post queues msg, waiting for room as p allows. It returns nil once msg is
// queued; ErrFull if there was no room and p allows no wait;
// ErrBackpressureTimeout (wrapping ErrFull) if p's wait ran out; ctx's error
// if ctx ended first; or the close error if the mailbox is closed. On any error
// msg was not queued and the caller still owns it.
func (m *Mailbox) Post(ctx context.Context, msg any, p Patience) error {
	full, err := m.tryPost(msg)
	if full == nil {
		return err
	}
	if p.Wait <= 0 {
		return m.fullError(full)
	}
	deadline := time.Now().Add(p.Wait)
	backoff := p.Backoff
	if backoff <= 0 {
		backoff = p.Wait
	}
	w := newWaiter()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		full.park(w)
		next, err := m.tryPost(msg)
		if next == nil {
			full.leave(w)
			return err
		}
		if next != full { // the other limit filled up meanwhile
			full.leave(w)
			full = next
			continue
		}
		left := time.Until(deadline)
		if left <= 0 {
			full.leave(w)
			return fmt.Errorf("%w after %v: %w", ErrBackpressureTimeout, p.Wait, m.fullError(full))
		}
		d := min(backoff, left)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-w.ch: // a slot was released for us: retry at once
			timer.Stop() // Go 1.23+ timers: no stale value to drain
		case <-timer.C:
			full.leave(w)
			backoff = min(2*backoff, MaxBackoff)
		case <-ctx.Done():
			full.leave(w)
			return fmt.Errorf("%w: %w", ErrBackpressureTimeout, context.Cause(ctx))
		}
	}
}

// TryPost queues msg if there is room and never waits. It returns ErrFull or
// the close error when msg was not queued; the caller still owns it then.
func (m *Mailbox) TryPost(msg any) error {
	full, err := m.tryPost(msg)
	if full != nil {
		return m.fullError(full)
	}
	return err
}

func (m *Mailbox) fullError(full *Limit) error {
	if full == &m.limit {
		return fmt.Errorf("%w (capacity %d)", ErrFull, m.limit.Max())
	}
	return fmt.Errorf("%w (bus pending limit %d)", ErrFull, full.Max())
}

// tryPost queues msg if both limits have room. It returns the limit that was
// full, or nil and the close error (nil when queued).
func (m *Mailbox) tryPost(msg any) (*Limit, error) {
	if !m.limit.TryAcquire() {
		if !m.reapExpired() || !m.limit.TryAcquire() {
			return &m.limit, nil
		}
	}
	if m.shared != nil && !m.shared.TryAcquire() {
		m.limit.Release(1)
		return m.shared, nil
	}
	prio, deadline := classify(msg)
	m.mu.Lock()
	if m.closed {
		err := m.closeErr
		m.mu.Unlock()
		m.release(1)
		return nil, err
	}
	m.q.push(prio, msg)
	if !deadline.IsZero() {
		if m.ttlQueued == 0 || deadline.Before(m.nextExpiry) {
			m.nextExpiry = deadline
		}
		m.ttlQueued++
	}
	m.mu.Unlock()
	m.userCount.Add(1)
	for _, mw := range m.middlewares {
		mw.MessagePosted(msg)
	}
	m.schedule()
	return nil, nil
}

func (m *Mailbox) release(n int) {
	m.limit.Release(n)
	if m.shared != nil {
		m.shared.Release(n)
	}
}

// reapExpired removes expired messages from a full mailbox so that they stop
// holding slots, and reports whether it freed any. It scans only when some
// queued message may have expired, so a mailbox full of live messages costs
// one comparison per refused post.
func (m *Mailbox) reapExpired() bool {
	m.mu.Lock()
	if m.ttlQueued == 0 {
		m.mu.Unlock()
		return false
	}
	now := time.Now()
	if now.Before(m.nextExpiry) {
		m.mu.Unlock()
		return false
	}
	var next time.Time
	live := 0
	expired := m.q.removeIf(func(v any) bool {
		_, d := classify(v)
		if d.IsZero() {
			return false
		}
		if !now.Before(d) {
			return true
		}
		if live == 0 || d.Before(next) {
			next = d
		}
		live++
		return false
	})
	m.ttlQueued, m.nextExpiry = live, next
	m.mu.Unlock()
	m.discard(expired, ErrExpired)
	return len(expired) > 0
}

// discard releases the slots of msgs, which have left the queue, and drops
// them with reason.
func (m *Mailbox) discard(msgs []any, reason error) {
	if len(msgs) == 0 {
		return
	}
	m.userCount.Add(-int32(len(msgs)))
	m.release(len(msgs))
	for _, v := range msgs {
		m.drop(v, reason)
	}
}

// Close closes the mailbox with reason (ErrStopped if nil): every queued user
// message is dropped with reason, later posts fail with it, and parked senders
// are woken to see it. System messages are still delivered. Close is
// idempotent; only the first reason counts. It does not block.
func (m *Mailbox) Close(reason error) {
	if reason == nil {
		reason = ErrStopped
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed, m.closeErr = true, reason
	queued := m.q.drain()
	m.ttlQueued = 0
	m.mu.Unlock()
	m.discard(queued, reason)
	m.limit.wakeAll()
}

// Closed reports whether Close was called.
func (m *Mailbox) Closed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// PostUserMessage implements actor.Mailbox for protoactor senders. It never
// waits: a message that finds no room is dropped with ErrFull (after expired
// messages are reaped), and one that finds the mailbox closed is dropped with
// the close error.
func (m *Mailbox) PostUserMessage(msg any) {
	full, err := m.tryPost(msg)
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
	m.sys.push(msg)
	m.sysMu.Unlock()
	m.sysCount.Add(1)
	m.schedule()
}

// RegisterHandlers implements actor.Mailbox.
func (m *Mailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker = invoker
	m.dispatcher = dispatcher
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
	if m.status.Load() == idle && m.status.CompareAndSwap(idle, running) {
		m.dispatcher.Schedule(m.processMessages)
	}
}

func (m *Mailbox) processMessages() {
	for {
		m.run()
		m.status.Store(idle)
		sys, user := m.sysCount.Load(), m.userCount.Load()
		if sys > 0 || (!m.suspended.Load() && user > 0) {
			if m.status.CompareAndSwap(idle, running) {
				continue
			}
		}
		if user == 0 && !m.suspended.Load() {
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
			msg = m.sys.pop()
			m.sysMu.Unlock()
			m.sysCount.Add(-1)
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended.Store(true)
			case *actor.ResumeMailbox:
				m.suspended.Store(false)
			default:
				m.invoker.InvokeSystemMessage(msg)
			}
			for _, mw := range m.middlewares {
				mw.MessageReceived(msg)
			}
			continue
		}
		if m.suspended.Load() {
			return
		}
		var ok bool
		if msg, ok = m.popUser(); !ok {
			return
		}
		if msg == nil { // expired and dropped; msg cleared so a panic
			continue // below cannot blame it
		}
		m.invoker.InvokeUserMessage(msg)
		for _, mw := range m.middlewares {
			mw.MessageReceived(msg)
		}
	}
}

// popUser takes the next user message. It returns ok=false when the queue is
// empty, and a nil message when the one it took had expired (and was dropped).
func (m *Mailbox) popUser() (any, bool) {
	m.mu.Lock()
	v, ok := m.q.pop()
	if !ok {
		m.mu.Unlock()
		return nil, false
	}
	_, deadline := classify(v)
	if !deadline.IsZero() {
		m.ttlQueued--
	}
	m.mu.Unlock()
	m.userCount.Add(-1)
	m.release(1)
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		m.drop(v, ErrExpired)
		return nil, true
	}
	return v, true
}

// classify returns the priority and deadline of a message, looking through a
// protoactor envelope.
func classify(msg any) (int, time.Time) {
	if env, ok := msg.(*actor.MessageEnvelope); ok {
		msg = env.Message
	}
	it, ok := msg.(Item)
	if !ok {
		return DefaultPriority, time.Time{}
	}
	p := it.MailboxPriority()
	switch {
	case p < 0:
		p = 0
	case p > MaxPriority:
		p = MaxPriority
	}
	return p, it.Deadline()
}
