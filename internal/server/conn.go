package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/supervisor"
	"github.com/descartes/agentbus/transport"
)

// stopTimeout bounds how long a closing connection waits for each of its
// agents to stop. Their handlers are unblocked by then, so it is only a
// safeguard.
const stopTimeout = 5 * time.Second

// item is one entry of a connection's outbound queue.
type item struct {
	frame []byte
	// msg and agent are set for deliveries, so that a delivery never
	// written is dead-lettered rather than lost.
	msg   *agentbus.Message
	agent string
	// flushed, when set, marks a flush: the writer closes it once every
	// item before it is written.
	flushed chan struct{}
}

// conn is one client connection.
type conn struct {
	s   *Server
	t   transport.Conn
	id  uint64
	log *slog.Logger

	ctx    context.Context // ends when the connection ends
	cancel context.CancelFunc
	out    chan item // bounded outbound queue; the writer drains it
	// wmu is held while a frame is written to the transport; queued counts
	// the items in out or in the writer's hands. A frame is written by the
	// goroutine that produced it when nothing is queued and the transport
	// is free (no hand-off to the writer: one wake-up less per frame);
	// otherwise it joins the queue, so frames never overtake each other.
	wmu    sync.Mutex
	queued atomic.Int64
	reqs   chan struct{}  // semaphore of requests in flight
	wg     sync.WaitGroup // the writer and request goroutines

	// Touched only by the reader goroutine.
	hello  bool
	client string
	bad    int // bad frames in a row

	mu     sync.Mutex
	agents map[string]*remote // registered by this connection
}

// remote is an agent registered by a connection.
type remote struct {
	pid  *actor.PID
	wait *waiting // the delivery waiting for the client's answer, if any
	// slots, when the client asked for a window, holds one token per
	// delivery in flight: the forwarder takes one before it queues a
	// delivery, a credit frame gives them back.
	slots chan struct{}
	// inflight lists, oldest first, the deliveries in the window that the
	// client has not credited yet (nil for one that waits for an ack or a
	// response: its own failure accounts for it). A client credits what
	// its handler has finished, in order, so when the connection closes
	// these are exactly the deliveries it never handled: they are
	// dead-lettered. At most the window long; guarded by conn.mu.
	inflight []*agentbus.Message
}

// waiting is a delivery that waits for the client's ack or response.
type waiting struct {
	id      string     // the message's ID (ack) or the request's RequestID (respond)
	msgID   string     // the message's ID: a nack names it, also for a request
	respond bool       // a request, settled by a respond (or a nack)
	done    chan error // buffered 1: nil for ack or respond, an error for nack
}

func newConn(s *Server, t transport.Conn, id uint64) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{
		s: s, t: t, id: id, log: s.log.With("conn", id),
		ctx: ctx, cancel: cancel,
		out:    make(chan item, s.cfg.OutboundQueue),
		reqs:   make(chan struct{}, s.cfg.MaxRequests),
		agents: map[string]*remote{},
	}
}

// run serves the connection until it ends, then cleans up.
func (c *conn) run() {
	p := c.t.Peer()
	c.log.Info("client connected", "uid", p.UID, "pid", p.PID)
	c.wg.Add(1)
	go c.writeLoop()
	why := c.readLoop()
	c.cancel()
	c.cleanup(why)
}

// shut ends the connection; run cleans up.
func (c *conn) shut() { c.cancel() }

// flush waits until every frame queued so far is written, or ctx ends.
func (c *conn) flush(ctx context.Context) error {
	done := make(chan struct{})
	c.queued.Add(1)
	select {
	case c.out <- item{flushed: done}:
	case <-c.ctx.Done():
		c.queued.Add(-1)
		return nil // already closing: cleanup dead-letters the rest
	case <-ctx.Done():
		c.queued.Add(-1)
		return context.Cause(ctx)
	}
	select {
	case <-done:
		return nil
	case <-c.ctx.Done():
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// writeLoop writes queued frames until the connection ends.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	for {
		select {
		case it := <-c.out:
			if it.flushed != nil {
				c.queued.Add(-1)
				close(it.flushed)
				continue
			}
			c.wmu.Lock()
			err := c.t.Send(c.ctx, it.frame)
			c.queued.Add(-1)
			c.wmu.Unlock()
			if err != nil {
				c.failed(it, err)
				return
			}
		case <-c.ctx.Done():
			return
		}
	}
}

