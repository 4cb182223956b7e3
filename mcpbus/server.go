package mcpbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
)

// Defaults and bounds of Options and of the tools' arguments.
const (
	// DefaultMaxInbox is Options.MaxInbox's default: the most deliveries
	// one inbox call returns.
	DefaultMaxInbox = 100
	// MaxInboxWait is the longest wait_ms an inbox call accepts (1 min).
	MaxInboxWait = time.Minute
	// MaxRequestTimeout is the longest timeout_ms a request call accepts
	// (10 min).
	MaxRequestTimeout = 10 * time.Minute
	// DefaultRequestTimeout is a request call's timeout when it gives none.
	DefaultRequestTimeout = 30 * time.Second
	// inboxLinger is how long an inbox call that has taken a delivery
	// waits for the next one before it returns what it has: the client
	// hands the agent's deliveries over one at a time, and between two of
	// them it acknowledges and credits the first.
	inboxLinger = 20 * time.Millisecond
	// maxAwaitingReply bounds the requests taken from the inbox and not yet
	// replied to that the server remembers; past it the oldest is
	// forgotten (its requester then gets the daemon's ack timeout).
	maxAwaitingReply = 64
)

// Options configures a Server.
type Options struct {
	// Agent is the name the server registers on the daemon's bus, and the
	// sender of everything its tools send. Required.
	Agent string
	// Logger receives the server's warnings (a request forgotten before its
	// reply). Nil discards.
	Logger *slog.Logger
	// MaxInbox caps the deliveries one inbox call returns (default
	// DefaultMaxInbox).
	MaxInbox int
	// Version is the server version announced to MCP clients (default
	// "dev").
	Version string
}

// Server is an MCP server whose tools act on an agentbus daemon as one
// registered agent. Its methods are safe for concurrent use; one Server may
// serve many MCP sessions at once (over streamable HTTP), and they all act as
// the same agent and share its inbox.
type Server struct {
	c      *client.Client
	agent  string
	log    *slog.Logger
	max    int
	mcp    *mcp.Server
	offers chan *agentbus.Message // unbuffered: a delivery is taken when received
	done   chan struct{}          // closed by Close
	once   sync.Once

	mu       sync.Mutex
	awaiting map[string]*agentbus.Message // requests taken, by request ID, not yet replied to
	order    []string                     // their IDs, oldest first
}

// New registers opts.Agent on the daemon c is connected to and returns the
// MCP server that acts as it. The agent's deliveries wait, bounded, for the
// inbox tool (see the package doc); c must be used by nothing else that
// registers the same name. New blocks for the daemon's answer. Errors: those
// of client.Client.Register (agentbus.ErrAgentExists, ErrInvalidAgent, the
// connection's), or an error for a bad Options.
func New(ctx context.Context, c *client.Client, opts Options) (*Server, error) {
	if c == nil {
		return nil, errors.New("mcpbus: nil client")
	}
	if opts.Agent == "" {
		return nil, fmt.Errorf("mcpbus: %w: Options.Agent is empty", agentbus.ErrInvalidAgent)
	}
	if opts.MaxInbox < 0 {
		return nil, fmt.Errorf("mcpbus: negative MaxInbox %d", opts.MaxInbox)
	}
	if opts.MaxInbox == 0 {
		opts.MaxInbox = DefaultMaxInbox
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	s := &Server{
		c: c, agent: opts.Agent, log: opts.Logger, max: opts.MaxInbox,
		offers: make(chan *agentbus.Message), done: make(chan struct{}),
		awaiting: make(map[string]*agentbus.Message),
	}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "agentbus", Title: "agentbus", Version: opts.Version},
		&mcp.ServerOptions{Instructions: instructions(opts.Agent), Logger: opts.Logger})
	if err := s.addTools(); err != nil {
		return nil, err
	}
	s.addResources()
	if err := c.Register(ctx, opts.Agent, agentbus.HandlerFunc(s.deliver)); err != nil {
		return nil, fmt.Errorf("mcpbus: register %q: %w", opts.Agent, err)
	}
	return s, nil
}

