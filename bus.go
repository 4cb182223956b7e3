package agentbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/puzpuzpuz/xsync/v4"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protosys"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/routing"
	"github.com/descartes/agentbus/supervisor"
	"github.com/descartes/agentbus/topics"
)

// protoThrottleWindow is protoactor's dead-letter log window for the bus's
// actor system.
const protoThrottleWindow = 10 * time.Millisecond

// Message, Handler and friends are the actors package's; they are aliased here
// so that most programs need only this package.
type (
	// Message is the envelope of every message; see actors.Message.
	Message = actors.Message
	// MessageType says what a message is for; see actors.MessageType.
	MessageType = actors.MessageType
	// Handler handles an agent's messages; see actors.Handler.
	Handler = actors.Handler
	// HandlerFunc adapts a function to Handler.
	HandlerFunc = actors.HandlerFunc
	// HandlerPanicError describes a handler panic; it wraps ErrHandlerPanic.
	HandlerPanicError = actors.HandlerPanicError
)

// Trace context keys in Message.Metadata (W3C Trace Context); see
// actors.TraceParent.
const (
	TraceParent = actors.TraceParent
	TraceState  = actors.TraceState
)

// The message types; see actors.MessageType.
const (
	TypeDirect      = actors.TypeDirect
	TypePublish     = actors.TypePublish
	TypeBroadcast   = actors.TypeBroadcast
	TypeSubscribe   = actors.TypeSubscribe
	TypeUnsubscribe = actors.TypeUnsubscribe
	TypeRequest     = actors.TypeRequest
	TypeResponse    = actors.TypeResponse
	TypeAck         = actors.TypeAck
	TypeError       = actors.TypeError
	TypeHeartbeat   = actors.TypeHeartbeat
	TypeControl     = actors.TypeControl
)

// NewMessage returns a message of type t from sender with payload, a fresh
// UUIDv7 ID, the current time and priority 50; see actors.NewMessage.
func NewMessage(t MessageType, sender string, payload []byte) *Message {
	return actors.NewMessage(t, sender, payload)
}

// Bus is an in-process message bus whose agents are protoactor actors with
// bounded priority mailboxes. All its methods are safe for concurrent use,
// including from inside handlers.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	silent bool // log discards everything: the per-message audit skips asking it
	system *actor.ActorSystem
	sup    *supervisor.Supervisor // the one guardian strategy of every agent
	events eventHub
	hooks  agentHooks

	ctx    context.Context // parent of every agent's context; canceled by Shutdown
	cancel context.CancelFunc

	closed       atomic.Bool
	shutdownDone chan struct{}
	shutdownErr  error

	spawnMu sync.Mutex // serializes Spawn so a name is checked and taken at once

	// locksordering: spawnMu -> agentsMu; topicsMu is never held with
	// another bus lock.
	//
	// agents is a concurrent hash trie: a send looks its recipient up
	// without a lock, and spawning or stopping one agent costs O(1), not a
	// copy of the registry (a copy-on-write map made 10,000 spawns take
	// seconds: BenchmarkIdleAgent). Writers hold agentsMu, so that a name's
	// check and change are one step.
	agentsMu  sync.Mutex
	agents    *xsync.Map[string, *actors.Agent] // running agents by name
	agentsGen atomic.Uint64                     // bumped whenever agents changes
	// nameCache holds recently looked-up agents, so that a send to an agent
	// it sent to before skips hashing its name (see agent).
	nameCache [nameCacheSlots]atomic.Pointer[actors.Agent]

	router   *routing.Router
	handlers []*actors.Agent // the router's handler agents; guarded by spawnMu

	subs      *topics.Registry
	topicsMu  sync.Mutex
	topicRefs map[string]*topicRef // running topic actors by subject

	shared  *mailbox.Limit
	pool    *mailbox.Pool // the agents' dispatcher
	ledger  ledger
	retries retries
	dlq     *deadletter.Queue
	dlqPID  *actor.PID
	calls   sync.Map // request ID → *call
	ncalls  atomic.Int64
	late    *recent[struct{}]
	askers  *recent[*actor.PID]
	history *history // nil unless Config.EnableHistory
	dlSub   *eventstream.Subscription
	stats   statsState

	durable *durability // durable agents and their store (durable.go)

	observers     observers // who is told each outcome (see observe)
	reportHandled bool      // some observer wants every queued delivery's Handled

	cluster *Cluster // nil unless Config.Cluster; see cluster.go
}

