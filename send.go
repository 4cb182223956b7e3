package agentbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/mailbox"
)

// Send validates msg and queues it for its recipient, and returns its ID. The
// bus owns msg from then on.
//
// A direct message (or request, error, heartbeat, control) goes to the agent
// named by Recipient; a broadcast goes to every agent but its sender; a
// response completes the pending Request with the same RequestID (or goes to
// its Recipient when none is pending). Send stamps an empty ID, Timestamp,
// and, when ctx is a handler's, Sender.
//
// When the recipient's mailbox, or the bus's pending limit, is full, Send
// blocks: outside handlers until room frees, ctx ends, or
// Backpressure.Timeout passes, and then returns ErrBackpressureTimeout (the
// message was not accepted; the caller still holds it). Inside a handler
// (ctx is the handler's), it waits at most Backpressure.WaitDuration, since
// agents that wait on each other could otherwise deadlock; then the message is
// accepted and dead-lettered with reason mailbox_full, and Send returns its
// ID with an error wrapping both ErrDeadLettered and ErrMailboxFull.
//
// So a nil error means accepted; an error wrapping ErrDeadLettered (always
// with the ID) means accepted and already in the dead-letter queue; any other
// error (with an empty ID) means refused, and the caller still holds msg:
// ErrInvalidMessage, ErrMessageTooLarge, ErrExpired (its TTL already ran out),
// ErrNoRecipient (also for an agent that is stopping), ErrBackpressureTimeout,
// ErrClosed.
func (b *Bus) Send(ctx context.Context, msg *Message) (string, error) {
	return b.send(ctx, msg, actors.FromContext(ctx))
}

func (b *Bus) send(ctx context.Context, msg *Message, self *actors.Agent) (string, error) {
	id, err := b.dispatch(ctx, msg, self)
	if err != nil && id == "" { // refused; with an ID, accepted and dead-lettered
		b.report(Outcome{Kind: OutcomeRefused, Message: msg, Err: err})
	}
	return id, err
}

// dispatch accepts msg and hands it on by type.
func (b *Bus) dispatch(ctx context.Context, msg *Message, self *actors.Agent) (string, error) {
	if err := b.accept(ctx, msg, self); err != nil {
		return "", err
	}
	if b.cluster != nil { // bound for another node? (cluster.go)
		if id, err, done := b.clusterSend(ctx, msg, self); done {
			return id, err
		}
	}
	switch msg.Type {
	case TypeResponse:
		return b.respond(ctx, msg, self)
	case TypeBroadcast:
		return b.broadcast(msg)
	case TypePublish:
		return b.publish(ctx, msg, self)
	case TypeSubscribe, TypeUnsubscribe:
		return b.subscription(msg)
	case TypeAck:
		if msg.Recipient == "" {
			return b.ack(msg)
		}
	}
	a := b.agent(msg.Recipient)
	if a == nil {
		return "", fmt.Errorf("%w: %q", ErrNoRecipient, msg.Recipient)
	}
	return b.post(ctx, a, msg, self)
}

