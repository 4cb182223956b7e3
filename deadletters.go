package agentbus

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/time/rate"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/cluster"
	"github.com/descartes/agentbus/cluster/wire"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/supervisor"
)

// deadLetterActor is the registered name of the dead-letter actor.
const deadLetterActor = "$deadletters"

// deadLetterWarnings is how many dead letters a second are logged at Warn,
// with a burst of as many; the rest are only stored and counted.
const deadLetterWarnings = 10

// DeadLetterPID returns the PID of the dead-letter actor, the protoactor face
// of DeadLetters: protoactor code can send it a *deadletter.Letter (or an
// undeliverable *Message) to record, or a *deadletter.Query to list letters.
func (b *Bus) DeadLetterPID() *actor.PID { return b.dlqPID }

// DeadLetters returns the bus's dead-letter queue. It is bounded by
// Config.DLQMaxSize and Config.DLQMaxBytes; the oldest letters are evicted.
func (b *Bus) DeadLetters() *deadletter.Queue { return b.dlq }

// dlqStore observes dead letters: it stores each in the dead-letter queue
// (which gives it its Seq and Time, seen by the observers after it) and logs
// it, throttled.
type dlqStore struct {
	q    *deadletter.Queue
	log  *slog.Logger
	warn *rate.Limiter
}

func newDLQStore(q *deadletter.Queue, log *slog.Logger) dlqStore {
	return dlqStore{q: q, log: log, warn: rate.NewLimiter(deadLetterWarnings, deadLetterWarnings)}
}

func (s dlqStore) Observe(o Outcome) {
	l := o.Letter
	*l = s.q.Add(*l)
	if s.warn.Allow() {
		id := ""
		if l.Message != nil {
			id = l.Message.ID
		}
		s.log.Warn("dead letter", "msg_id", id, "agent", l.Agent, "reason", string(l.Reason), "error", l.Err)
	}
}

// reasonOf maps a mailbox drop error to a dead-letter reason.
func reasonOf(err error) deadletter.Reason {
	switch {
	case errors.Is(err, mailbox.ErrExpired):
		return deadletter.Expired
	case errors.Is(err, mailbox.ErrFull):
		return deadletter.MailboxFull
	case errors.Is(err, ErrShutdown):
		return deadletter.Shutdown
	case errors.Is(err, supervisor.ErrRestartLimit):
		return deadletter.RestartLimit
	case errors.Is(err, ErrTransportClosed):
		return deadletter.TransportClosed
	case errors.Is(err, ErrNodeUnreachable):
		return deadletter.NodeUnreachable
	case errors.Is(err, ErrNodeLeft):
		return deadletter.NodeLeft
	case errors.Is(err, ErrNameConflict):
		return deadletter.NameConflict
	case errors.Is(err, cluster.ErrClosed):
		return deadletter.Shutdown
	default:
		return deadletter.AgentStopped
	}
}

// dropped receives what agent's mailbox did not deliver; tap says agent is a
// routing handler.
func (b *Bus) dropped(agent string, v any, why error, tap bool) {
	_, v, sender := actor.UnwrapEnvelope(v)
	l := &deadletter.Letter{Reason: reasonOf(why), Err: why.Error(), Agent: agent}
	if m, ok := v.(*actors.Message); ok {
		l.Message = m
	} else {
		l.Value = v
	}
	// A full mailbox refused it at PostUserMessage: it was never queued.
	// Otherwise it was queued, then expired or closed.
	b.deadLetter(Outcome{Letter: l, Err: why, Queued: !errors.Is(why, mailbox.ErrFull), Tap: tap})
	if sender != nil { // a protoactor future fails at once instead of timing out
		b.system.Root.Send(sender, &actor.DeadLetterResponse{})
	}
}

// dropDeadLetter receives what the dead-letter actor's own mailbox could not
// queue (it fell behind): a letter is stored directly, so that a dead letter
// is never itself dropped; anything else is recorded as a foreign letter.
func (b *Bus) dropDeadLetter(v any, why error) {
	v = actor.UnwrapEnvelopeMessage(v)
	if l, ok := v.(*deadletter.Letter); ok {
		b.dlq.Add(*l)
		return
	}
	b.deadLetter(Outcome{Letter: &deadletter.Letter{Value: v, Reason: reasonOf(why), Err: why.Error(),
		Agent: deadLetterActor}, Err: why, Foreign: true})
}

// protoDeadLetter records protoactor's own dead letters: messages sent with
// protoactor's API to a PID that no longer exists.
func (b *Bus) protoDeadLetter(d *actor.DeadLetterEvent) {
	switch d.Message.(type) {
	case *actor.DeadLetterResponse, actor.SystemMessage, actor.AutoReceiveMessage, *wire.Frame:
		return // protoactor's own protocol, or the cluster's, not user traffic
	}
	l := &deadletter.Letter{Reason: deadletter.NoRecipient}
	if d.PID != nil {
		l.Agent = d.PID.Id
		if strings.HasPrefix(d.PID.Id, "future") {
			l.Reason = deadletter.LateResponse
		}
	}
	if m, ok := d.Message.(*actors.Message); ok {
		l.Message = m
	} else {
		l.Value = d.Message
	}
	l.Err = "protoactor: no process for " + l.Agent
	b.deadLetter(Outcome{Letter: l, Foreign: true}) // not a delivery the bus accepted
}

// deadLetteredError is what Send returns for a message it accepted and
// dead-lettered at once: it wraps ErrDeadLettered and the cause.
func deadLetteredError(l *deadletter.Letter, cause error) error {
	return fmt.Errorf("%w (%s): %s: %w", ErrDeadLettered, l.Reason, l.Message.ID, cause)
}