// New returns a running bus configured by cfg. It returns an error wrapping
// ErrInvalidConfig if a field is negative or above its documented bound. It
// starts no goroutine of its own; agents run on goroutines of its dispatcher
// (mailbox.Pool), which Shutdown stops.
func New(cfg Config) (*Bus, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	durable, err := newDurability(&cfg) // may raise MaxPending for what it recovers
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	system := protosys.New(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return logger.With("component", "protoactor")
		}),
		actor.WithDeadLetterRequestLogging(false), // the bus logs dead letters itself
		// protoactor's dead-letter log throttle starts a goroutine that
		// lives for one window; a short window keeps it from outliving
		// Shutdown by more than that. (*Message opts out of that logging.)
		actor.WithDeadLetterThrottleInterval(protoThrottleWindow),
	)
	b := &Bus{
		cfg:          cfg,
		log:          logger,
		silent:       logger.Handler() == slog.DiscardHandler,
		system:       system,
		shutdownDone: make(chan struct{}),
		shared:       mailbox.NewLimit(cfg.Backpressure.MaxPending),
		pool:         mailbox.NewPool(agentThroughput, agentIdleGoroutines),
		dlq:          deadletter.New(cfg.DLQMaxSize, cfg.DLQMaxBytes),
		subs:         topics.NewRegistry(cfg.MaxSubscriptions),
		topicRefs:    make(map[string]*topicRef),
		late:         newRecent[struct{}](lateResponseMemory),
		askers:       newRecent[*actor.PID](askerMemory),
		durable:      durable,
	}
	b.hooks = agentHooks{b}
	b.stats.init(cfg.StatsMaxKeys)
	b.agents = xsync.NewMap[string, *actors.Agent]()
	b.retries.pending = make(map[retryKey]*retry)
	b.sup = supervisor.New(func(e supervisor.Event) {
		b.log.Info("supervision", "agent", e.Agent, "directive", e.Directive.String(),
			"restarts", e.Restarts, "delay", e.Delay, "error", e.Failure)
		b.events.emit(Event{Kind: EventSupervised, Agent: e.Agent, Time: e.Time, Supervision: &e})
	})
	b.ctx, b.cancel = context.WithCancel(context.Background())
	if cfg.EnableHistory {
		b.history = newHistory(cfg.MaxHistorySize)
	}
	b.observe(cfg.Observers)
	dlqBox := mailbox.New(mailbox.Config{Capacity: cfg.DLQMaxSize, Drop: b.dropDeadLetter})
	b.dlqPID, err = system.Root.SpawnNamed(deadletter.Actor(b.dlq).Configure(actor.WithMailbox(dlqBox.Producer())), deadLetterActor)
	if err != nil {
		return nil, fmt.Errorf("agentbus: start the dead-letter actor: %w", err)
	}
	b.router, err = routing.New(system, cfg.MailboxSize, b.shared, handlerRunner{b}, b.routerUndeliverable)
	if err != nil {
		return nil, err
	}
	b.dlSub = system.EventStream.Subscribe(func(evt any) {
		if d, ok := evt.(*actor.DeadLetterEvent); ok {
			b.protoDeadLetter(d)
		}
	})
	if cfg.Cluster != nil { // first, so that recovered durable agents claim their names
		if err := b.startCluster(); err != nil {
			_ = b.Shutdown(context.Background())
			return nil, err
		}
	}
	if err := b.recoverDurable(); err != nil {
		_ = b.Shutdown(context.Background())
		return nil, err
	}
	return b, nil
}

// ActorSystem returns the protoactor actor system the agents run in, for
// programs that mix agents with their own protoactor actors.
func (b *Bus) ActorSystem() *actor.ActorSystem { return b.system }

// SpawnOption configures one agent at Spawn.
type SpawnOption func(*spawnOptions) error

type spawnOptions struct {
	mailboxSize int
	strategy    supervisor.Strategy
	durable     bool // see WithDurable
	handOff     bool // see WithHandOff
	detached    bool // a durable agent recovered at New, with no handler yet
}

