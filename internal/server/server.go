// Package server is the agentbus daemon's core: it serves the protocol of
// PROTOCOL.md over any transport.Listener, on top of one agentbus.Bus.
//
// Each connection has a reader goroutine, a lane goroutine, a writer
// goroutine, and at most Config.MaxRequests goroutines for requests in
// flight (one of which stays, idle, for the next request). The reader
// decodes frames and carries out most operations at once; the ordered ones
// (send, publish, respond, request, sync) go to the lane, which carries
// them out one at a time in the order they came, so that a send waiting
// for room in a full mailbox holds up only the ordered operations behind
// it (at most Config.MaxQueuedOps), never a ping, a credit or an ack. A
// request or sync that finds the lane idle is carried out by the reader
// itself. Each
// agent a client registers is a real agent of the bus whose handler
// forwards its messages to the connection, so mailbox bounds, priority
// order, supervision, TTL and dead letters apply to remote agents exactly
// as to local ones.
//
// Frames to a connection go out in the order they are emitted. An answer is
// written by the goroutine that has it when nothing is queued ahead of it
// (no hand-off), else queued for the writer, which writes whatever has
// queued up in one system call. Deliveries always go through the writer,
// which encodes them (see item), and so do the reader's answers while more
// of the client's frames wait to be read: a client that pipelines gets its
// answers and deliveries in a few writes rather than one each.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/transport"
)

// Defaults for Config fields left zero.
const (
	DefaultOutboundQueue = 64
	DefaultMaxAgents     = 64
	DefaultMaxRequests   = 128
	DefaultAckTimeout    = 30 * time.Second
	DefaultMaxBadFrames  = 32
	DefaultMaxList       = 1000
	DefaultMaxConns      = 1024
)

// ErrInvalidConfig: a Config field is unusable.
var ErrInvalidConfig = errors.New("server: invalid config")

// Config configures a Server.
type Config struct {
	// Bus is the bus the server serves. Required. The server does not
	// shut it down.
	Bus *agentbus.Bus
	// Logger receives a summary of the connections at Info when they
	// change (at most once per SummaryInterval), each connection's
	// lifecycle and protocol errors at Debug. Nil discards.
	Logger *slog.Logger
	// Name is announced in the welcome frame (e.g. "agentbus/0.1").
	Name string
	// MaxFrameSize is announced in the welcome frame: the transport's cap.
	// Default transport.DefaultMaxFrameSize.
	MaxFrameSize int
	// OutboundQueue bounds the frames waiting to be written to one
	// connection (default 64). When it is full, the connection's agents
	// wait in their handlers, so their mailboxes fill and senders feel the
	// bus's own backpressure; daemon memory never grows with a slow
	// client.
	OutboundQueue int
	// MaxAgents bounds the agents one connection may register (default 64).
	MaxAgents int
	// MaxRequests bounds one connection's requests in flight (default
	// 128); one more is refused with code too_many_requests.
	MaxRequests int
	// AckTimeout is how long a delivered requires_ack message waits for
	// the client's ack before the delivery counts as failed and is retried
	// by the bus (default 30 s).
	AckTimeout time.Duration
	// MaxBadFrames is how many bad frames in a row (not JSON, unknown op,
	// oversized, …) a connection may send before it is closed (default 32).
	// Each one is answered with an error frame.
	MaxBadFrames int
	// MaxList caps the entries of one dead_letters or history answer
	// (default 1000).
	MaxList int
	// MaxConns bounds the connections served at once (default 1024). One
	// more is sent an error frame (too_many_connections) and closed.
	MaxConns int
	// SummaryInterval is the least time between two of the Info lines that
	// sum up the connections and agents (default 10 s).
	SummaryInterval time.Duration
	// MaxQueuedOps bounds the ordered operations (send, publish, respond,
	// request, sync) of one connection that wait to be carried out
	// (default 1024). They are carried out one at a time, in order; while
	// one waits for room in a full mailbox, the connection's other
	// operations go on, and new ordered ones queue up to this bound, after
	// which the daemon reads nothing more from the connection until room
	// frees.
	MaxQueuedOps int
}