// instructions tells the model what the server is.
func instructions(agent string) string {
	return "You are the agent " + agent + " on an agentbus message bus. Other agents reach you by that " +
		"name. Use send, request and publish to talk to them, subscribe to hear topics, and inbox to " +
		"read what was sent to you; answer a request you took from the inbox with reply, promptly " +
		"(the bus gives up on it after its ack timeout, 30 s by default). Errors carry the bus's code."
}

// Agent returns the name the server acts as.
func (s *Server) Agent() string { return s.agent }

// MCP returns the underlying MCP server, to run on any transport of the SDK
// (mcp.Server.Run, or mcp.NewStreamableHTTPHandler).
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Run serves one MCP session on t (mcp.StdioTransport for a subprocess of
// an MCP client) until the client disconnects or ctx ends. It blocks. It
// returns the SDK's error, or nil when the session ended normally.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	return s.mcp.Run(ctx, t)
}

// HTTPHandler returns an http.Handler that serves MCP over streamable HTTP,
// every session acting as the server's agent. It does not block.
func (s *Server) HTTPHandler() http.Handler {
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.mcp }, nil)
}

// Close unregisters the agent and stops taking deliveries: the one the
// client is handing over, and any it still holds, are refused (the daemon
// dead-letters them as handler_error, or redelivers a requires_ack one), so
// none is lost unseen. Closing the client instead has the same effect, and
// what the daemon had not handed over is dead-lettered as transport_closed.
// It blocks for the daemon's answer and returns the error of
// client.Client.Unregister; a second call returns nil.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.c.Unregister(ctx, s.agent)
	})
	return err
}

// deliver is the agent's handler: it waits until an inbox call takes m.
// Until then the client holds the agent's further deliveries in its queue,
// and credits none of them, so the daemon holds the rest in the agent's
// mailbox and senders feel its backpressure. A delivery is acknowledged
// (when it requires an ack) and credited only once an inbox call has taken
// it.
func (s *Server) deliver(ctx context.Context, m *agentbus.Message) error {
	select {
	case s.offers <- m:
		return nil
	case <-s.done:
		return fmt.Errorf("mcpbus: %s closed before its inbox took %s: %w", s.agent, m.ID, agentbus.ErrAgentStopped)
	case <-ctx.Done():
		return fmt.Errorf("mcpbus: %s closed before its inbox took %s: %w", s.agent, m.ID, agentbus.ErrTransportClosed)
	}
}

// take returns up to n deliveries: it waits up to wait (at least
// inboxLinger) for the first, then takes more while each comes within
// inboxLinger of the last. Requests among them are remembered for reply.
func (s *Server) take(ctx context.Context, n int, wait time.Duration) []*agentbus.Message {
	var out []*agentbus.Message
	timer := time.NewTimer(max(wait, inboxLinger))
	defer timer.Stop()
	for len(out) < n {
		select {
		case m := <-s.offers:
			out = append(out, m)
			if m.Type == agentbus.TypeRequest {
				s.await(m)
			}
			timer.Reset(inboxLinger)
		case <-timer.C:
			return out
		case <-ctx.Done():
			return out
		case <-s.done:
			return out
		}
	}
	return out
}

// await remembers request m until it is replied to.
func (s *Server) await(m *agentbus.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) >= maxAwaitingReply {
		old := s.order[0]
		s.order = s.order[1:]
		delete(s.awaiting, old)
		s.log.Warn("request forgotten before its reply", "agent", s.agent, "request_id", old)
	}
	s.awaiting[m.RequestID] = m
	s.order = append(s.order, m.RequestID)
}

// awaited returns the request taken with id, if it awaits a reply.
func (s *Server) awaited(id string) (*agentbus.Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.awaiting[id]
	return m, ok
}

// replied forgets request id.
func (s *Server) replied(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.awaiting, id)
	for i, x := range s.order {
		if x == id {
			s.order = append(s.order[:i], s.order[i+1:]...)
			break
		}
	}
}
