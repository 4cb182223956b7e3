package agentbus

import (
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/routing"
	"github.com/descartes/agentbus/supervisor"
)

// Router returns the bus's router: register named handlers and add rules,
// and every message the bus accepts is also offered to the handlers whose
// rules match it, besides going to its recipient or topic. See
// routing.Router.
func (b *Bus) Router() *routing.Router { return b.router }

// handlerRunner starts the agents that run the router's handlers: agents that
// cannot be addressed by name, resumed after a panic (the message that caused
// it is dead-lettered as handler_panic), and stopped with the bus.
type handlerRunner struct{ b *Bus }

// handlerStrategy resumes a handler agent after a panic: the router isolates
// failures per message, so there is no state worth a restart.
var handlerStrategy = supervisor.Resuming()

func (r handlerRunner) RunHandler(name string, h actors.Handler) (*actors.Agent, error) {
	b := r.b
	b.spawnMu.Lock()
	defer b.spawnMu.Unlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	mb := mailbox.New(mailbox.Config{
		Capacity: b.cfg.MailboxSize,
		Shared:   b.shared,
		Drop:     func(v any, why error) { b.dropped(name, v, why, true) },
		Latency:  b.stats.latencyShard(),
	})
	a := actors.NewAgent(b.ctx, name, h, mb, b.hooks)
	id := handlerPrefix + name
	b.sup.Add(id, name, handlerStrategy)
	pid, err := b.system.Root.SpawnNamed(a.Props(b.sup).Configure(actor.WithDispatcher(b.pool)), id)
	if err != nil {
		b.sup.Remove(id)
		return nil, fmt.Errorf("agentbus: start handler %q: %w", name, err)
	}
	a.SetPID(pid)
	b.handlers = append(b.handlers, a)
	return a, nil
}

// routerTap offers every accepted message to the router, when a rule is
// enabled; a copy the router cannot queue is dead-lettered for "$router"
// (the message's own delivery is unaffected).
type routerTap struct{ b *Bus }

func (t routerTap) Observe(o Outcome) {
	r := t.b.router
	if !r.Active() {
		return
	}
	if err := r.Route(o.Message); err != nil {
		t.b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: o.Message, Reason: reasonOf(err), Err: err.Error(),
			Agent: "$router"}, Err: err, Tap: true})
	}
}

// routerUndeliverable dead-letters a copy the router could not hand to
// handler (or, for "$router", that was queued for the router when it
// stopped).
func (b *Bus) routerUndeliverable(m *actors.Message, handler string, why error) {
	l := &deadletter.Letter{Message: m, Reason: reasonOf(why), Err: why.Error(), Agent: handler}
	queued := handler == "$router" && !errors.Is(why, mailbox.ErrFull)
	b.deadLetter(Outcome{Letter: l, Err: why, Queued: queued, Tap: true})
}