// failed handles a write that failed: the connection is done.
func (c *conn) failed(it item, err error) {
	if it.msg != nil {
		c.undelivered(it, err)
	}
	c.cancel() // the reader's Recv returns, and run cleans up
}

// emit writes it, or queues it for the writer, waiting while the queue is
// full. It reports false if the connection ended before it was written or
// queued; the caller accounts for it. (What the writer fails to write is
// dead-lettered by the writer.)
func (c *conn) emit(it item) bool {
	if c.queued.Load() == 0 && c.wmu.TryLock() {
		if c.queued.Load() == 0 { // still nothing ahead of it
			err := c.t.Send(c.ctx, it.frame)
			c.wmu.Unlock()
			if err != nil {
				c.cancel() // the caller accounts for it; run cleans up
				return false
			}
			return true
		}
		c.wmu.Unlock()
	}
	c.queued.Add(1)
	select {
	case c.out <- it:
		return true
	case <-c.ctx.Done():
		c.queued.Add(-1)
		return false
	}
}

// readLoop reads and runs operations until the stream ends; it returns why.
func (c *conn) readLoop() error {
	for {
		data, err := c.t.Recv(c.ctx)
		var f *protocol.Frame
		switch {
		case errors.Is(err, transport.ErrFrameTooLarge):
			err = fmt.Errorf("%w: %v", protocol.ErrFrameTooLarge, err)
		case err != nil:
			return err
		default:
			f, err = protocol.Decode(data)
		}
		if err == nil {
			err = c.handle(f)
		}
		if err == nil {
			c.bad = 0
			continue
		}
		id := ""
		if f != nil { // also a frame that decoded in part
			id = f.ID
		}
		c.log.Debug("operation failed", "id", id, "error", err)
		if !c.reply(protocol.ErrorFrame(id, err)) {
			return c.ctx.Err()
		}
		if isBadFrame(err) {
			c.bad++
			if c.bad > c.s.cfg.MaxBadFrames {
				c.reply(protocol.ErrorFrame("", fmt.Errorf("%w: %d bad frames in a row; closing",
					protocol.ErrTooManyErrors, c.bad)))
				ctx, cancel := context.WithTimeout(c.ctx, time.Second)
				_ = c.flush(ctx)
				cancel()
				c.s.refused.Add(1)
				return protocol.ErrTooManyErrors
			}
		}
	}
}

