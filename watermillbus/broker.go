package watermillbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/supervisor"
)

var (
	// ErrClosed: the Broker, Publisher or Subscriber was closed.
	ErrClosed = errors.New("watermillbus: closed")
	// ErrTooManyQueues: Config.MaxQueues queues exist; a Subscribe to a
	// new topic (or consumer group) is refused.
	ErrTooManyQueues = errors.New("watermillbus: too many queues")
	// ErrNacked is the error the queue's handler returns for a delivery
	// the Watermill subscriber nacked: the bus redelivers it (see
	// Subscriber).
	ErrNacked = errors.New("watermillbus: nacked")
)

// DefaultMaxQueues is Config.MaxQueues's default.
const DefaultMaxQueues = 1024

// Config configures a Broker. The zero value is usable.
type Config struct {
	// Sender is the Sender of the messages its Publishers publish. In
	// process any name will do; over the socket it must be empty or an
	// agent the client registered. Default: empty.
	Sender string
	// QueueSize is the mailbox capacity of each queue agent, in process
	// (default: the bus's Config.MailboxSize). Over the socket the
	// daemon's --mailbox-size applies instead.
	QueueSize int
	// MaxQueues bounds the queues (topic and consumer group pairs) the
	// Broker holds (default DefaultMaxQueues). Over the socket each is an
	// agent of the client's connection, which the daemon's --max-agents
	// bounds too (64 by default).
	MaxQueues int
	// Logger receives what goes wrong in the background (a queue that could
	// not be removed at Close) at Warn. Nil discards.
	Logger *slog.Logger
}

// Broker connects Watermill to one bus: in process (NewLocal) or over the
// daemon's socket through a client (NewRemote). Its Publishers publish on
// the bus's topics; its Subscribers read from queues, one per topic and
// consumer group, each a bus agent subscribed to the topic that holds what
// was published until a Subscriber takes it. Queues outlive Subscribers:
// they last until the Broker is closed (over the socket, at most as long as
// the client's connection). The Broker's methods are safe for concurrent use.
type Broker struct {
	be  backend
	cfg Config
	log *slog.Logger

	done chan struct{} // closed by Close
	once sync.Once

	createMu sync.Mutex // serializes creating queues, so a name is created once
	mu       sync.Mutex // guards queues and closed; never held while calling the bus
	queues   map[string]*queue
	closed   bool
}

// backend is the bus side of a Broker.
type backend interface {
	publish(ctx context.Context, m *agentbus.Message) error
	register(ctx context.Context, name string, h agentbus.Handler, size int) error
	subscribe(ctx context.Context, name, topic string) error
	unregister(ctx context.Context, name string) error
}

// NewLocal returns a Broker on bus, in process. It does not block. It
// returns an error for a nil bus or a negative Config field.
func NewLocal(bus *agentbus.Bus, cfg Config) (*Broker, error) {
	if bus == nil {
		return nil, errors.New("watermillbus: nil bus")
	}
	return newBroker(local{bus}, cfg)
}

// NewRemote returns a Broker on the bus of the daemon c is connected to. The
// Broker's queues are agents registered by c; closing c ends them (what they
// held is dead-lettered by the daemon, never lost unseen). It does not
// block. It returns an error for a nil client or a negative Config field.
func NewRemote(c *client.Client, cfg Config) (*Broker, error) {
	if c == nil {
		return nil, errors.New("watermillbus: nil client")
	}
	return newBroker(remote{c}, cfg)
}

func newBroker(be backend, cfg Config) (*Broker, error) {
	if cfg.QueueSize < 0 || cfg.MaxQueues < 0 {
		return nil, fmt.Errorf("watermillbus: negative QueueSize or MaxQueues")
	}
	if cfg.MaxQueues == 0 {
		cfg.MaxQueues = DefaultMaxQueues
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Broker{be: be, cfg: cfg, log: log, done: make(chan struct{}), queues: make(map[string]*queue)}, nil
}

// Close removes the Broker's queues from the bus and makes its Publishers
// and Subscribers refuse further work with ErrClosed. A delivery a queue
// was offering, or a Subscriber was processing, is refused (the bus retries
// it, then dead-letters it); what the queues still held is dead-lettered by
// the bus (agent_stopped). Close Subscribers first to have their channels
// closed in order. It blocks until the bus has removed the queues and
// returns the first error doing so; a second call returns nil.
func (b *Broker) Close() error {
	var first error
	b.once.Do(func() {
		close(b.done)
		b.createMu.Lock() // no queue is half made
		b.mu.Lock()
		b.closed = true
		queues := b.queues
		b.queues = map[string]*queue{}
		b.mu.Unlock()
		b.createMu.Unlock()
		for name := range queues {
			if err := b.be.unregister(context.Background(), name); err != nil {
				b.log.Warn("queue not removed", "agent", name, "error", err)
				if first == nil {
					first = err
				}
			}
		}
	})
	return first
}

// queueFor returns the queue of topic for group, creating it (an agent
// subscribed to topic) if needed.
func (b *Broker) queueFor(ctx context.Context, group, topic string) (*queue, error) {
	name := queueName(group, topic)
	b.mu.Lock()
	q, closed := b.queues[name], b.closed
	b.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if q != nil {
		return q, nil
	}
	b.createMu.Lock()
	defer b.createMu.Unlock()
	b.mu.Lock()
	q, closed, n := b.queues[name], b.closed, len(b.queues)
	b.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case q != nil:
		return q, nil
	case n >= b.cfg.MaxQueues:
		return nil, fmt.Errorf("%w: %d", ErrTooManyQueues, b.cfg.MaxQueues)
	}
	q = &queue{name: name, topic: topic, offers: make(chan *offer), done: b.done}
	if err := b.be.register(ctx, name, q, b.cfg.QueueSize); err != nil {
		return nil, fmt.Errorf("watermillbus: queue for %q: %w", topic, err)
	}
	if err := b.be.subscribe(ctx, name, topic); err != nil {
		if uerr := b.be.unregister(context.Background(), name); uerr != nil {
			b.log.Warn("queue not removed", "agent", name, "error", uerr)
		}
		return nil, fmt.Errorf("watermillbus: subscribe %q: %w", topic, err)
	}
	b.mu.Lock()
	b.queues[name] = q
	b.mu.Unlock()
	return q, nil
}

