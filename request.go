package agentbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
)

// lateResponseMemory is how many timed-out request IDs the bus remembers so
// that a response arriving after its timeout is dead-lettered as
// late_response rather than orphan_response. Older ones are forgotten.
const lateResponseMemory = 4096

// call is one pending Request. Its channel has room for the one result, which
// only the goroutine that removed the call from Bus.calls may send, so a
// response that races a timeout can neither block nor be delivered twice.
type call struct {
	ch    chan result
	timer *time.Timer
}

type result struct {
	msg *Message
	err error
}

var callPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &call{ch: make(chan result, 1), timer: t}
}}

// Request sends msg as a request (its Type becomes TypeRequest; an empty
// RequestID becomes its ID) and blocks until the response arrives, and returns
// it. The recipient answers with Reply, or by sending a TypeResponse message
// with the same RequestID through Send.
//
// It returns ErrRequestTimeout if no response arrives within
// Config.RequestTimeout or before ctx's deadline (wrapping ctx's error in the
// latter case), or ctx's error if ctx is canceled; a response that arrives
// later is dead-lettered as late_response. If the request itself is
// dead-lettered (its recipient fails, panics, expires it or stops), Request
// returns at once with an error wrapping the cause. From inside a handler it
// returns ErrRequestCycle instead of sending if the recipient is itself
// (directly or through others) waiting on a response from this agent. Send's
// errors apply to the request itself.
func (b *Bus) Request(ctx context.Context, msg *Message) (*Message, error) {
	if msg == nil {
		return nil, b.refused(nil, fmt.Errorf("%w: nil message", ErrInvalidMessage))
	}
	msg.Type = TypeRequest
	if msg.ID == "" {
		msg.ID = actors.NewID()
	}
	if msg.RequestID == "" {
		msg.RequestID = msg.ID
	}
	self := actors.FromContext(ctx)
	target := b.agent(msg.Recipient)
	if self != nil && target != nil && waitsOn(target, self) {
		return nil, b.refused(msg, fmt.Errorf("%w: %q is waiting on %q", ErrRequestCycle, msg.Recipient, self.Name()))
	}
	c := callPool.Get().(*call)
	if _, loaded := b.calls.LoadOrStore(msg.RequestID, c); loaded {
		callPool.Put(c)
		return nil, b.refused(msg, fmt.Errorf("%w: request id %q is already pending", ErrInvalidMessage, msg.RequestID))
	}
	b.ncalls.Add(1)
	if self != nil && target != nil {
		// Before sending, so the recipient's handler sees it.
		self.SetWaitingOn(target)
		defer self.SetWaitingOn(nil)
	}
	if _, err := b.send(ctx, msg, self); err != nil {
		if b.dropCall(msg.RequestID, c) {
			callPool.Put(c)
		}
		// else: the request was accepted, then dead-lettered, and its
		// failure is waiting in c.ch; Send still reports the error.
		return nil, err
	}
	c.timer.Reset(b.cfg.RequestTimeout)
	select {
	case r := <-c.ch:
		c.timer.Stop()
		callPool.Put(c)
		return r.msg, r.err
	case <-c.timer.C:
		return b.abandon(msg.RequestID, c, fmt.Errorf("%w: %s after %v", ErrRequestTimeout, msg.RequestID, b.cfg.RequestTimeout))
	case <-ctx.Done():
		c.timer.Stop()
		err := context.Cause(ctx)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %s: %w", ErrRequestTimeout, msg.RequestID, err)
		}
		return b.abandon(msg.RequestID, c, err)
	}
}

// abandon gives up on a pending request. If a response won the race it is
// returned instead of err.
func (b *Bus) abandon(id string, c *call, err error) (*Message, error) {
	if b.dropCall(id, c) {
		b.late.add(id, struct{}{})
		callPool.Put(c)
		return nil, err
	}
	r := <-c.ch // the response is being delivered right now
	callPool.Put(c)
	return r.msg, r.err
}

// fail completes the pending request id, if any, with err.
func (b *Bus) fail(id string, err error) {
	if c, ok := b.takeCall(id); ok {
		c.ch <- result{err: err}
	}
}

// takeCall removes and returns the pending call for id. Only the goroutine
// that takes a call may complete it.
func (b *Bus) takeCall(id string) (*call, bool) {
	v, ok := b.calls.LoadAndDelete(id)
	if !ok {
		return nil, false
	}
	b.ncalls.Add(-1)
	return v.(*call), true
}

