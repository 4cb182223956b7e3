package actors

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/mailbox"
)

var (
	// ErrInvalidAgent means an agent name or spawn argument is unusable: an
	// empty, over-long or reserved name, a nil handler, a bad option.
	ErrInvalidAgent = errors.New("agentbus: invalid agent")
	// ErrHandlerPanic is wrapped by every *HandlerPanicError.
	ErrHandlerPanic = errors.New("agentbus: handler panic")
)

// MaxNameLen is the longest agent name, in bytes.
const MaxNameLen = 256

// ValidateName checks an agent name: 1 to MaxNameLen bytes of valid UTF-8,
// with no whitespace, control characters or '/', and not starting with '$'
// (reserved for the bus's own actors). Errors wrap ErrInvalidAgent.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidAgent)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name longer than %d bytes", ErrInvalidAgent, MaxNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name is not valid UTF-8", ErrInvalidAgent)
	case strings.HasPrefix(name, "$"):
		return fmt.Errorf("%w: name %q: '$' prefix is reserved", ErrInvalidAgent, name)
	}
	for _, r := range name {
		if r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: name %q contains %q", ErrInvalidAgent, name, r)
		}
	}
	return nil
}

// HandlerPanicError describes a panic in an agent's handler. It wraps
// ErrHandlerPanic.
type HandlerPanicError struct {
	Agent string // the agent whose handler panicked
	Value any    // the value passed to panic
	Stack []byte // the stack of the panicking goroutine
}

// Error describes the panic.
func (e *HandlerPanicError) Error() string {
	return fmt.Sprintf("agentbus: handler of %q panicked: %v", e.Agent, e.Value)
}

// Unwrap returns ErrHandlerPanic, and the panic value if it is an error.
func (e *HandlerPanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrHandlerPanic, err}
	}
	return []error{ErrHandlerPanic}
}

// Hooks connect an agent to the bus that runs it. They are called on the
// agent's goroutine and must not block.
type Hooks interface {
	// Failed is called when the handler returns an error for msg. A
	// non-nil result escalates the failure: the agent panics with it, so
	// that its supervisor handles it as it handles a panic.
	Failed(a *Agent, msg *Message, err error) (escalate any)
	// Handled is called when the handler returns nil for msg.
	Handled(a *Agent, msg *Message)
	// Panicked is called when the handler panics on msg, before the panic
	// goes on to the supervisor (as err).
	Panicked(a *Agent, msg *Message, err *HandlerPanicError)
	// Foreign is called for a user message that is not a *Message (sent
	// with protoactor's API); sender is its protoactor sender, if any.
	Foreign(a *Agent, msg any, sender *actor.PID)
	// Started is called when the agent starts, and again after each restart.
	Started(a *Agent, restarts int)
	// Stopped is called once, when the agent has stopped.
	Stopped(a *Agent)
	// Asked is called when msg arrived as a protoactor request (with
	// Request or RequestFuture), before the handler runs; msg.ReplyTo()
	// is the requester.
	Asked(a *Agent, msg *Message)
}

// Agent is the bus-side state of one agent: its name, PID, mailbox, handler
// and counters. The protoactor actor that runs the handler is made by Props.
// An Agent is safe for concurrent use.
type Agent struct {
	// What every sender reads.
	name         string
	pid          atomic.Pointer[actor.PID] // set by SetPID or, if the actor starts first, from its own context
	mailbox      *mailbox.Mailbox
	durable      bool        // set before the agent is reachable; see SetDurable
	unregistered atomic.Bool // see Unregister

	// What the agent's goroutine writes for every message, away from the
	// fields above (an Agent is not allocated on a cache-line boundary, so
	// the pad is a line long), and from the next object in memory by the
	// fields after it, which only the agent's goroutine reads for every
	// message.
	_         [64]byte
	waitingOn atomic.Pointer[Agent]   // the agent this one's handler awaits a response from
	current   atomic.Pointer[Message] // the message the handler is handling, if any
	handled   atomic.Uint64
	failed    atomic.Uint64
	restarts  atomic.Int64 // beside handled and failed, which a reader of one reads too

	handler Handler
	hooks   Hooks
	ctx     handlerContext
	cancel  context.CancelFunc
	stopped atomic.Bool // the Stopped hook ran: it runs once

	doneMu   sync.Mutex
	done     chan struct{} // made by the first Done, or at the stop
	finished bool          // under doneMu: the agent has stopped
}

// handlerContext is the context handed to the handler: the agent's own,
// canceled when it stops, carrying the agent as a value. It lives inside the
// Agent, so that an agent costs one allocation fewer than with
// context.WithValue.
type handlerContext struct {
	context.Context
	a *Agent
}

// Value returns the agent for agentKey, and looks any other key up in the
// agent's context.
func (c *handlerContext) Value(key any) any {
	if key == any(agentKey{}) {
		return c.a
	}
	return c.Context.Value(key)
}

// agentKey is the context key under which a handler's ctx carries its Agent.
type agentKey struct{}

// NewAgent returns the state of an agent named name. parent is the bus's
// context; the agent's context derives from it and is canceled when the agent
// stops. The agent does not run until it is spawned with Props and SetPID.
func NewAgent(parent context.Context, name string, h Handler, mb *mailbox.Mailbox, hooks Hooks) *Agent {
	a := &Agent{name: name, handler: h, mailbox: mb, hooks: hooks}
	ctx, cancel := context.WithCancel(parent)
	a.ctx, a.cancel = handlerContext{ctx, a}, cancel
	return a
}

// FromContext returns the agent whose handler ctx is (or derives from), or nil.
func FromContext(ctx context.Context) *Agent {
	a, _ := ctx.Value(agentKey{}).(*Agent)
	return a
}