// WithSupervisor sets how the agent is supervised when its handler panics
// (or returns an error its strategy's decider escalates); the default is
// supervisor.Default(). An invalid strategy makes Spawn fail with
// ErrInvalidAgent.
func WithSupervisor(s supervisor.Strategy) SpawnOption {
	return func(o *spawnOptions) error {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidAgent, err)
		}
		o.strategy = s
		return nil
	}
}

// WithMailboxSize sets the agent's mailbox capacity (default
// Config.MailboxSize). A size below 1 makes Spawn fail with ErrInvalidAgent.
func WithMailboxSize(n int) SpawnOption {
	return func(o *spawnOptions) error {
		if n < 1 {
			return fmt.Errorf("%w: mailbox size %d, want at least 1", ErrInvalidAgent, n)
		}
		o.mailboxSize = n
		return nil
	}
}

// Spawn starts an agent named name that runs h, and returns its PID. The
// agent can be reached by name through the bus and by PID through protoactor.
// It does not block. It returns ErrInvalidAgent for a bad name, a nil handler
// or a bad option; ErrAgentExists if the name is taken (by an agent or by a
// protoactor actor of the same system); ErrClosed after Shutdown.
func (b *Bus) Spawn(name string, h Handler, opts ...SpawnOption) (*actor.PID, error) {
	if err := actors.ValidateName(name); err != nil {
		return nil, err
	}
	if actors.NilHandler(h) {
		return nil, fmt.Errorf("%w: nil handler for %q", ErrInvalidAgent, name)
	}
	o := spawnOptions{mailboxSize: b.cfg.MailboxSize}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidAgent)
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return b.spawn(name, h, o)
}

// spawn is Spawn with its options read.
func (b *Bus) spawn(name string, h Handler, o spawnOptions) (*actor.PID, error) {
	if o.durable {
		pid, attached, wrapped, err := b.spawnDurable(name, h, o)
		if attached || err != nil {
			return pid, err
		}
		h = wrapped
	}
	spawned := false
	if b.cluster != nil { // the name is the cluster's
		done, err := b.clusterClaim(name)
		if err != nil {
			return nil, err
		}
		defer func() { done(spawned) }()
		h = b.clusterGate(name, h)
	}
	b.spawnMu.Lock()
	defer b.spawnMu.Unlock()
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if b.agent(name) != nil {
		return nil, fmt.Errorf("%w: %q", ErrAgentExists, name)
	}
	mb := mailbox.New(mailbox.Config{
		Capacity: o.mailboxSize,
		Shared:   b.shared,
		Drop:     func(v any, why error) { b.dropped(name, v, why, false) },
		Latency:  b.stats.latencyShard(),
	})
	a := actors.NewAgent(b.ctx, name, h, mb, b.hooks)
	if o.durable {
		a.SetDurable()
		if o.detached { // it waits, suspended, for a handler to attach
			mb.PostSystemMessage(&actor.SuspendMailbox{})
		}
	}
	b.sup.Add(name, name, o.strategy)
	pid, err := b.system.Root.SpawnNamed(a.Props(b.sup).Configure(actor.WithDispatcher(b.pool)), name)
	if err != nil {
		b.sup.Remove(name)
		if errors.Is(err, actor.ErrNameExists) {
			return nil, fmt.Errorf("%w: %q is taken by another actor", ErrAgentExists, name)
		}
		return nil, fmt.Errorf("agentbus: spawn %q: %w", name, err)
	}
	a.SetPID(pid)
	b.agentsMu.Lock()
	if old, ok := b.agents.Load(name); ok {
		old.Unregister() // replaced without unregister: see agent
	}
	b.agents.Store(name, a)
	b.agentsGen.Add(1)
	b.agentsMu.Unlock()
	if o.durable {
		if err := b.spawned(a, h, o); err != nil {
			a.Mailbox().Close(err)
			b.system.Root.Stop(pid)
			return nil, fmt.Errorf("agentbus: spawn %q: record the durable agent: %w", name, err)
		}
	}
	b.log.Info("agent spawned", "agent", name, "mailbox", o.mailboxSize, "durable", o.durable)
	spawned = true
	return pid, nil
}

