package agentbus

import (
	"fmt"
	"sync"
	"time"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/backoff"
)

// RetryConfig says how messages that require acknowledgement are
// redelivered.
type RetryConfig struct {
	// MaxAttempts is how often such a message is delivered in all before
	// it is dead-lettered as retries_exhausted. Default 3.
	MaxAttempts int
	// Backoff is the delay before the first redelivery; it doubles for
	// each further one, up to MaxBackoff. Default 100 ms.
	Backoff time.Duration
	// MaxBackoff caps the delay. Default 10 s.
	MaxBackoff time.Duration
}

// Defaults of RetryConfig.
const (
	DefaultMaxAttempts  = 3
	DefaultRetryBackoff = 100 * time.Millisecond
	DefaultMaxBackoff   = 10 * time.Second
)

// retries holds the redeliveries that wait for their timer. There are at
// most Backpressure.MaxPending of them; a failure that finds the table full is
// dead-lettered at once.
type retries struct {
	mu      sync.Mutex
	pending map[retryKey]*retry
	closed  bool
	timers  sync.WaitGroup
}

type retryKey struct{ id, agent string }

type retry struct {
	msg   *Message
	agent string
	err   error
	timer *time.Timer
}

// delay returns the wait before redelivering a message tried attempt times.
func (c RetryConfig) delay(attempt int) time.Duration {
	return min(backoff.Policy{Initial: c.Backoff, Max: c.MaxBackoff}.Delay(attempt), c.MaxBackoff)
}

// failed handles a failed delivery of m to agent a (a handler error or
// panic). A message that requires acknowledgement and has attempts left is
// scheduled for redelivery and the function reports true; otherwise the
// caller dead-letters it (as retries_exhausted when it required an ack).
func (b *Bus) failed(a *actors.Agent, m *Message, why error) (scheduled bool) {
	if !m.RequiresAck || m.Attempts >= b.cfg.Retry.MaxAttempts {
		return false
	}
	r := &b.retries
	k := retryKey{m.ID, a.Name()}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || len(r.pending) >= b.cfg.Backpressure.MaxPending {
		return false
	}
	if _, dup := r.pending[k]; dup {
		return false
	}
	e := &retry{msg: m, agent: a.Name(), err: why}
	r.pending[k] = e
	// This attempt is over; the redelivery is a new delivery, accepted
	// once it is queued.
	b.report(Outcome{Kind: OutcomeRetried, Message: m, Dest: a.Name(), Err: why, Tap: isHandler(a)})
	delay := b.cfg.Retry.delay(m.Attempts)
	r.timers.Add(1)
	e.timer = time.AfterFunc(delay, func() {
		defer r.timers.Done()
		b.redeliver(k, e)
	})
	b.log.Debug("redelivery scheduled", "msg_id", m.ID, "agent", a.Name(), "attempts", m.Attempts, "delay", delay)
	return true
}

// redeliver posts a scheduled redelivery without waiting; what cannot be
// posted is dead-lettered.
func (b *Bus) redeliver(k retryKey, e *retry) {
	r := &b.retries
	r.mu.Lock()
	if r.pending[k] != e {
		r.mu.Unlock()
		return // acknowledged or shut down meanwhile
	}
	delete(r.pending, k)
	r.mu.Unlock()
	a := b.agent(e.agent)
	if a == nil {
		err := fmt.Errorf("agentbus: %q is gone; last error: %w", e.agent, e.err)
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: e.msg, Reason: deadletter.NoRecipient,
			Err: err.Error(), Agent: e.agent}, Err: err})
		return
	}
	if err := a.Mailbox().TryPost(e.msg); err != nil {
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: e.msg, Reason: reasonOf(err), Err: err.Error(),
			Agent: e.agent}, Err: err})
	}
}

// ack cancels the pending redelivery of the message msg.RequestID names.
func (b *Bus) ack(msg *Message) (string, error) {
	r := &b.retries
	r.mu.Lock()
	var found *retry
	for k, e := range r.pending {
		if k.id == msg.RequestID && (msg.Sender == "" || k.agent == msg.Sender) {
			found = e
			delete(r.pending, k)
			break
		}
	}
	r.mu.Unlock()
	if found == nil {
		return "", fmt.Errorf("%w: %s", ErrNotPending, msg.RequestID)
	}
	if found.timer.Stop() {
		r.timers.Done()
	}
	b.completed(msg, found.agent)
	return msg.ID, nil
}

// PendingRetries returns how many redeliveries wait for their timer.
func (b *Bus) PendingRetries() int {
	b.retries.mu.Lock()
	defer b.retries.mu.Unlock()
	return len(b.retries.pending)
}

// stopRetries cancels every pending redelivery, dead-letters its message
// with reason shutdown, and waits for timers that already fired.
func (b *Bus) stopRetries() {
	r := &b.retries
	r.mu.Lock()
	r.closed = true
	pending := r.pending
	r.pending = map[retryKey]*retry{}
	r.mu.Unlock()
	for _, e := range pending {
		if e.timer.Stop() {
			r.timers.Done()
		}
		err := fmt.Errorf("%w; last error: %w", ErrShutdown, e.err)
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: e.msg, Reason: deadletter.Shutdown, Err: err.Error(),
			Agent: e.agent}, Err: err})
	}
	r.timers.Wait()
}
