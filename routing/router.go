package routing

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/mailbox"
)

var (
	// ErrUnknownHandler means a rule names a handler that is not
	// registered. Rules are checked when they are added, so a rule never
	// fires for a missing handler.
	ErrUnknownHandler = errors.New("agentbus: unknown handler")
	// ErrHandlerExists means a handler name is already registered.
	ErrHandlerExists = errors.New("agentbus: handler exists")
	// ErrRouterStopped means the router was stopped.
	ErrRouterStopped = errors.New("agentbus: router stopped")
)

// Runner starts the agent that runs one named handler. The router gives each
// handler its own agent, so a slow handler delays only its own messages and a
// failing one fails only its own: the agent's supervision must resume it after
// a panic. The bus provides the Runner.
type Runner interface {
	RunHandler(name string, h actors.Handler) (*actors.Agent, error)
}

// Undeliverable receives a message the router could not hand to a handler
// (its queue was full, or it stopped), with the handler's name.
type Undeliverable func(msg *actors.Message, handler string, err error)

// Router applies routing rules to the messages it is given: each enabled rule
// that matches names a handler, and each such handler gets the message once.
// The router is an actor: Route queues the message in the router's bounded
// mailbox and returns; the router actor matches it against the current rule
// table and queues it, without waiting, for each handler's own agent.
//
// Rules and handlers may be changed at any time; matching reads an immutable
// table through an atomic pointer, so changes never block routing. Router is
// safe for concurrent use.
type Router struct {
	runner        Runner
	undeliverable Undeliverable

	table   atomic.Pointer[Table]
	enabled atomic.Bool // some rule is enabled: Route has work to do
	pid     *actor.PID
	mb      *mailbox.Mailbox

	mu       sync.Mutex // serializes changes to rules and handlers
	handlers atomic.Pointer[map[string]*actors.Agent]
	stopped  bool
	done     chan struct{} // closed when the router actor has stopped
}

// New starts a router in system. Its mailbox holds capacity messages and
// shares the bus-wide limit shared (which may be nil). It does not block.
func New(system *actor.ActorSystem, capacity int, shared *mailbox.Limit, runner Runner, undeliverable Undeliverable) (*Router, error) {
	r := &Router{runner: runner, undeliverable: undeliverable, done: make(chan struct{})}
	r.table.Store(&Table{})
	r.handlers.Store(&map[string]*actors.Agent{})
	r.mb = mailbox.New(mailbox.Config{
		Capacity: capacity,
		Shared:   shared,
		Drop: func(v any, why error) {
			if m, ok := actor.UnwrapEnvelopeMessage(v).(*actors.Message); ok {
				undeliverable(m, "$router", why)
			}
		},
	})
	props := actor.PropsFromFunc(r.receive, actor.WithMailbox(r.mb.Producer()))
	pid, err := system.Root.SpawnNamed(props, "$router")
	if err != nil {
		return nil, fmt.Errorf("agentbus: start the router: %w", err)
	}
	r.pid = pid
	return r, nil
}

// PID returns the router actor's PID.
func (r *Router) PID() *actor.PID { return r.pid }

// Active reports whether some rule is enabled, so that callers can skip
// Route for free when there is nothing to route. It does not block.
func (r *Router) Active() bool { return r.enabled.Load() }

// Route queues msg for the router without waiting. It returns nil when there
// is no enabled rule (as after Stop), and otherwise the mailbox's error if msg
// could not be queued: one wrapping mailbox.ErrFull, or, for a call that
// races with Stop, the reason given to Stop. The caller decides what to do
// with msg then.
func (r *Router) Route(msg *actors.Message) error {
	if !r.enabled.Load() {
		return nil
	}
	return r.mb.TryPost(msg)
}

func (r *Router) receive(c actor.Context) {
	m, ok := c.Message().(*actors.Message)
	if !ok {
		if _, stopped := c.Message().(*actor.Stopped); stopped {
			r.mb.CloseFromActor(ErrRouterStopped) // leftovers go to Undeliverable
			close(r.done)
		}
		return
	}
	var buf [8]*Rule
	matched := r.table.Load().Match(m, buf[:0])
	handlers := *r.handlers.Load()
	for _, rule := range matched {
		a := handlers[rule.Handler]
		if a == nil { // cannot happen: rules are checked against handlers
			r.undeliverable(m, rule.Handler, fmt.Errorf("%w: %q", ErrUnknownHandler, rule.Handler))
			continue
		}
		if err := a.TryPost(m); err != nil {
			r.undeliverable(m, rule.Handler, err)
		}
	}
}