// isBadFrame reports whether err means the client does not speak the
// protocol (as opposed to an operation the bus refused).
func isBadFrame(err error) bool {
	for _, e := range []error{protocol.ErrInvalidFrame, protocol.ErrFrameTooLarge, protocol.ErrUnknownOp,
		protocol.ErrHelloRequired, protocol.ErrUnsupportedVersion} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// reply queues f for writing. It reports false if the connection ended.
func (c *conn) reply(f *protocol.Frame) bool {
	b, err := protocol.Encode(f)
	if err != nil { // a message the bus holds always encodes; be safe anyway
		b, _ = protocol.Encode(protocol.ErrorFrame(f.ID, fmt.Errorf("%w: encode %s: %v", protocol.ErrInternal, f.Op, err)))
	}
	return c.emit(item{frame: b})
}

func (c *conn) ok(id, msgID string) error {
	c.reply(&protocol.Frame{Op: protocol.OpOK, ID: id, MessageID: msgID})
	return nil
}

// handle runs one operation. Operations that answer at once reply here;
// an error return is answered with an error frame by the caller.
func (c *conn) handle(f *protocol.Frame) error {
	if !c.hello && f.Op != protocol.OpHello && f.Op != protocol.OpPing {
		return fmt.Errorf("%w: send hello first, with version %d", protocol.ErrHelloRequired, protocol.Version)
	}
	bus := c.s.bus
	switch f.Op {
	case protocol.OpHello:
		if f.Version < 1 || f.Version > protocol.Version {
			return fmt.Errorf("%w: %d (this daemon speaks 1..%d)", protocol.ErrUnsupportedVersion, f.Version, protocol.Version)
		}
		c.hello, c.client = true, f.Client
		c.log.Info("client hello", "client", f.Client, "version", f.Version)
		c.reply(&protocol.Frame{Op: protocol.OpWelcome, ID: f.ID, Version: f.Version, Server: c.s.cfg.Name,
			MaxFrame: c.s.cfg.MaxFrameSize})
		return nil
	case protocol.OpPing:
		c.reply(&protocol.Frame{Op: protocol.OpPong, ID: f.ID})
		return nil
	case protocol.OpRegister:
		return c.register(f)
	case protocol.OpUnregister:
		return c.unregister(f)
	case protocol.OpSend, protocol.OpPublish, protocol.OpRespond:
		m, err := c.message(f)
		if err != nil {
			return err
		}
		id, err := bus.Send(c.ctx, m)
		if f.Op == protocol.OpRespond {
			// The responding agent is free again, whether or not the
			// requester still waited.
			c.settle(m.Sender, func(w *waiting) bool { return w.respond && w.id == m.RequestID }, nil)
		}
		if err != nil {
			return err
		}
		return c.ok(f.ID, id)
	case protocol.OpRequest:
		m, err := c.message(f)
		if err != nil {
			return err
		}
		return c.request(f, m)
	case protocol.OpSubscribe, protocol.OpUnsubscribe:
		agent, err := c.agentOf(f.Agent)
		if err != nil {
			return err
		}
		if f.Topic == "" {
			return fmt.Errorf("%w: %s needs a topic", protocol.ErrInvalidFrame, f.Op)
		}
		if f.Op == protocol.OpSubscribe {
			err = bus.Subscribe(f.Topic, agent)
		} else {
			err = bus.Unsubscribe(f.Topic, agent)
		}
		if err != nil {
			return err
		}
		return c.ok(f.ID, "")
	case protocol.OpAck, protocol.OpNack:
		return c.ack(f)
	case protocol.OpCredit:
		return c.credit(f)
	case protocol.OpStats:
		st, err := json.Marshal(bus.Stats())
		if err != nil {
			return fmt.Errorf("%w: encode stats: %v", protocol.ErrInternal, err)
		}
		c.reply(&protocol.Frame{Op: protocol.OpStats, ID: f.ID, Stats: st})
		return nil
	case protocol.OpDeadLetters:
		return c.deadLetters(f)
	case protocol.OpReplay:
		if f.Seq == 0 {
			return fmt.Errorf("%w: replay needs seq", protocol.ErrInvalidFrame)
		}
		id, err := bus.Replay(c.ctx, f.Seq, f.To)
		if err != nil {
			return err
		}
		return c.ok(f.ID, id)
	case protocol.OpHistory:
		return c.history(f)
	default:
		return fmt.Errorf("%w: %q", protocol.ErrUnknownOp, f.Op)
	}
}

// message returns the frame's message, typed for the op, with its sender
// checked: a client sends only as an agent it registered.
func (c *conn) message(f *protocol.Frame) (*agentbus.Message, error) {
	m := f.Message
	if m == nil {
		return nil, fmt.Errorf("%w: %s needs a message", protocol.ErrInvalidFrame, f.Op)
	}
	switch f.Op {
	case protocol.OpSend:
		if m.Type == 0 {
			m.Type = agentbus.TypeDirect
		}
		switch m.Type {
		case agentbus.TypeResponse, agentbus.TypeRequest, agentbus.TypeAck:
			return nil, fmt.Errorf("%w: send a %s with the %s op", protocol.ErrInvalidFrame, m.Type, opFor(m.Type))
		}
	case protocol.OpPublish:
		m.Type = agentbus.TypePublish
	case protocol.OpRespond:
		m.Type = agentbus.TypeResponse
	case protocol.OpRequest:
		m.Type = agentbus.TypeRequest
	}
	if m.Sender == "" {
		c.mu.Lock()
		if len(c.agents) == 1 {
			for name := range c.agents {
				m.Sender = name
			}
		}
		c.mu.Unlock()
	} else if !c.owns(m.Sender) {
		return nil, fmt.Errorf("%w: sender %q", protocol.ErrNotRegistered, m.Sender)
	}
	return m, nil
}

func opFor(t agentbus.MessageType) string {
	switch t {
	case agentbus.TypeResponse:
		return protocol.OpRespond
	case agentbus.TypeRequest:
		return protocol.OpRequest
	default:
		return protocol.OpAck
	}
}

func (c *conn) owns(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.agents[name]
	return ok
}

// agentOf returns name if this connection registered it, or the
// connection's only agent when name is empty.
func (c *conn) agentOf(name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == "" {
		if len(c.agents) != 1 {
			return "", fmt.Errorf("%w: name the agent (this connection has %d)", protocol.ErrInvalidFrame, len(c.agents))
		}
		for n := range c.agents {
			return n, nil
		}
	}
	if _, ok := c.agents[name]; !ok {
		return "", fmt.Errorf("%w: %q", protocol.ErrNotRegistered, name)
	}
	return name, nil
}

func (c *conn) register(f *protocol.Frame) error {
	if f.Agent == "" {
		return fmt.Errorf("%w: register needs an agent name", protocol.ErrInvalidFrame)
	}
	c.mu.Lock()
	n := len(c.agents)
	_, dup := c.agents[f.Agent]
	c.mu.Unlock()
	switch {
	case dup:
		return fmt.Errorf("%w: %q is already registered by this connection", agentbus.ErrAgentExists, f.Agent)
	case n >= c.s.cfg.MaxAgents:
		return fmt.Errorf("%w: %d", protocol.ErrTooManyAgents, c.s.cfg.MaxAgents)
	}
	if f.Window < 0 || f.Window > maxWindow {
		return fmt.Errorf("%w: window %d not in 0..%d", protocol.ErrInvalidFrame, f.Window, maxWindow)
	}
	r := &remote{}
	if f.Window > 0 {
		r.slots = make(chan struct{}, f.Window)
	}
	// Reserve the name first: the handler may run before Spawn returns.
	c.mu.Lock()
	c.agents[f.Agent] = r
	c.mu.Unlock()
	pid, err := c.s.bus.Spawn(f.Agent, c.forward(f.Agent, r), agentbus.WithSupervisor(supervisor.Resuming()))
	c.mu.Lock()
	if err != nil {
		delete(c.agents, f.Agent)
	} else {
		r.pid = pid
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	c.log.Info("agent registered", "agent", f.Agent, "client", c.client)
	return c.ok(f.ID, "")
}

func (c *conn) unregister(f *protocol.Frame) error {
	name, err := c.agentOf(f.Agent)
	if err != nil {
		return err
	}
	c.mu.Lock()
	r := c.agents[name]
	delete(c.agents, name)
	c.mu.Unlock()
	c.stopAgent(name, r, nil)
	c.log.Info("agent unregistered", "agent", name, "client", c.client)
	return c.ok(f.ID, "")
}

// stopAgent stops the bus agent r if it is still the one registered under
// name, so that a name taken over by another client is never stopped.
func (c *conn) stopAgent(name string, r *remote, cause error) {
	if pid, ok := c.s.bus.PID(name); !ok || r.pid == nil || !pid.Equal(r.pid) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := c.s.bus.StopCause(ctx, name, cause); err != nil && !errors.Is(err, agentbus.ErrNoRecipient) {
		c.log.Warn("agent did not stop", "agent", name, "error", err)
	}
}

// forward returns the handler of a remote agent: it queues each message as
// a deliver frame, waiting while the outbound queue is full. A requires_ack
// message then waits for the client's ack, and a request for the client's
// response: like an in-process agent, a remote agent is busy until it has
// answered, and if its connection closes first the requester learns it at
// once (the request is dead-lettered as transport_closed) instead of timing
// out.
func (c *conn) forward(name string, r *remote) agentbus.HandlerFunc {
	slots := r.slots
	return func(_ context.Context, m *agentbus.Message) error {
		if slots != nil { // flow control: wait for the client's credit
			select {
			case slots <- struct{}{}:
			case <-c.ctx.Done():
				return fmt.Errorf("agentbus daemon: deliver to %q: %w", name, agentbus.ErrTransportClosed)
			}
		}
		frame, err := protocol.Encode(&protocol.Frame{Op: protocol.OpDeliver, Agent: name, Message: m})
		if err != nil {
			return err
		}
		var w *waiting
		switch {
		case m.Type == agentbus.TypeRequest:
			w = &waiting{id: m.RequestID, msgID: m.ID, respond: true, done: make(chan error, 1)}
		case m.RequiresAck:
			w = &waiting{id: m.ID, msgID: m.ID, done: make(chan error, 1)}
		}
		if w != nil {
			c.mu.Lock()
			if r := c.agents[name]; r != nil {
				r.wait = w
			}
			c.mu.Unlock()
			defer func() {
				c.mu.Lock()
				if r := c.agents[name]; r != nil && r.wait == w {
					r.wait = nil
				}
				c.mu.Unlock()
			}()
		}
		it := item{frame: frame}
		if w == nil { // a waiting delivery is dead-lettered by its failure instead
			it.msg, it.agent = m, name
		}
		if slots != nil { // listed before it is written: its credit may come back at once
			c.mu.Lock()
			r.inflight = append(r.inflight, it.msg)
			c.mu.Unlock()
		}
		if !c.emit(it) { // not written: the bus dead-letters it as transport_closed
			if slots != nil {
				c.mu.Lock()
				if n := len(r.inflight); n > 0 && r.inflight[n-1] == it.msg {
					r.inflight = r.inflight[:n-1]
				}
				c.mu.Unlock()
			}
			return fmt.Errorf("agentbus daemon: deliver to %q: %w", name, agentbus.ErrTransportClosed)
		}
		if w == nil {
			return nil
		}
		what := "ack"
		if w.respond {
			what = "response"
		}
		timer := time.NewTimer(c.s.cfg.AckTimeout)
		defer timer.Stop()
		select {
		case err := <-w.done:
			return err
		case <-timer.C:
			return fmt.Errorf("agentbus daemon: %q sent no %s to %s within %v", name, what, m.ID, c.s.cfg.AckTimeout)
		case <-c.ctx.Done():
			return fmt.Errorf("agentbus daemon: %q closed before its %s to %s: %w", name, what, m.ID,
				agentbus.ErrTransportClosed)
		}
	}
}

// settle releases the delivery of one of the connection's agents (the one
// named, or any) that waits and matches, with result. It reports whether
// one was waiting.
func (c *conn) settle(agent string, match func(*waiting) bool, result error) bool {
	c.mu.Lock()
	var w *waiting
	for name, r := range c.agents {
		if r.wait != nil && match(r.wait) && (agent == "" || agent == name) {
			w, r.wait = r.wait, nil
			break
		}
	}
	c.mu.Unlock()
	if w == nil {
		return false
	}
	w.done <- result
	return true
}

// maxWindow caps the window a client may ask for.
const maxWindow = 1 << 16

// credit gives back n slots of the agent's window. It is not answered (a
// client sends one every few messages); a bad credit is an error frame.
func (c *conn) credit(f *protocol.Frame) error {
	name, err := c.agentOf(f.Agent)
	if err != nil {
		return err
	}
	c.mu.Lock()
	r := c.agents[name]
	c.mu.Unlock()
	if r == nil || r.slots == nil {
		return fmt.Errorf("%w: %q was registered without a window", protocol.ErrInvalidFrame, name)
	}
	if f.N <= 0 {
		return fmt.Errorf("%w: credit needs n > 0", protocol.ErrInvalidFrame)
	}
	c.mu.Lock()
	n := min(f.N, len(r.inflight))
	clear(r.inflight[:n])
	r.inflight = r.inflight[n:]
	c.mu.Unlock()
	for range n {
		select {
		case <-r.slots:
		default: // not taken yet: the forwarder lists before it writes
		}
	}
	return nil
}

// ack settles the delivery waiting for an ack. A nack also settles a
// request waiting for its response (its handler failed: the requester
// learns at once), and refuses a delivery that waits for nothing but is
// still uncredited (it is dead-lettered as handler_error, as an
// in-process handler's failure is).
func (c *conn) ack(f *protocol.Frame) error {
	if f.MessageID == "" {
		return fmt.Errorf("%w: %s needs message_id", protocol.ErrInvalidFrame, f.Op)
	}
	var result error
	if f.Op == protocol.OpNack {
		why := f.Error
		if why == "" {
			why = "no reason given"
		}
		result = fmt.Errorf("agentbus daemon: client refused %s: %s", f.MessageID, why)
	}
	acked := func(w *waiting) bool { return !w.respond && w.msgID == f.MessageID }
	failed := func(w *waiting) bool { return w.respond && w.msgID == f.MessageID } // a request's handler failed
	if c.settle(f.Agent, acked, result) ||
		result != nil && (c.settle(f.Agent, failed, result) || c.refuse(f.Agent, f.MessageID, result)) {
		return c.ok(f.ID, f.MessageID)
	}
	return fmt.Errorf("%w: no delivery of %s awaits an ack on this connection", agentbus.ErrNotPending, f.MessageID)
}

// refuse dead-letters an uncredited delivery that the client's handler
// failed on. Its place in the window stays (as nil), so the client's
// credit, which counts it, still lines up.
func (c *conn) refuse(agent, msgID string, result error) bool {
	c.mu.Lock()
	var found *agentbus.Message
	var name string
	for n, r := range c.agents {
		if agent != "" && agent != n {
			continue
		}
		for i, m := range r.inflight {
			if m != nil && m.ID == msgID {
				found, name, r.inflight[i] = m, n, nil
				break
			}
		}
		if found != nil {
			break
		}
	}
	c.mu.Unlock()
	if found == nil {
		return false
	}
	c.s.bus.ActorSystem().Root.Send(c.s.bus.DeadLetterPID(), &deadletter.Letter{Message: found,
		Reason: deadletter.HandlerError, Agent: name, Err: result.Error(), Attempts: found.Attempts})
	return true
}

// request runs a request in its own goroutine, so the connection goes on
// reading (the response may come from this very connection).
func (c *conn) request(f *protocol.Frame, m *agentbus.Message) error {
	select {
	case c.reqs <- struct{}{}:
	default:
		return fmt.Errorf("%w: %d", protocol.ErrTooManyRequests, c.s.cfg.MaxRequests)
	}
	if f.TimeoutMS < 0 {
		<-c.reqs
		return fmt.Errorf("%w: negative timeout_ms", protocol.ErrInvalidFrame)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() { <-c.reqs }()
		ctx, cancel := c.ctx, context.CancelFunc(func() {})
		if f.TimeoutMS > 0 {
			ctx, cancel = context.WithTimeout(c.ctx, time.Duration(f.TimeoutMS)*time.Millisecond)
		}
		defer cancel()
		resp, err := c.s.bus.Request(ctx, m)
		if err != nil {
			c.reply(protocol.ErrorFrame(f.ID, err))
			return
		}
		c.reply(&protocol.Frame{Op: protocol.OpResponse, ID: f.ID, Message: resp})
	}()
	return nil
}

func (c *conn) limit(n int) int {
	if n <= 0 || n > c.s.cfg.MaxList {
		return c.s.cfg.MaxList
	}
	return n
}

func (c *conn) deadLetters(f *protocol.Frame) error {
	if f.Reason != "" && !validReason(f.Reason) {
		return fmt.Errorf("%w: unknown reason %q", protocol.ErrInvalidFrame, f.Reason)
	}
	letters := c.s.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.Reason(f.Reason), Agent: f.Agent,
		Topic: f.Topic, Limit: c.limit(f.Limit)})
	out := make([]protocol.Letter, len(letters))
	for i, l := range letters {
		out[i] = protocol.FromLetter(l)
	}
	c.reply(&protocol.Frame{Op: protocol.OpDeadLetters, ID: f.ID, Letters: out})
	return nil
}