// Name returns the agent's name.
func (a *Agent) Name() string { return a.name }

// SetDurable marks a as durable (its messages are kept in a store). Call it
// once, before the agent is reachable by name.
func (a *Agent) SetDurable() { a.durable = true }

// Durable reports whether SetDurable was called. It does not block.
func (a *Agent) Durable() bool { return a.durable }

// Unregister records that the bus no longer lists a under its name, so that
// a cached reference to a is not taken for the agent of that name (see
// Unregistered). The bus calls it before it lets another agent take the name.
func (a *Agent) Unregister() { a.unregistered.Store(true) }

// Unregistered reports whether Unregister was called. It does not block.
func (a *Agent) Unregistered() bool { return a.unregistered.Load() }

// PID returns the agent's protoactor PID. It does not block. It is nil only
// before the agent has been spawned.
func (a *Agent) PID() *actor.PID { return a.pid.Load() }

// SetPID records the PID the agent was spawned as. Call it once, before the
// agent is reachable by name. The agent's own hooks (Started, Stopped,
// failures) may run before the spawner gets here; they see the PID the actor
// learned from its context, which names the same process.
func (a *Agent) SetPID(pid *actor.PID) { a.pid.Store(pid) }

// Mailbox returns the agent's mailbox.
func (a *Agent) Mailbox() *mailbox.Mailbox { return a.mailbox }

// Context returns the context handed to the agent's handler.
func (a *Agent) Context() context.Context { return &a.ctx }

// Done returns a channel closed once the agent has stopped.
func (a *Agent) Done() <-chan struct{} {
	a.doneMu.Lock()
	defer a.doneMu.Unlock()
	if a.done == nil {
		a.done = make(chan struct{}) // most agents are never waited for while they run
		if a.finished {
			close(a.done)
		}
	}
	return a.done
}

// markDone closes the channel Done returns, or has Done return a closed one.
func (a *Agent) markDone() {
	a.doneMu.Lock()
	a.finished = true
	if a.done != nil {
		close(a.done)
	}
	a.doneMu.Unlock()
}

// Handled returns how many messages the handler completed without error.
func (a *Agent) Handled() uint64 { return a.handled.Load() }

// Failed returns how many messages the handler failed (error or panic).
func (a *Agent) Failed() uint64 { return a.failed.Load() }

// Restarts returns how many times the agent was restarted.
func (a *Agent) Restarts() int { return int(a.restarts.Load()) }

// Current returns the message the agent's handler is handling, or nil.
func (a *Agent) Current() *Message { return a.current.Load() }

// WaitingOn returns the agent this agent's handler is blocked on in a
// request, or nil.
func (a *Agent) WaitingOn() *Agent { return a.waitingOn.Load() }

// SetWaitingOn records (or, with nil, clears) the agent this agent's handler
// is blocked on, for request-cycle detection.
func (a *Agent) SetWaitingOn(b *Agent) { a.waitingOn.Store(b) }

// Props returns the protoactor props that run a on its mailbox under
// strategy. Each (re)start creates a fresh actor around the same Agent.
func (a *Agent) Props(strategy actor.SupervisorStrategy) *actor.Props {
	return actor.PropsFromProducer(
		func() actor.Actor { return &agentActor{a: a} },
		actor.WithMailbox(a.mailbox.Producer()),
		actor.WithGuardian(strategy),
	)
}

// agentActor is the protoactor actor that runs an agent's handler.
type agentActor struct {
	a *Agent
}

func (x *agentActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *Message:
		if s := c.Sender(); s != nil {
			m.replyTo = s
			x.a.hooks.Asked(x.a, m)
		}
		x.a.handle(m)
	case *actor.Started:
		x.a.pid.CompareAndSwap(nil, c.Self())
		x.a.hooks.Started(x.a, int(x.a.restarts.Load()))
	case *actor.Restarting:
		x.a.restarts.Add(1)
	case *actor.Stopping, *actor.Terminated, actor.SystemMessage:
	case *actor.Stopped:
		// Once: protoactor restarts an actor that has already stopped if
		// a Restart reaches it (the bus's mailbox drops those), and it
		// would then stop, and report it, a second time.
		if !x.a.stopped.CompareAndSwap(false, true) {
			return
		}
		x.a.cancel()
		x.a.hooks.Stopped(x.a)
		x.a.markDone()
	default:
		x.a.hooks.Foreign(x.a, m, c.Sender())
	}
}

// handle runs the handler on msg. A panic is reported to the hooks and goes
// on, as a *HandlerPanicError, to the mailbox, which escalates it to the
// supervisor; so does a handler error when the hooks say it should escalate.
func (a *Agent) handle(msg *Message) {
	if msg.RequiresAck {
		msg.Attempts++ // this agent owns the message: the bus copies it for anyone else
	}
	if err := a.invoke(msg); err != nil {
		a.failed.Add(1)
		if escalate := a.hooks.Failed(a, msg, err); escalate != nil {
			panic(escalate)
		}
		return
	}
	a.handled.Add(1)
	a.hooks.Handled(a, msg)
}

func (a *Agent) invoke(msg *Message) error {
	a.current.Store(msg)
	defer func() {
		a.current.Store(nil)
		if r := recover(); r != nil {
			a.failed.Add(1)
			err := &HandlerPanicError{Agent: a.name, Value: r, Stack: debug.Stack()}
			a.hooks.Panicked(a, msg, err)
			panic(err)
		}
	}()
	return a.handler.Handle(&a.ctx, msg)
}

// TryPost queues msg in the agent's mailbox without waiting; see
// mailbox.Mailbox.TryPost.
func (a *Agent) TryPost(msg *Message) error { return a.mailbox.TryPost(msg) }
