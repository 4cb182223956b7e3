// Package client connects a Go program to an agentbus daemon over its Unix
// socket (see PROTOCOL.md). A Client registers agents whose handlers run in
// this process, and sends, publishes, requests and subscribes on the
// daemon's bus. It reconnects with backoff when the connection drops and
// registers its agents and subscriptions again.
//
// # Pipelining
//
// Sends go through a pipeline: frames are queued and written in batches
// (one system call for many), and at most Options.Window sends, publishes
// and replies are unconfirmed at a time; a sender waits while the window is
// full. SendAsync and PublishAsync return a Pending at once; Send and
// Publish return once the daemon has answered, and concurrent ones share
// the pipeline. Flush waits until everything sent before it is settled and
// reports every refusal. Guarantees: the sends of one Client are carried
// out by the daemon in the order they were queued; each is settled exactly
// once (accepted, refused with the daemon's error, or ErrDisconnected when
// its connection dropped first, whether or not the daemon carried it out);
// memory for sends in flight is bounded by the window. With a daemon that
// speaks protocol version 2, an asynchronous send gets no answer of its
// own: the sync that ends each write confirms the batch, and a refusal
// names its message, so a stream costs one answer per write, not per
// message.
//
// Errors from the daemon wrap the same sentinels as the library
// (agentbus.ErrNoRecipient, agentbus.ErrBackpressureTimeout, …), so
// errors.Is works across the socket.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/backoff"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/transport"
)

// ErrClosed: the Client was closed.
var ErrClosed = errors.New("client: closed")

// ErrDisconnected: the connection dropped while the operation was in flight;
// whether the daemon carried it out is unknown. The client reconnects on its
// own; retry if the operation is idempotent.
var ErrDisconnected = fmt.Errorf("client: disconnected: %w", agentbus.ErrTransportClosed)

// Letter is a dead letter as the daemon reports it.
type Letter = protocol.Letter

// TopicInfo is a subscribed topic and its subscribers, as Topics reports it.
type TopicInfo = protocol.TopicInfo

// Options configures a Client. The zero value is usable.
type Options struct {
	// Name is the client's name in the daemon's logs. Default: the
	// program's name.
	Name string
	// Logger receives reconnects at Info and handler failures at Warn.
	// Nil discards.
	Logger *slog.Logger
	// Dial opens a connection to the daemon. Default: a Unix socket at the
	// path given to Dial. Tests use an in-memory transport here.
	Dial func(ctx context.Context) (transport.Conn, error)
	// MinBackoff and MaxBackoff bound the waits between reconnection
	// attempts (defaults 50 ms and 5 s; each wait doubles, with jitter).
	MinBackoff, MaxBackoff time.Duration
	// NoReconnect makes a dropped connection final: operations then fail
	// with ErrDisconnected.
	NoReconnect bool
	// AgentQueue bounds the messages waiting for one agent's handler
	// (default 256). It is also the agent's window: the daemon has at most
	// this many deliveries to the agent in flight, and holds the rest in
	// the agent's mailbox (where the bus's bounds push back on senders)
	// until the handler has caught up. So a handler that is slow, or that
	// itself calls the daemon, never stalls the connection.
	AgentQueue int
	// OnDisconnect, if set, is called each time the live connection drops
	// (not when Close ends it), with why, before the client starts to
	// reconnect (or, with NoReconnect, gives up). It runs on the client's
	// reader goroutine: it must return quickly and not call Close.
	OnDisconnect func(err error)
	// OnReconnect, if set, is called each time the client has connected
	// again and registered its agents and their subscriptions anew, with
	// the errors of those it could not restore (nil when all were). It
	// runs on the client's reconnect goroutine: it must return quickly and
	// not call Close.
	OnReconnect func(restoreErr error)
	// Window bounds the sends, publishes and replies of this client that
	// the daemon has not confirmed yet (default DefaultWindow, 1024): Send,
	// SendAsync and the publishes wait while it is full. It is the
	// client's backpressure: memory for unconfirmed sends never grows past
	// it.
	Window int
}