func validReason(r string) bool {
	for _, x := range deadletter.Reasons {
		if string(x) == r {
			return true
		}
	}
	return false
}

func (c *conn) history(f *protocol.Frame) error {
	q := agentbus.HistoryQuery{Sender: f.Sender, Recipient: f.Recipient, Topic: f.Topic, Limit: c.limit(f.Limit)}
	if f.Type != "" {
		var t agentbus.MessageType
		if err := t.UnmarshalText([]byte(f.Type)); err != nil {
			return fmt.Errorf("%w: unknown type %q", protocol.ErrInvalidFrame, f.Type)
		}
		q.Type = t
	}
	msgs := c.s.bus.QueryHistory(q)
	if msgs == nil {
		msgs = []*agentbus.Message{}
	}
	c.reply(&protocol.Frame{Op: protocol.OpHistory, ID: f.ID, Messages: msgs})
	return nil
}

// cleanup runs once the reader has returned and the context is canceled:
// it stops the connection's agents (what was queued for them is
// dead-lettered as transport_closed), waits for its goroutines, closes the
// transport, and dead-letters deliveries that were never written.
func (c *conn) cleanup(why error) {
	c.mu.Lock()
	agents := c.agents
	c.agents = map[string]*remote{}
	c.mu.Unlock()
	for name, r := range agents {
		c.stopAgent(name, r, agentbus.ErrTransportClosed)
	}
	for name, r := range agents {
		c.mu.Lock()
		inflight := r.inflight
		r.inflight = nil
		c.mu.Unlock()
		for _, m := range inflight {
			if m != nil { // delivered, never credited: never handled
				c.undelivered(item{msg: m, agent: name}, errors.New("delivered but not handled before the connection closed"))
			}
		}
	}
	c.wg.Wait()
	_ = c.t.Close()
	for {
		select {
		case it := <-c.out:
			if it.msg != nil {
				c.undelivered(it, transport.ErrClosed)
			} else if it.flushed != nil {
				close(it.flushed)
			}
			continue
		default:
		}
		break
	}
	c.log.Info("client disconnected", "client", c.client, "agents", len(agents), "reason", fmt.Sprint(why))
}

// undelivered dead-letters a delivery that was queued for the connection
// but not written to it. The bus already counted it as handled by the
// remote agent, so it goes to the dead-letter queue as a letter from outside
// the bus's ledger (see agentbus.Accounting).
func (c *conn) undelivered(it item, why error) {
	l := &deadletter.Letter{Message: it.msg, Reason: deadletter.TransportClosed, Agent: it.agent,
		Err: fmt.Sprintf("%v: %v", agentbus.ErrTransportClosed, why), Attempts: it.msg.Attempts}
	c.s.bus.ActorSystem().Root.Send(c.s.bus.DeadLetterPID(), l)
	// Logged too: once the bus has shut down (a daemon stopping with a
	// client that would not read), the log is the only record left. There
	// are at most OutboundQueue such messages per connection.
	c.log.Warn("dead letter", "msg_id", it.msg.ID, "agent", it.agent, "reason", string(deadletter.TransportClosed),
		"error", l.Err)
}
