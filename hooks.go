package agentbus

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/supervisor"
)

// agentHooks connects agents to the bus without putting the hook methods on
// Bus's public API.
type agentHooks struct{ b *Bus }

func (h agentHooks) Failed(a *actors.Agent, m *actors.Message, err error) any {
	b := h.b
	tap := isHandler(a)
	b.report(Outcome{Kind: OutcomeFailed, Message: m, Dest: a.Name(), Err: err, Tap: tap})
	if errors.Is(err, ErrTransportClosed) || errors.Is(err, ErrAgentStopped) || errors.Is(err, ErrNameConflict) {
		// Not the handler's fault: its peer has gone, or unregistered it,
		// or another node won its name, and the agent is about to be
		// stopped with the same cause. No retry, no restart.
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: m, Reason: reasonOf(err),
			Err: err.Error(), Agent: a.Name()}, Err: err, Queued: true, Tap: tap})
		return nil
	}
	if !b.failed(a, m, err) {
		reason := deadletter.HandlerError
		if m.RequiresAck {
			reason = deadletter.RetriesExhausted
		}
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: m, Reason: reason, Err: err.Error(), Agent: a.Name()},
			Err: fmt.Errorf("agentbus: handler of %q failed: %w", a.Name(), err), Queued: true, Tap: tap})
	}
	if d := b.sup.Decide(a.PID().Id, err); d != supervisor.Resume {
		return &supervisor.Failure{Err: err, Directive: d}
	}
	return nil
}

func (h agentHooks) Panicked(a *actors.Agent, m *actors.Message, err *actors.HandlerPanicError) {
	b := h.b
	tap := isHandler(a)
	b.report(Outcome{Kind: OutcomeFailed, Message: m, Dest: a.Name(), Err: err, Tap: tap})
	if b.failed(a, m, err) {
		return
	}
	reason := deadletter.HandlerPanic
	if m.RequiresAck {
		reason = deadletter.RetriesExhausted
	}
	b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: m, Reason: reason, Err: err.Error(), Agent: a.Name()},
		Err: err, Queued: true, Tap: tap})
}

func (h agentHooks) Handled(a *actors.Agent, m *actors.Message) {
	if h.b.reportHandled || a.Durable() { // the bus's own observers read the agent's counters
		h.b.report(Outcome{Kind: OutcomeHandled, Message: m, Dest: a.Name(), Queued: true, Tap: isHandler(a)})
	}
}

func (h agentHooks) Foreign(a *actors.Agent, v any, sender *actor.PID) {
	err := fmt.Errorf("agentbus: agents handle *Message, not %T", v)
	h.b.deadLetter(Outcome{Letter: &deadletter.Letter{Value: v, Reason: deadletter.UnsupportedMessage,
		Err: err.Error(), Agent: a.Name()}, Err: err, Queued: true, Tap: isHandler(a)})
	if sender != nil {
		h.b.system.Root.Send(sender, &actor.DeadLetterResponse{})
	}
}

// handlerPrefix starts the actor names of the router's handler agents.
const handlerPrefix = "$handler:"

// isHandler reports whether a runs one of the router's handlers.
func isHandler(a *actors.Agent) bool { return strings.HasPrefix(a.PID().Id, handlerPrefix) }

func (h agentHooks) Asked(_ *actors.Agent, m *actors.Message) {
	h.b.askers.add(requestKey(m), m.ReplyTo())
}

func (h agentHooks) Started(a *actors.Agent, restarts int) {
	kind := EventStarted
	if restarts > 0 {
		kind = EventRestarted
		h.b.log.Info("agent restarted", "agent", a.Name(), "restarts", restarts)
	}
	h.b.events.emit(Event{Kind: kind, Agent: a.Name(), Restarts: restarts})
}

func (h agentHooks) Stopped(a *actors.Agent) {
	why := h.b.sup.Remove(a.PID().Id) // set when the supervisor stopped it
	switch {
	case why != nil:
	case h.b.closed.Load():
		why = ErrShutdown
	case a.Mailbox().Closed(): // stopped with a cause (StopCause, a name lost to another node)
		why = a.Mailbox().CloseReason()
	default:
		why = mailbox.ErrStopped
	}
	// Close first: once the name is free (unregister), everything that
	// was queued is already dead-lettered.
	a.Mailbox().CloseFromActor(why) // on the agent's goroutine: its batch too
	h.b.subs.Leave(a.Name())
	if a.Durable() {
		h.b.durableStopped(a)
	}
	h.b.spawnMu.Lock()
	h.b.retire(a)
	h.b.unregister(a)
	if i := slices.Index(h.b.handlers, a); i >= 0 {
		h.b.handlers = slices.Delete(h.b.handlers, i, i+1)
	}
	h.b.spawnMu.Unlock()
	reason := why.Error()
	if errors.Is(why, ErrShutdown) {
		// Stopped by Shutdown: what it had queued, if the drain was cut
		// short, is dead-lettered and logged as such; the agent itself
		// lost nothing.
		reason = "bus shutdown"
	}
	h.b.log.Info("agent stopped", "agent", a.Name(), "reason", reason)
	h.b.events.emit(Event{Kind: EventStopped, Agent: a.Name(), Restarts: a.Restarts(), Err: why})
}