// dropCall removes the pending call c for id if it is still pending, and
// reports whether it did.
func (b *Bus) dropCall(id string, c *call) bool {
	if !b.calls.CompareAndDelete(id, c) {
		return false
	}
	b.ncalls.Add(-1)
	return true
}

// PendingRequests returns how many Request calls are waiting for a response.
// It does not block.
func (b *Bus) PendingRequests() int { return int(b.ncalls.Load()) }

// waitsOn reports whether agent a is blocked, directly or through a chain of
// requests, on a response from agent b. The chain is followed for at most a
// bounded number of hops.
func waitsOn(a, b *actors.Agent) bool {
	for range 64 {
		if a == nil {
			return false
		}
		if a == b {
			return true
		}
		a = a.WaitingOn()
	}
	return false
}

// respond delivers a response: to its pending Request, else to its
// Recipient, else to dead letters (late_response if its request timed out,
// orphan_response otherwise). A response that reaches dead letters is still
// accepted: Send returns its ID and no error.
func (b *Bus) respond(ctx context.Context, msg *Message, self *actors.Agent) (string, error) {
	if c, ok := b.takeCall(msg.RequestID); ok {
		b.completed(msg, msg.Recipient) // before the requester sees it
		c.ch <- result{msg: msg}
		return msg.ID, nil
	}
	if pid, ok := b.askers.take(msg.RequestID); ok { // a protoactor requester
		b.completed(msg, msg.Recipient)
		b.system.Root.Send(pid, msg)
		return msg.ID, nil
	}
	if b.late.contains(msg.RequestID) {
		b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
		err := fmt.Errorf("agentbus: request %s had timed out", msg.RequestID)
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: msg, Reason: deadletter.LateResponse,
			Err: err.Error(), Agent: msg.Recipient}, Err: err})
		return msg.ID, nil
	}
	if msg.Recipient != "" {
		if a := b.agent(msg.Recipient); a != nil {
			return b.post(ctx, a, msg, self)
		}
	}
	b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
	err := fmt.Errorf("agentbus: no pending request %s", msg.RequestID)
	b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: msg, Reason: deadletter.OrphanResponse,
		Err: err.Error(), Agent: msg.Recipient}, Err: err})
	return msg.ID, nil
}

// Reply answers request req with payload and returns the response's ID. The
// response is a TypeResponse message from the replying agent (the handler
// whose ctx this is, else req's Recipient) with req's RequestID, priority and
// correlation ID. It goes to whoever asked: a Request call waiting on the bus,
// a protoactor future or actor that used Request or RequestFuture on the
// agent's PID, or the agent that sent req. It does not block on mailboxes of
// Request callers or futures; otherwise Send's rules and errors apply.
func (b *Bus) Reply(ctx context.Context, req *Message, payload []byte) (string, error) {
	if req == nil {
		return "", fmt.Errorf("%w: reply to nil request", ErrInvalidMessage)
	}
	from := req.Recipient
	if self := actors.FromContext(ctx); self != nil {
		from = self.Name()
	}
	resp := req.NewResponse(from, payload)
	if pid := req.ReplyTo(); pid != nil {
		b.askers.take(requestKey(req))
		if err := b.accept(ctx, resp, nil); err != nil {
			return "", b.refused(resp, err)
		}
		b.completed(resp, resp.Recipient)
		b.system.Root.Send(pid, resp) // to a protoactor future or actor: not ours to count further
		return resp.ID, nil
	}
	return b.Send(ctx, resp)
}

// requestFailer observes dead letters: a Request whose request is
// dead-lettered (its recipient failed on it, panicked, expired it, stopped,
// or had no room) fails at once with the cause, instead of waiting for its
// timeout. Copies for the router and its handlers are not the request's own
// delivery and fail nothing.
type requestFailer struct{ b *Bus }

func (f requestFailer) Observe(o Outcome) {
	m := o.Message
	if m == nil || m.Type != TypeRequest || o.Tap || o.Foreign {
		return
	}
	cause := o.Err
	if cause == nil {
		cause = errors.New(o.Letter.Err)
	}
	f.b.fail(m.RequestID, fmt.Errorf("agentbus: request %s dead-lettered (%s): %w", m.RequestID, o.Letter.Reason, cause))
}

// requestKey is the ID a response to m carries (see Message.NewResponse).
func requestKey(m *Message) string {
	if m.RequestID != "" {
		return m.RequestID
	}
	return m.ID
}