// PID returns the PID of the agent named name, and whether it exists. It does
// not block.
func (b *Bus) PID(name string) (*actor.PID, bool) {
	a := b.agent(name)
	if a == nil {
		return nil, false
	}
	return a.PID(), true
}

// Agents returns the names of the running agents, sorted. It does not block.
func (b *Bus) Agents() []string {
	names := make([]string, 0, b.agents.Size())
	b.agents.Range(func(name string, _ *actors.Agent) bool {
		names = append(names, name)
		return true
	})
	slices.Sort(names)
	return names
}

// agent returns the running agent named name, or nil. It does not block.
//
// A send looks its recipient up here, so it is worth a cache in front of the
// registry's map: a slot chosen from the name's length and three of its
// bytes holds the agent last found for a name that maps there. A cached agent
// is taken only if it has the name and was not unregistered; an agent is
// marked unregistered before another can take its name, so the cache never
// answers with an agent the registry no longer lists. A miss costs the map
// lookup and one pointer store.
func (b *Bus) agent(name string) *actors.Agent {
	slot := &b.nameCache[nameSlot(name)]
	if a := slot.Load(); a != nil && a.Name() == name && !a.Unregistered() {
		return a
	}
	a, _ := b.agents.Load(name)
	if a != nil {
		slot.Store(a)
	}
	return a
}

// nameCacheSlots is the size of Bus.nameCache.
const nameCacheSlots = 64

// nameSlot picks name's slot in Bus.nameCache from its length and its first,
// middle and last bytes: names that differ only elsewhere share a slot, which
// costs them misses, never a wrong answer.
func nameSlot(name string) int {
	h := uint(len(name))
	if len(name) > 0 {
		h = h*31 + uint(name[0])
		h = h*31 + uint(name[len(name)/2])
		h = h*31 + uint(name[len(name)-1])
	}
	return int(h % nameCacheSlots)
}

// snapshot returns the running agents.
func (b *Bus) snapshot() []*actors.Agent {
	all := make([]*actors.Agent, 0, b.agents.Size())
	b.agents.Range(func(_ string, a *actors.Agent) bool {
		all = append(all, a)
		return true
	})
	return all
}

// unregister removes a from the registry if it is still registered under
// its name.
func (b *Bus) unregister(a *actors.Agent) {
	b.agentsMu.Lock()
	if cur, _ := b.agents.Load(a.Name()); cur == a {
		a.Unregister() // before the name is free: see agent
		b.agents.Delete(a.Name())
		b.agentsGen.Add(1)
	}
	b.agentsMu.Unlock()
}

// Stop stops the agent named name and waits until it has stopped. The stop
// takes effect at once: the agent takes no new message (a Send to it returns
// ErrNoRecipient) and the messages queued for it are dead-lettered with reason
// agent_stopped. A message its handler is handling completes, and the agent
// has stopped once the handler returns; its name is free again once Stop
// returns nil.
//
// It returns ErrNoRecipient if there is no such agent. If ctx ends while the
// handler is still running, it returns an error wrapping ErrStopping and
// ctx's error: the stop is in effect and completes when the handler returns;
// call Stop again to wait for it.
func (b *Bus) Stop(ctx context.Context, name string) error {
	return b.StopCause(ctx, name, nil)
}

// StopCause is Stop with the cause given to the messages still queued: they
// are dead-lettered with the reason that matches cause (transport_closed for
// ErrTransportClosed, shutdown for ErrShutdown, agent_stopped otherwise) and
// an error wrapping it. A nil cause is ErrAgentStopped. It blocks and returns
// like Stop.
func (b *Bus) StopCause(ctx context.Context, name string, cause error) error {
	a := b.agent(name)
	if a == nil {
		return fmt.Errorf("%w: %q", ErrNoRecipient, name)
	}
	if cause == nil {
		cause = ErrAgentStopped
	}
	// Close first, so that the stop is in effect at once and everything
	// queued gets cause; the agent's own Close on Stopped is then a no-op
	// and only drops its batch.
	a.Mailbox().Close(cause)
	b.system.Root.Stop(a.PID())
	select {
	case <-a.Done():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %q is finishing its handler: %w", ErrStopping, name, context.Cause(ctx))
	}
}