// Client is a connection to the daemon. Its methods are safe for
// concurrent use.
type Client struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reader and the reconnect loop
	// hctx is the handlers' context. It ends first in Close, while the
	// connection still stands, so that the agents can tell the daemon what
	// they have handled before it closes.
	hctx    context.Context
	hcancel context.CancelFunc
	awg     sync.WaitGroup // the agents' goroutines
	live    atomic.Uint64  // the generation of the live connection, 0 while down

	mu      sync.Mutex
	conn    transport.Conn // nil while reconnecting
	lk      *link          // conn's outbound side; nil while reconnecting
	ready   chan struct{}  // closed when conn is set; replaced when it drops
	gen     uint64         // connection generation
	pending map[string]chan *protocol.Frame
	agents  map[string]*agent
	welcome protocol.Frame

	nextID   atomic.Uint64
	redialed atomic.Uint64

	// The pipeline (see pipeline.go). locksordering: Client.mu is never
	// held with amu.
	win       chan struct{} // a token per unconfirmed send: the window
	amu       sync.Mutex
	aseq      uint64              // the next async send's sequence number
	fifo      []*Pending          // async sends, oldest first, from fhead on
	fhead     int                 // fifo[fhead] is the oldest unsettled one
	byMsg     map[string]*Pending // quiet sends by message ID: a refusal names its message
	byID      map[string]*Pending // confirmed sends by frame id
	fails     []failure           // refusals not yet reported by Flush
	lostFails int                 // refusals past maxFailures
	progress  chan struct{}       // closed and replaced when fhead moves
	confirmed []*Pending          // scratch of answerAsync
	flushed   *sync.Cond          // on amu: broadcast when a flush ends
}

// agent is an agent registered by this client.
type agent struct {
	live    bool // registered with the daemon at least once; guarded by Client.mu
	durable bool // registered with "durable" (see Durable)
	name    string
	h       agentbus.Handler
	in      chan delivery
	done    chan struct{} // closed on unregister
	topics  []string      // subscriptions, to restore after a reconnect
}

type agentKey struct{}

// AgentFromContext returns the name of the agent whose handler ctx belongs
// to, or "". Send, Publish and Request from a handler stamp it as Sender.
func AgentFromContext(ctx context.Context) string {
	s, _ := ctx.Value(agentKey{}).(string)
	return s
}

// Dial connects to the daemon at the Unix socket path and says hello. It
// blocks until the daemon welcomes the client or ctx ends. Errors: the
// transport's (the socket is missing, refused, …), an error wrapping
// protocol errors if the daemon refuses the hello, or ctx's error.
func Dial(ctx context.Context, path string, opts Options) (*Client, error) {
	if opts.Dial == nil {
		opts.Dial = func(ctx context.Context) (transport.Conn, error) {
			return transport.DialUnix(ctx, path, transport.UnixOptions{})
		}
	}
	if opts.Name == "" {
		opts.Name = filepath.Base(os.Args[0])
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 50 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	if opts.AgentQueue <= 0 {
		opts.AgentQueue = 256
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	c := &Client{opts: opts, log: opts.Logger, ready: make(chan struct{}),
		pending: map[string]chan *protocol.Frame{}, agents: map[string]*agent{},
		win: make(chan struct{}, opts.Window), byMsg: map[string]*Pending{}, byID: map[string]*Pending{},
		progress: make(chan struct{})}
	c.flushed = sync.NewCond(&c.amu)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.hctx, c.hcancel = context.WithCancel(context.Background())
	t, err := opts.Dial(ctx)
	if err != nil {
		c.cancel()
		c.hcancel()
		return nil, fmt.Errorf("client: dial: %w", err)
	}
	if err := c.attach(ctx, t); err != nil {
		c.cancel()
		c.hcancel()
		c.wg.Wait()
		return nil, err
	}
	return c, nil
}

// attach starts the reader and the flusher on t, says hello, and
// publishes t as the connection. On failure t is closed.
func (c *Client) attach(ctx context.Context, t transport.Conn) error {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.mu.Unlock()
	l := newLink(t, gen)
	c.wg.Add(2)
	go c.readLoop(l)
	go c.flusher(l)
	f, err := c.roundTrip(ctx, l, &protocol.Frame{Op: protocol.OpHello, Version: protocol.Version, Client: c.opts.Name})
	if errors.Is(err, protocol.ErrUnsupportedVersion) {
		// An older daemon: speak version 1, where every send is
		// confirmed by an ok of its own.
		f, err = c.roundTrip(ctx, l, &protocol.Frame{Op: protocol.OpHello, Version: 1, Client: c.opts.Name})
	}
	if err != nil {
		_ = t.Close()
		return fmt.Errorf("client: hello: %w", err)
	}
	c.amu.Lock()
	l.quiet = f.Version >= protocol.QuietVersion
	c.amu.Unlock()
	c.mu.Lock()
	c.welcome = *f
	c.conn, c.lk = t, l
	c.live.Store(gen)
	close(c.ready)
	c.mu.Unlock()
	return nil
}

// maxFrame returns the largest frame that can go out on l: the least of
// what the daemon takes and what the transport sends.
func (c *Client) maxFrame(l *link) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.welcome.MaxFrame > 0 {
		return min(c.welcome.MaxFrame, l.max)
	}
	return l.max
}

// Server returns the daemon's name and the protocol version agreed on.
func (c *Client) Server() (name string, version int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome.Server, c.welcome.Version
}

// Connected reports whether the client has a live connection to the daemon
// right now (false while it reconnects, and after Close). It does not block.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil && c.ctx.Err() == nil
}