// queueName is the agent name of the queue of topic for group:
// "watermill:GROUP:TOPIC", or, when that is not a valid agent name (too
// long, or a character names may not have), the topic's hash in its place.
func queueName(group, topic string) string {
	name := "watermill:" + group + ":" + topic
	if actors.ValidateName(name) == nil {
		return name
	}
	sum := sha256.Sum256([]byte(topic))
	return "watermill:" + group + ":#" + hex.EncodeToString(sum[:16])
}

// validGroup checks a consumer group name: it becomes part of agent names.
func validGroup(g string) error {
	if strings.ContainsRune(g, ':') || len(g) > 64 {
		return fmt.Errorf("%w: consumer group %q: at most 64 bytes, no ':'", agentbus.ErrInvalidAgent, g)
	}
	if g != "" {
		if err := actors.ValidateName(g); err != nil {
			return fmt.Errorf("consumer group: %w", err)
		}
	}
	return nil
}

// local is the in-process backend.
type local struct{ bus *agentbus.Bus }

func (l local) publish(ctx context.Context, m *agentbus.Message) error {
	_, err := l.bus.Send(ctx, m)
	return err
}

func (l local) register(_ context.Context, name string, h agentbus.Handler, size int) error {
	opts := []agentbus.SpawnOption{agentbus.WithSupervisor(supervisor.Resuming())}
	if size > 0 {
		opts = append(opts, agentbus.WithMailboxSize(size))
	}
	_, err := l.bus.Spawn(name, h, opts...)
	return err
}

func (l local) subscribe(_ context.Context, name, topic string) error {
	return l.bus.Subscribe(topic, name)
}

func (l local) unregister(ctx context.Context, name string) error {
	err := l.bus.Stop(ctx, name)
	if errors.Is(err, agentbus.ErrNoRecipient) {
		return nil // already gone (the bus shut down)
	}
	return err
}

// remote is the backend over the socket.
type remote struct{ c *client.Client }

func (r remote) publish(ctx context.Context, m *agentbus.Message) error {
	_, err := r.c.PublishMessage(ctx, m)
	return err
}

func (r remote) register(ctx context.Context, name string, h agentbus.Handler, _ int) error {
	return r.c.Register(ctx, name, h)
}

func (r remote) subscribe(ctx context.Context, name, topic string) error {
	return r.c.Subscribe(ctx, name, topic)
}

func (r remote) unregister(ctx context.Context, name string) error {
	err := r.c.Unregister(ctx, name)
	if errors.Is(err, client.ErrClosed) || errors.Is(err, client.ErrDisconnected) {
		return nil // the connection's end removed it
	}
	return err
}

// queue is the handler of a queue agent: it offers each delivery to the
// Subscribers reading the queue, one delivery at a time, and waits for its
// Ack or Nack. Meanwhile the bus holds the rest in the agent's mailbox.
type queue struct {
	name   string
	topic  string
	offers chan *offer // unbuffered: an offer is taken when received
	done   <-chan struct{}
}

// offer is one delivery handed to a Subscriber. The Subscriber sends the
// outcome on result (buffered), exactly once: nil for Ack, ErrNacked for
// Nack, errAbandoned when it stopped before either.
type offer struct {
	m      *agentbus.Message
	result chan error
}

// errAbandoned: the Subscriber that took a delivery stopped before it was
// acked or nacked; the queue offers it again.
var errAbandoned = errors.New("watermillbus: abandoned")

// Handle offers m until a Subscriber acks or nacks it. A delivery abandoned
// by a Subscriber that stopped is offered again (that is no failure of m);
// a nacked one is returned as ErrNacked, so the bus redelivers it. When the
// Broker or the bus closes first, it returns an error, which the bus also
// redelivers or dead-letters.
func (q *queue) Handle(ctx context.Context, m *agentbus.Message) error {
	for {
		o := &offer{m: m, result: make(chan error, 1)}
		select {
		case q.offers <- o:
		case <-q.done:
			return fmt.Errorf("%w: queue %s", ErrClosed, q.name)
		case <-ctx.Done():
			return fmt.Errorf("watermillbus: queue %s: %w", q.name, context.Cause(ctx))
		}
		select {
		case err := <-o.result:
			if !errors.Is(err, errAbandoned) {
				return err
			}
		case <-q.done:
			return fmt.Errorf("%w: queue %s", ErrClosed, q.name)
		case <-ctx.Done():
			return fmt.Errorf("watermillbus: queue %s: %w", q.name, context.Cause(ctx))
		}
	}
}