// Backpressure reports how full the bus is.
type Backpressure struct {
	limit *mailbox.Limit
}

// Pending returns how many messages are queued in all mailboxes together.
func (p Backpressure) Pending() int { return p.limit.Used() }

// MaxPending returns Config.Backpressure.MaxPending.
func (p Backpressure) MaxPending() int { return p.limit.Max() }

// Backpressure returns the bus-wide backpressure gauge.
func (b *Bus) Backpressure() Backpressure { return Backpressure{b.shared} }

// Shutdown stops the bus, like http.Server.Shutdown: it refuses new messages
// at once (Send returns ErrClosed; responses to pending requests still
// arrive), waits for queued messages to be handled, then stops every agent and
// waits for them. If ctx ends first, what is still queued is dead-lettered
// with reason shutdown, agents are stopped without waiting, pending requests
// fail with ErrClosed, and Shutdown returns ctx's error. It is safe to call
// more than once: later calls wait for the first to finish and return its
// result. Called from a handler (with the handler's ctx), it does not wait for
// that handler's own agent, which stops once the handler returns; but
// messages queued behind the handler cannot drain while it waits, so give
// such a ctx a deadline.
func (b *Bus) Shutdown(ctx context.Context) error {
	b.spawnMu.Lock() // so no Spawn is half done once closed is set
	first := b.closed.CompareAndSwap(false, true)
	b.spawnMu.Unlock()
	if !first {
		select {
		case <-b.shutdownDone:
			return b.shutdownErr
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	b.log.Info("bus shutting down", "pending", b.shared.Used())
	b.shutdownDurable() // durable agents keep their queues in the store

	// Drain, then stop the topic actors and the router and wait for them:
	// what they were fanning out lands in agents that still run. Drain
	// again, then stop the agents.
	err := b.shared.WaitZero(ctx)
	if err == nil {
		err = b.leaveCluster(ctx)
	}
	if err == nil {
		err = b.stopTopics(ctx, false)
	}
	b.router.Stop(b.system, nil)
	if err == nil {
		select {
		case <-b.router.Done():
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
	}
	if err == nil {
		err = b.shared.WaitZero(ctx)
	}
	if err == nil {
		err = b.stopAgents(ctx, actors.FromContext(ctx))
	}
	if err != nil {
		b.router.Stop(b.system, ErrShutdown)
		b.spawnMu.Lock()
		cut := append(b.snapshot(), b.handlers...)
		b.spawnMu.Unlock()
		for _, a := range cut {
			a.Mailbox().Close(ErrShutdown)
			b.system.Root.Stop(a.PID())
		}
		_ = b.stopTopics(context.Background(), true) // topic actors never block: they retire at once
		b.log.Warn("bus shutdown cut short", "error", err)
	}
	b.calls.Range(func(k, v any) bool {
		if b.dropCall(k.(string), v.(*call)) {
			v.(*call).ch <- result{err: ErrClosed}
		}
		return true
	})
	b.stopRetries()
	b.stopCluster()
	b.sup.Close()
	b.system.Root.Stop(b.dlqPID)
	b.cancel()
	b.closeDurable()
	b.system.EventStream.Unsubscribe(b.dlSub)
	b.system.Shutdown()
	b.pool.Close()
	b.events.close()
	b.shutdownErr = err
	close(b.shutdownDone)
	return err
}

// stopAgents stops every agent and waits for them, except for self (the
// agent whose handler called Shutdown, if any), which cannot stop before its
// handler returns.
func (b *Bus) stopAgents(ctx context.Context, self *actors.Agent) error {
	all := b.snapshot()
	b.spawnMu.Lock()
	all = append(all, b.handlers...)
	b.spawnMu.Unlock()
	for _, a := range all {
		b.system.Root.Stop(a.PID())
	}
	for _, a := range all {
		if a == self {
			continue
		}
		select {
		case <-a.Done():
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// agentThroughput is how many messages an agent handles before its
// goroutine yields (protoactor's default dispatcher's figure), and
// agentIdleGoroutines how many goroutines that ran an agent wait for the
// next one to wake (see mailbox.Pool).
const (
	agentThroughput     = 300
	agentIdleGoroutines = 64
)