// accept stamps and validates msg: the bus's own stamps, then the
// Config.Stampers'.
func (b *Bus) accept(ctx context.Context, msg *Message, self *actors.Agent) error {
	if msg == nil {
		return fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	if b.closed.Load() && msg.Type != TypeResponse {
		return ErrClosed
	}
	if msg.ID == "" {
		msg.ID = actors.NewID()
	}
	if msg.Timestamp.IsZero() {
		msg.Timestamp = time.Now().UTC()
	}
	if self != nil {
		if msg.Sender == "" {
			msg.Sender = self.Name()
		}
		msg.InheritTrace(self.Current()) // one request, one trace, across agents
	}
	for _, s := range b.cfg.Stampers {
		s.Stamp(ctx, msg)
	}
	if err := msg.Validate(b.cfg.MaxMessageSize); err != nil {
		return err
	}
	if msg.TTL > 0 && msg.Expired(time.Now()) {
		return fmt.Errorf("%w: ttl %v ran out before send", ErrExpired, msg.TTL)
	}
	return nil
}

// post queues msg in a's mailbox under the backpressure rules of Send.
func (b *Bus) post(ctx context.Context, a *actors.Agent, msg *Message, self *actors.Agent) (string, error) {
	mb := a.Mailbox()
	var id string
	var err error
	if a.Durable() {
		id, err = b.postDurable(ctx, a, msg, self) // committed to the store first
	} else {
		id, err = b.postTo(ctx, mb, a.Name(), msg, self)
	}
	if err != nil && id == "" && mb.Closed() && errors.Is(err, mb.CloseReason()) && !errors.Is(err, ErrShutdown) {
		// Its agent stopped, or is stopping (by Stop, by its supervisor,
		// with its connection): as if it were gone already.
		return "", fmt.Errorf("%w: %q stopped: %w", ErrNoRecipient, a.Name(), err)
	}
	return id, err
}

// postTo queues msg in mb, which belongs to dest. Outside handlers it waits
// up to Backpressure.Timeout for room; inside a handler (self != nil) at most
// Backpressure.WaitDuration, after which the message is dead-lettered as
// mailbox_full and its ID is returned with the error.
func (b *Bus) postTo(ctx context.Context, mb *mailbox.Mailbox, dest string, msg *Message, self *actors.Agent) (string, error) {
	bp := b.cfg.Backpressure
	p := mailbox.Patience{Wait: bp.Timeout, Backoff: bp.WaitDuration}
	if self != nil {
		p = mailbox.Patience{Wait: bp.WaitDuration, Backoff: bp.WaitDuration}
	}
	accepted := msg
	if msg.RequiresAck {
		// Its recipient counts Attempts on it once it is queued: the
		// observers of its acceptance get a copy taken before.
		accepted = msg.Clone()
	}
	err := mb.Post(ctx, msg, p)
	switch {
	case err == nil:
		if ctx != republishing { // a republished message was reported when first accepted
			b.report(Outcome{Kind: OutcomeAccepted, Message: accepted})
		}
		if !b.silent && b.log.Enabled(ctx, slog.LevelDebug) { // per-message audit, Debug only
			b.log.LogAttrs(ctx, slog.LevelDebug, "message queued", slog.String("msg_id", msg.ID),
				slog.String("type", msg.Type.String()), slog.String("sender", msg.Sender),
				slog.String("agent", msg.Recipient), slog.String("topic", msg.Topic),
				slog.Int("priority", int(msg.Priority)))
		}
		return msg.ID, nil
	case self != nil && errors.Is(err, mailbox.ErrFull):
		b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
		l := &deadletter.Letter{Message: msg, Reason: deadletter.MailboxFull, Err: err.Error(), Agent: dest}
		b.deadLetter(Outcome{Letter: l, Err: err})
		return msg.ID, deadLetteredError(l, err)
	case errors.Is(err, ErrShutdown):
		return "", ErrClosed
	default:
		return "", err
	}
}

// republishing is the ctx of a message published again because the topic
// actor it was queued in retired (see topicDropped): it is not recorded a
// second time (statistics, history, router).
var republishing = context.WithValue(context.Background(), republishKey{}, true)

type republishKey struct{}

// broadcast delivers a copy of msg to every agent but its sender, without
// waiting: a full mailbox gets its copy dead-lettered as mailbox_full, so one
// slow agent never holds up the others.
func (b *Bus) broadcast(msg *Message) (string, error) {
	b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
	if b.broadcastLocal(msg) == 0 {
		err := errors.New("agentbus: broadcast reached no agent")
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: msg, Reason: deadletter.NoRecipient, Err: err.Error()},
			Err: err})
	}
	return msg.ID, nil
}

// broadcastLocal delivers a copy of msg to every agent of this bus but its
// sender, and returns how many it tried.
func (b *Bus) broadcastLocal(msg *Message) int {
	reached := 0
	for _, a := range b.snapshot() {
		if a.Name() == msg.Sender {
			continue
		}
		reached++
		cp := msg.Clone()
		cp.Recipient = a.Name()
		if err := a.Mailbox().TryPost(cp); err != nil {
			b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: cp, Reason: reasonOf(err), Err: err.Error(),
				Agent: a.Name()}, Err: err})
		}
	}
	return reached
}