func (c *Config) withDefaults() error {
	if c.Bus == nil {
		return fmt.Errorf("%w: nil Bus", ErrInvalidConfig)
	}
	if c.OutboundQueue < 0 || c.MaxAgents < 0 || c.MaxRequests < 0 || c.AckTimeout < 0 || c.MaxBadFrames < 0 ||
		c.MaxList < 0 || c.MaxFrameSize < 0 || c.MaxConns < 0 || c.MaxQueuedOps < 0 || c.SummaryInterval < 0 {
		return fmt.Errorf("%w: negative limit", ErrInvalidConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Name == "" {
		c.Name = "agentbus"
	}
	setDefault(&c.MaxFrameSize, transport.DefaultMaxFrameSize)
	setDefault(&c.OutboundQueue, DefaultOutboundQueue)
	setDefault(&c.MaxAgents, DefaultMaxAgents)
	setDefault(&c.MaxRequests, DefaultMaxRequests)
	setDefault(&c.AckTimeout, DefaultAckTimeout)
	setDefault(&c.MaxBadFrames, DefaultMaxBadFrames)
	setDefault(&c.MaxList, DefaultMaxList)
	setDefault(&c.MaxConns, DefaultMaxConns)
	setDefault(&c.MaxQueuedOps, DefaultMaxQueuedOps)
	setDefault(&c.SummaryInterval, DefaultSummaryInterval)
	return nil
}

func setDefault[T int | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}

// Server serves the protocol. Create it with New, run Serve, stop it with
// Close.
type Server struct {
	cfg Config
	bus *agentbus.Bus
	log *slog.Logger

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup // connections' goroutines

	nextID  atomic.Uint64
	refused atomic.Uint64 // connections closed for flooding bad frames
	sum     summary       // the Info lines that sum up the connections
}

// New returns a server for cfg.Bus. It returns an error wrapping
// ErrInvalidConfig for a nil Bus or a negative limit. It starts nothing.
func New(cfg Config) (*Server, error) {
	if err := cfg.withDefaults(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, bus: cfg.Bus, log: cfg.Logger, conns: map[*conn]struct{}{}}, nil
}

// Serve accepts connections from l and serves each until it closes. It
// blocks until ctx ends (returning nil), l is closed (nil), or Accept fails
// otherwise (that error). Connections stay open when Serve returns: Close
// ends them. Serve does not close l.
func (s *Server) Serve(ctx context.Context, l transport.Listener) error {
	for {
		t, err := l.Accept(ctx)
		switch {
		case err == nil:
		case errors.Is(err, transport.ErrClosed), ctx.Err() != nil:
			return nil
		default:
			return fmt.Errorf("server: accept on %s: %w", l.Addr(), err)
		}
		if err := s.serve(t); err != nil {
			s.refuse(t, err)
		}
	}
}

// refuse tells a connection the server will not serve it, briefly, and
// closes it.
func (s *Server) refuse(t transport.Conn, why error) {
	if errors.Is(why, protocol.ErrTooManyConns) {
		s.log.Warn("connection refused", "reason", why.Error())
		if b, err := protocol.Encode(protocol.ErrorFrame("", why)); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			_ = t.Send(ctx, b)
			cancel()
		}
	}
	_ = t.Close()
}

// ServeConn serves one connection already established (used by tests and
// by embedders with their own listeners). It does not block. It returns an
// error wrapping agentbus.ErrClosed if the server is closed, or
// protocol.ErrTooManyConns at MaxConns; then t is closed.
func (s *Server) ServeConn(t transport.Conn) error {
	if err := s.serve(t); err != nil {
		s.refuse(t, err)
		return err
	}
	return nil
}

// serve starts serving t, or says why not: the server is closed, or serves
// MaxConns connections already.
func (s *Server) serve(t transport.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("server: %w", agentbus.ErrClosed)
	}
	if len(s.conns) >= s.cfg.MaxConns {
		return fmt.Errorf("%w: the daemon serves %d", protocol.ErrTooManyConns, s.cfg.MaxConns)
	}
	c := newConn(s, t, s.nextID.Add(1))
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.changed(+1)
		c.run()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.changed(-1)
	}()
	return nil
}

// Conns returns how many connections are open. It does not block.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close closes every connection and waits for their goroutines. Each
// connection first gets until ctx ends to write what is queued for it
// (after a bus Shutdown drained the mailboxes, that is the last of their
// messages); then its agents are stopped and what is still queued for them
// is dead-lettered with reason transport_closed. Connections that arrive
// later are refused. It returns ctx's error if the writers did not finish in
// time (the connections are closed anyway). Safe to call more than once.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var err error
	for _, c := range conns {
		if e := c.flush(ctx); e != nil && err == nil {
			err = e
		}
		c.shut()
	}
	s.wg.Wait()
	s.flushSummary()
	return err
}