// Reconnects returns how often the client has reconnected.
func (c *Client) Reconnects() uint64 { return c.redialed.Load() }

// Close ends the client. The handlers' ctx ends first, and Close waits for
// the handlers running now to return and for the agents to tell the daemon
// what they have handled; then the connection closes. The daemon
// dead-letters (transport_closed) the messages it had delivered to this
// client that no handler took, so none is lost unseen. Operations in flight
// fail with ErrClosed. Do not call it from a handler. It returns nil, also
// when called again.
func (c *Client) Close() error {
	c.hcancel()
	c.awg.Wait()
	c.mu.Lock()
	l := c.lk
	c.mu.Unlock()
	if l != nil {
		c.drain(l) // the agents' last credits, and anything else queued
	}
	c.cancel()
	c.mu.Lock()
	t := c.conn
	c.mu.Unlock()
	if t != nil {
		_ = t.Close()
	}
	c.wg.Wait()
	return nil
}

// current waits for a live connection.
func (c *Client) current(ctx context.Context) (*link, error) {
	for {
		if c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		c.mu.Lock()
		l, ready := c.lk, c.ready
		c.mu.Unlock()
		if l != nil {
			return l, nil
		}
		if c.opts.NoReconnect {
			return nil, ErrDisconnected
		}
		select {
		case <-ready:
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// do runs one operation on the live connection and returns the answer; an
// error frame becomes an error wrapping its sentinel.
func (c *Client) do(ctx context.Context, f *protocol.Frame) (*protocol.Frame, error) {
	l, err := c.current(ctx)
	if err != nil {
		return nil, err
	}
	return c.roundTrip(ctx, l, f)
}

// answers holds the channels on which roundTrip waits for its answer. The
// reader sends on one only while it holds Client.mu and finds it in
// pending, so once roundTrip has taken it out of pending and emptied it,
// nothing can reach it any more and it is reused.
var answers = sync.Pool{New: func() any { return make(chan *protocol.Frame, 1) }}

// roundTrip writes f on l, after whatever is queued there, and waits for
// its answer.
func (c *Client) roundTrip(ctx context.Context, l *link, f *protocol.Frame) (*protocol.Frame, error) {
	f.ID = strconv.FormatUint(c.nextID.Add(1), 10)
	ch := answers.Get().(chan *protocol.Frame)
	c.mu.Lock()
	c.pending[f.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, f.ID)
		c.mu.Unlock()
		select {
		case <-ch:
		default:
		}
		answers.Put(ch)
	}()
	b, err := protocol.EncodeBuffer(f)
	if err != nil {
		return nil, fmt.Errorf("client: %w: %v", agentbus.ErrInvalidMessage, err)
	}
	if max := c.maxFrame(l); len(b.B) > max {
		n := len(b.B)
		b.Release()
		return nil, fmt.Errorf("client: %w: a frame of %d bytes, the daemon takes %d", agentbus.ErrMessageTooLarge, n, max)
	}
	if !c.enqueue(l, b, true) {
		return nil, ErrDisconnected
	}
	select {
	case r := <-ch:
		if r == nil {
			return nil, ErrDisconnected
		}
		if r.Op == protocol.OpError {
			return nil, protocol.FrameError(r)
		}
		return r, nil
	case <-c.ctx.Done():
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// readLoop reads frames from l's connection until it fails, then hands
// over to the reconnect loop.
func (c *Client) readLoop(l *link) {
	defer c.wg.Done()
	t, gen := l.t, l.gen
	var why error
	// Deliveries are decoded into one frame, again and again (only their
	// message is kept); an answer is handed over in a copy.
	f := new(protocol.Frame)
	for {
		// Lent: decoding keeps nothing of data, and data is not used
		// after the next receive.
		data, err := transport.RecvLent(c.ctx, t)
		if err != nil {
			if errors.Is(err, transport.ErrFrameTooLarge) {
				c.log.Warn("daemon sent an oversized frame; skipped", "error", err)
				continue
			}
			why = err
			break
		}
		if err := protocol.DecodeInto(f, data); err != nil {
			c.log.Warn("daemon sent a bad frame; skipped", "error", err)
			continue
		}
		if f.Op == protocol.OpDeliver {
			c.dispatch(f, gen)
			continue
		}
		if c.answerAsync(f) {
			continue
		}
		c.mu.Lock()
		ch := c.pending[f.ID]
		if ch != nil {
			answer := new(protocol.Frame)
			*answer = *f
			select {
			case ch <- answer: // buffered: the one answer fits
			default:
			}
		}
		c.mu.Unlock()
		if ch == nil && f.Op == protocol.OpError {
			c.log.Warn("daemon error", "code", f.Code, "error", f.Error)
		}
	}
	_ = t.Close()
	c.dropLink(l)
	close(l.done)
	c.mu.Lock()
	if c.gen != gen {
		c.mu.Unlock()
		return
	}
	wasLive := c.conn != nil
	c.conn, c.lk = nil, nil
	c.live.Store(0)
	if wasLive {
		c.ready = make(chan struct{})
	}
	for id, ch := range c.pending { // each waiter gets nil: disconnected
		select {
		case ch <- nil:
		default:
		}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	if wasLive && c.ctx.Err() == nil && c.opts.OnDisconnect != nil {
		c.opts.OnDisconnect(why)
	}
	if c.ctx.Err() != nil || !wasLive || c.opts.NoReconnect {
		return
	}
	c.log.Info("connection lost; reconnecting", "error", why)
	c.wg.Add(1)
	go c.reconnect()
}

// reconnect dials with backoff until it succeeds or the client closes,
// then registers the agents and their subscriptions again.
func (c *Client) reconnect() {
	defer c.wg.Done()
	policy := backoff.Policy{Initial: c.opts.MinBackoff, Max: c.opts.MaxBackoff}
	wait := policy.Initial
	for attempt := 1; ; attempt++ {
		timer := time.NewTimer(backoff.Jitter(wait))
		select {
		case <-c.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		wait = policy.Next(wait)
		t, err := c.opts.Dial(c.ctx)
		if err == nil {
			err = c.attach(c.ctx, t)
		}
		if err != nil {
			if c.ctx.Err() == nil {
				c.log.Debug("reconnect failed", "attempt", attempt, "error", err)
			}
			continue
		}
		c.redialed.Add(1)
		c.log.Info("reconnected", "attempt", attempt)
		err = c.restore()
		if c.opts.OnReconnect != nil {
			c.opts.OnReconnect(err)
		}
		return
	}
}

// restore registers the agents and subscriptions again after a reconnect.
// It returns the errors of those it could not restore.
func (c *Client) restore() error {
	c.mu.Lock()
	agents := make([]*agent, 0, len(c.agents))
	for _, a := range c.agents {
		if a.live { // one still registering registers itself on the new connection
			agents = append(agents, a)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, a := range agents {
		if _, err := c.do(c.ctx, &protocol.Frame{Op: protocol.OpRegister, Agent: a.name, Window: c.opts.AgentQueue,
			Durable: a.durable}); err != nil {
			c.log.Warn("re-register failed", "agent", a.name, "error", err)
			errs = append(errs, fmt.Errorf("client: register %q again: %w", a.name, err))
			continue
		}
		c.mu.Lock()
		topics := slices.Clone(a.topics)
		c.mu.Unlock()
		for _, topic := range topics {
			if _, err := c.do(c.ctx, &protocol.Frame{Op: protocol.OpSubscribe, Agent: a.name, Topic: topic}); err != nil {
				c.log.Warn("re-subscribe failed", "agent", a.name, "topic", topic, "error", err)
				errs = append(errs, fmt.Errorf("client: subscribe %q to %q again: %w", a.name, topic, err))
			}
		}
	}
	return errors.Join(errs...)
}

// dispatch hands a delivery to its agent's goroutine, waiting while its
// queue is full.
func (c *Client) dispatch(f *protocol.Frame, gen uint64) {
	c.mu.Lock()
	a := c.agents[f.Agent]
	c.mu.Unlock()
	if a == nil || f.Message == nil {
		c.log.Warn("delivery for an unknown agent dropped by the client", "agent", f.Agent)
		return
	}
	// The window the agent registered with keeps the queue from filling;
	// the select only guards against a daemon that ignores it.
	select {
	case a.in <- delivery{f.Message, gen}:
	case <-a.done:
	case <-c.ctx.Done():
	}
}

// delivery is a message for an agent and the connection it came on.
type delivery struct {
	m   *agentbus.Message
	gen uint64
}

// RegisterOption configures one agent at Register.
type RegisterOption func(*agent)

// Durable registers a durable agent (see PROTOCOL.md): its messages are
// kept in the daemon's store until this client has handled them (credited
// or acked), and when the connection drops, or the daemon restarts, the
// agent stays, detached, and its messages keep queueing; registering the
// name again (as the client does after a reconnect) gets the backlog, each
// message that may have been delivered before marked Redelivered.
func Durable() RegisterOption { return func(a *agent) { a.durable = true } }

// Register registers an agent named name on the daemon's bus; its messages
// are handled by h in a goroutine of this client, one at a time, in the
// order the daemon delivers them. A requires_ack message is acked when h
// returns nil and refused (so the bus retries it) when h returns an error or
// panics. Register blocks for the daemon's answer. Errors: agentbus
// ErrAgentExists, ErrInvalidAgent, ErrClosed, or the connection's.
func (c *Client) Register(ctx context.Context, name string, h agentbus.Handler, opts ...RegisterOption) error {
	if h == nil {
		return fmt.Errorf("%w: nil handler", agentbus.ErrInvalidAgent)
	}
	a := &agent{name: name, h: h, in: make(chan delivery, c.opts.AgentQueue), done: make(chan struct{})}
	for _, o := range opts {
		if o == nil {
			return fmt.Errorf("%w: nil option", agentbus.ErrInvalidAgent)
		}
		o(a)
	}
	c.mu.Lock()
	if _, dup := c.agents[name]; dup {
		c.mu.Unlock()
		return fmt.Errorf("%w: %q is registered by this client", agentbus.ErrAgentExists, name)
	}
	c.agents[name] = a // before the daemon may deliver to it
	c.mu.Unlock()
	if _, err := c.do(ctx, &protocol.Frame{Op: protocol.OpRegister, Agent: name, Window: c.opts.AgentQueue,
		Durable: a.durable}); err != nil {
		c.mu.Lock()
		delete(c.agents, name)
		c.mu.Unlock()
		return err
	}
	c.mu.Lock()
	a.live = true
	c.mu.Unlock()
	c.awg.Add(1)
	go c.runAgent(a)
	return nil
}

// Unregister removes the agent: the daemon stops it (what is queued for it
// in the daemon is dead-lettered as agent_stopped), and its handler
// goroutine handles what the daemon had already delivered to this client,
// then ends. It blocks for the daemon's answer, not for the handler.
func (c *Client) Unregister(ctx context.Context, name string) error {
	c.mu.Lock()
	a := c.agents[name]
	c.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w: %q", protocol.ErrNotRegistered, name)
	}
	_, err := c.do(ctx, &protocol.Frame{Op: protocol.OpUnregister, Agent: name})
	c.mu.Lock()
	if c.agents[name] == a {
		delete(c.agents, name)
		close(a.done)
	}
	c.mu.Unlock()
	return err
}

func (c *Client) runAgent(a *agent) {
	defer c.awg.Done()
	ctx := context.WithValue(c.hctx, agentKey{}, a.name)
	batch := max(1, c.opts.AgentQueue/4)
	var done int       // deliveries finished, not yet credited
	var owed int       // of those, the ones only a credit settles (see below)
	var doneGen uint64 // the connection they came on
	one := func(d delivery) {
		m := d.m
		if d.gen != c.live.Load() {
			// Its connection has dropped: that daemon connection
			// dead-letters what it delivered and was not credited, so
			// handling it too would give it two outcomes.
			c.log.Debug("delivery from a closed connection skipped", "agent", a.name, "msg_id", m.ID)
			return
		}
		err := c.handle(ctx, a, m)
		if err != nil {
			c.log.Warn("handler failed", "agent", a.name, "msg_id", m.ID, "error", err)
		}
		// A failure is reported, whatever the message: the daemon
		// redelivers a requires_ack message, fails a request at once, and
		// dead-letters anything else as handler_error. A success is
		// acked when an ack is owed (a request is settled by its
		// response).
		if err != nil || m.RequiresAck && m.Type != agentbus.TypeRequest {
			f := &protocol.Frame{Op: protocol.OpAck, Agent: a.name, MessageID: m.ID}
			if err != nil {
				f.Op, f.Error = protocol.OpNack, err.Error()
			}
			// On the client's ctx, not the handler's: an ack is owed even
			// while Close is ending the handlers.
			if _, err := c.do(c.ctx, f); err != nil && c.ctx.Err() == nil {
				c.log.Warn("ack failed", "agent", a.name, "msg_id", m.ID, "error", err)
			}
		}
		if d.gen != doneGen { // a new connection has a fresh window
			done, owed, doneGen = 0, 0, d.gen
		}
		// Credit in batches while messages queue up, and at once when the
		// queue runs empty if a finished delivery is settled by nothing
		// else: what is credited counts as handled if the connection
		// drops. A request is settled by its response (or the daemon's
		// timeout), a requires_ack message by its ack, a failure by its
		// nack; the daemon accounts for those without the credit, whose
		// only use then is to reopen the window, so they wait for the
		// batch (a round trip costs one frame less).
		done++
		if err == nil && m.Type != agentbus.TypeRequest && !m.RequiresAck {
			owed++
		}
		if done >= batch || owed > 0 && len(a.in) == 0 {
			c.credit(a.name, done, doneGen)
			done, owed = 0, 0
		}
	}
	for {
		if c.hctx.Err() != nil { // closing wins over what is queued
			if done > 0 {
				c.credit(a.name, done, doneGen)
			}
			return
		}
		select {
		case d := <-a.in:
			one(d)
		case <-a.done:
			// Unregistered: the daemon sends no more, and what it sent
			// before its answer is queued here. Handle it: it was
			// delivered, and the daemon counted it.
			for c.hctx.Err() == nil {
				select {
				case d := <-a.in:
					one(d)
				default:
					return
				}
			}
			return
		case <-c.hctx.Done():
			// Closing: credit what was handled; what is left was not, so
			// the daemon dead-letters it when the connection closes.
			if done > 0 {
				c.credit(a.name, done, doneGen)
			}
			return
		}
	}
}

// credit tells the daemon that n deliveries to agent are finished, so it
// may send n more. It is not answered, and not sent on a newer connection
// than the one the deliveries came on.
//
// It is queued after what the client has queued to write, and written by
// the flusher, unless the queue runs empty: then at once, so that a credit
// is never held back behind nothing.
func (c *Client) credit(agent string, n int, gen uint64) {
	c.mu.Lock()
	l := c.lk
	live := c.gen == gen
	c.mu.Unlock()
	if l == nil || !live {
		return
	}
	b, err := protocol.EncodeBuffer(&protocol.Frame{Op: protocol.OpCredit, Agent: agent, N: n})
	if err != nil {
		return
	}
	if !c.enqueue(l, b, true) {
		c.log.Debug("credit not sent: the connection dropped", "agent", agent)
	}
}

func (c *Client) handle(ctx context.Context, a *agent, m *agentbus.Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &agentbus.HandlerPanicError{Agent: a.name, Value: r, Stack: debug.Stack()}
		}
	}()
	return a.h.Handle(ctx, m)
}

// stamp sets an empty Sender from a handler's ctx.
func stamp(ctx context.Context, m *agentbus.Message) {
	if m.Sender == "" {
		m.Sender = AgentFromContext(ctx)
	}
}

// Send sends msg (a direct message unless its Type says otherwise) and
// returns its ID once the bus accepted it. The daemon checks Sender: it must
// be empty or an agent this client registered (it is stamped from a
// handler's ctx, or with the client's only agent). It blocks while the
// recipient is full, like agentbus.Bus.Send. Errors: those of Bus.Send
// (ErrNoRecipient, ErrBackpressureTimeout, ErrInvalidMessage, …), an error
// wrapping protocol's not_registered for a foreign sender, ErrDisconnected,
// ErrClosed, or ctx's.
//
// Send shares the client's pipeline with SendAsync and other Sends: it
// takes a place in the window, its frame goes out with whatever is queued
// (concurrent Sends share writes), and it returns once the daemon has
// answered it. Sends of one client are carried out in the order they were
// written.
func (c *Client) Send(ctx context.Context, msg *agentbus.Message) (string, error) {
	p, err := c.async(ctx, protocol.OpSend, msg, modeConfirm)
	if err != nil {
		return "", err
	}
	return p.Wait(ctx)
}

// Publish publishes payload on topic and returns the message ID. It blocks
// and fails like Send.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte) (string, error) {
	msg := agentbus.NewMessage(agentbus.TypePublish, "", payload)
	msg.Topic = topic
	return c.PublishMessage(ctx, msg)
}

// PublishMessage publishes msg (its Topic set) and returns its ID. It
// blocks and fails like Send.
func (c *Client) PublishMessage(ctx context.Context, msg *agentbus.Message) (string, error) {
	p, err := c.async(ctx, protocol.OpPublish, msg, modeConfirm)
	if err != nil {
		return "", err
	}
	return p.Wait(ctx)
}

// Request sends msg as a request and blocks until its response arrives.
// The daemon's RequestTimeout applies, or ctx's deadline if it has one.
// Errors: agentbus.ErrRequestTimeout, Send's errors, or the error the
// request failed with (e.g. its recipient stopped).
func (c *Client) Request(ctx context.Context, msg *agentbus.Message) (*agentbus.Message, error) {
	stamp(ctx, msg)
	f := &protocol.Frame{Op: protocol.OpRequest, Message: msg}
	if d, ok := ctx.Deadline(); ok {
		f.TimeoutMS = max(1, time.Until(d).Milliseconds())
	}
	r, err := c.do(ctx, f)
	if err != nil {
		return nil, err
	}
	if r.Message == nil {
		return nil, fmt.Errorf("%w: response without message", protocol.ErrInvalidFrame)
	}
	return r.Message, nil
}

// Reply answers request req (as delivered to one of this client's agents)
// with payload, from the agent it was delivered to. It returns the
// response's ID once the daemon has carried the reply out, which costs a
// round trip to the daemon; ReplyAsync does not wait. Errors: those of
// Send.
func (c *Client) Reply(ctx context.Context, req *agentbus.Message, payload []byte) (string, error) {
	resp := req.NewResponse(req.Recipient, payload)
	f, err := c.do(ctx, &protocol.Frame{Op: protocol.OpRespond, Message: resp})
	if err != nil {
		return "", err
	}
	return f.MessageID, nil
}

// ReplyAsync answers request req (as delivered to one of this client's
// agents) with payload, from the agent it was delivered to, without
// waiting for the daemon: the respond is written at once (or with what is
// being written), and its Pending is settled when the daemon has carried
// it out or refused it. The respond is quiet (protocol version 2), and
// the daemon confirms quiet replies in batches, so a lone reply costs no
// answer frame: its Pending settles at the next Flush, with the next
// SendAsync's write, or after 64 more replies, whichever comes first.
// A refusal settles the Pending with its error and is reported by the
// next Flush, as for SendAsync. It takes a place in the window
// (Options.Window) and blocks only while the window is full or the client
// reconnects. Errors, when the reply was not sent at all: those of
// SendAsync. Safe for concurrent use.
//
// Unlike Reply, it does not wait for the daemon's answer: the handler is
// free for its next message as soon as the reply is written, and the
// responder's connection carries no answer frame per reply.
func (c *Client) ReplyAsync(ctx context.Context, req *agentbus.Message, payload []byte) (*Pending, error) {
	if req == nil {
		return nil, fmt.Errorf("client: %w: reply to nil request", agentbus.ErrInvalidMessage)
	}
	return c.async(ctx, protocol.OpRespond, req.NewResponse(req.Recipient, payload), modeReply)
}

// Subscribe subscribes this client's agent to topic, a subject or a
// pattern with * and >. The subscription is restored after a reconnect.
// Errors: agentbus.ErrInvalidSubject, ErrTooManySubscriptions, not_registered.
func (c *Client) Subscribe(ctx context.Context, agentName, topic string) error {
	if _, err := c.do(ctx, &protocol.Frame{Op: protocol.OpSubscribe, Agent: agentName, Topic: topic}); err != nil {
		return err
	}
	c.mu.Lock()
	if a := c.agents[agentName]; a != nil && !slices.Contains(a.topics, topic) {
		a.topics = append(a.topics, topic)
	}
	c.mu.Unlock()
	return nil
}

// Unsubscribe ends a subscription. Errors: agentbus.ErrNotSubscribed,
// not_registered.
func (c *Client) Unsubscribe(ctx context.Context, agentName, topic string) error {
	if _, err := c.do(ctx, &protocol.Frame{Op: protocol.OpUnsubscribe, Agent: agentName, Topic: topic}); err != nil {
		return err
	}
	c.mu.Lock()
	if a := c.agents[agentName]; a != nil {
		a.topics = slices.DeleteFunc(a.topics, func(t string) bool { return t == topic })
	}
	c.mu.Unlock()
	return nil
}

// Ping asks the daemon for a pong and returns the round-trip time.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if _, err := c.do(ctx, &protocol.Frame{Op: protocol.OpPing}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Stats returns the daemon's bus statistics (agentbus.Bus.Stats).
func (c *Client) Stats(ctx context.Context) (agentbus.Stats, error) {
	var st agentbus.Stats
	raw, err := c.StatsJSON(ctx)
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	return st, err
}

// ClusterStats returns the statistics of every node of the daemon's cluster
// (agentbus.Cluster.Stats), asked of the daemon, which asks the others. It
// blocks until the answer arrives or ctx ends. A daemon that is not a
// cluster node answers with an error.
func (c *Client) ClusterStats(ctx context.Context) (agentbus.ClusterStats, error) {
	var st agentbus.ClusterStats
	f, err := c.do(ctx, &protocol.Frame{Op: protocol.OpClusterStats})
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(f.Stats, &st); err != nil {
		return st, fmt.Errorf("agentbus: decode cluster stats: %w", err)
	}
	return st, nil
}

// StatsJSON returns the daemon's statistics as the JSON object it sent.
func (c *Client) StatsJSON(ctx context.Context) (json.RawMessage, error) {
	f, err := c.do(ctx, &protocol.Frame{Op: protocol.OpStats})
	if err != nil {
		return nil, err
	}
	return f.Stats, nil
}

// LetterFilter selects dead letters. Zero fields match everything.
type LetterFilter struct {
	Reason string // a dead-letter reason, such as "mailbox_full"
	Agent  string
	Topic  string
	Limit  int // at most this many, newest kept; the daemon caps it
}

// DeadLetters lists the daemon's dead letters that match f, oldest first.
func (c *Client) DeadLetters(ctx context.Context, f LetterFilter) ([]Letter, error) {
	r, err := c.do(ctx, &protocol.Frame{Op: protocol.OpDeadLetters, Reason: f.Reason, Agent: f.Agent,
		Topic: f.Topic, Limit: f.Limit})
	if err != nil {
		return nil, err
	}
	return r.Letters, nil
}

// Replay sends dead letter seq again (to agent to, or to where it was
// going when to is empty) and returns the message ID. Errors:
// agentbus.ErrUnknownLetter and Send's.
func (c *Client) Replay(ctx context.Context, seq uint64, to string) (string, error) {
	r, err := c.do(ctx, &protocol.Frame{Op: protocol.OpReplay, Seq: seq, To: to})
	if err != nil {
		return "", err
	}
	return r.MessageID, nil
}

// Topics returns the topics (subjects and patterns) agents of the daemon's
// bus are subscribed to, sorted, each with its subscribers; at most limit of
// them (0 or more than the daemon's cap: the cap, 1,000 by default). It
// blocks for the daemon's answer. Errors: the connection's, or ctx's.
func (c *Client) Topics(ctx context.Context, limit int) ([]TopicInfo, error) {
	r, err := c.do(ctx, &protocol.Frame{Op: protocol.OpTopics, Limit: limit})
	if err != nil {
		return nil, err
	}
	if r.Topics == nil {
		return []TopicInfo{}, nil
	}
	return r.Topics, nil
}

// HistoryQuery selects messages from the daemon's history.
type HistoryQuery struct {
	Sender, Recipient, Topic string
	Type                     string // a message type name, such as "request"
	Limit                    int
}

// History returns the accepted messages that match q, newest first (empty
// unless the daemon runs with history enabled).
func (c *Client) History(ctx context.Context, q HistoryQuery) ([]*agentbus.Message, error) {
	r, err := c.do(ctx, &protocol.Frame{Op: protocol.OpHistory, Sender: q.Sender, Recipient: q.Recipient,
		Topic: q.Topic, Type: q.Type, Limit: q.Limit})
	if err != nil {
		return nil, err
	}
	return r.Messages, nil
}