// RegisterHandler registers h under name and starts its agent. It returns an
// error wrapping ErrHandlerExists if the name is taken, actors.ErrInvalidAgent
// for a bad name or a nil handler, or ErrRouterStopped.
func (r *Router) RegisterHandler(name string, h actors.Handler) error {
	if err := actors.ValidateName(name); err != nil {
		return err
	}
	if actors.NilHandler(h) {
		return fmt.Errorf("%w: nil handler %q", actors.ErrInvalidAgent, name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrRouterStopped
	}
	old := *r.handlers.Load()
	if _, ok := old[name]; ok {
		return fmt.Errorf("%w: %q", ErrHandlerExists, name)
	}
	a, err := r.runner.RunHandler(name, h)
	if err != nil {
		return err
	}
	next := make(map[string]*actors.Agent, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = a
	r.handlers.Store(&next)
	return nil
}

// Handlers returns the registered handler names, sorted.
func (r *Router) Handlers() []string {
	hs := *r.handlers.Load()
	names := make([]string, 0, len(hs))
	for n := range hs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// HandlerStats counts what one handler did.
type HandlerStats struct {
	Name    string
	Handled uint64 // messages handled without error
	Failed  uint64 // messages whose handling returned an error or panicked
	Queued  int    // messages waiting for the handler
}

// Stats returns each handler's counters, sorted by name.
func (r *Router) Stats() []HandlerStats {
	hs := *r.handlers.Load()
	out := make([]HandlerStats, 0, len(hs))
	for n, a := range hs {
		out = append(out, HandlerStats{Name: n, Handled: a.Handled(), Failed: a.Failed(), Queued: a.Mailbox().Len()})
	}
	slices.SortFunc(out, func(a, b HandlerStats) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// AddRule adds rule. It returns an error wrapping ErrInvalidRule,
// ErrRuleExists, ErrUnknownHandler (the handler must be registered first) or
// ErrRouterStopped.
func (r *Router) AddRule(rule Rule) error {
	return r.change(func(t *Table) (*Table, error) {
		if _, ok := (*r.handlers.Load())[rule.Handler]; !ok && rule.Handler != "" {
			return nil, fmt.Errorf("%w: rule %q names %q", ErrUnknownHandler, rule.ID, rule.Handler)
		}
		return t.With(rule)
	})
}

// RemoveRule removes the rule with id, or returns an error wrapping
// ErrRuleNotFound.
func (r *Router) RemoveRule(id string) error {
	return r.change(func(t *Table) (*Table, error) { return t.Without(id) })
}

// EnableRule enables or disables the rule with id, or returns an error
// wrapping ErrRuleNotFound.
func (r *Router) EnableRule(id string, on bool) error {
	return r.change(func(t *Table) (*Table, error) { return t.SetEnabled(id, on) })
}

// Rules returns the rules in evaluation order.
func (r *Router) Rules() []Rule { return r.table.Load().Rules() }

func (r *Router) change(f func(*Table) (*Table, error)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrRouterStopped
	}
	next, err := f(r.table.Load())
	if err != nil {
		return err
	}
	r.table.Store(next)
	enabled := false
	for _, rule := range next.Rules() {
		enabled = enabled || rule.Enabled
	}
	r.enabled.Store(enabled)
	return nil
}

// Stop stops the router actor; with a non-nil reason it closes its mailbox
// first, so that what is queued is handed to Undeliverable with that reason
// (otherwise with ErrRouterStopped, once the actor has stopped). Later changes fail with ErrRouterStopped, and
// Route has nothing to do. The handler agents are the Runner's to stop. It
// does not block; Done is closed when the router has stopped. Calling it again
// only closes the mailbox, if reason is set.
func (r *Router) Stop(system *actor.ActorSystem, reason error) {
	r.mu.Lock()
	first := !r.stopped
	r.stopped = true
	r.mu.Unlock()
	r.enabled.Store(false)
	if reason != nil {
		r.mb.Close(reason)
	}
	if first {
		system.Root.Stop(r.pid)
	}
}

// Done returns a channel closed when the router actor has stopped.
func (r *Router) Done() <-chan struct{} { return r.done }

// Mailbox returns the router actor's mailbox, for draining and gauges.
func (r *Router) Mailbox() *mailbox.Mailbox { return r.mb }
