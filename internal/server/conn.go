package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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

// clusterStatsTimeout bounds how long a cluster_stats frame waits for the
// other nodes' answers; those that did not answer are listed as missing.
const clusterStatsTimeout = 3 * time.Second

// item is one entry of a connection's outbound queue.
type item struct {
	// frame is the encoded frame, released once written or dropped. For
	// a delivery it is nil until the writer encodes it.
	frame *protocol.Buffer
	// deliver, agent and to are set for a delivery: the writer encodes the
	// deliver frame, on its own goroutine, whose stack has long grown to
	// what encoding takes, rather than on the short-lived goroutine the
	// agent's handler runs on, where growing it would cost more than the
	// hand-off. wait is the delivery's wait for an ack or a response.
	deliver *agentbus.Message
	agent   string
	to      *remote
	wait    *waiting
	// msg is set for a delivery that waits for nothing, so that one never
	// written is dead-lettered rather than lost.
	msg *agentbus.Message
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
	lane   chan ordered        // ordered operations, carried out by laneLoop
	laneN  atomic.Int32        // ordered operations queued or being carried out by laneLoop
	reqs   chan struct{}       // semaphore of requests in flight
	idle   chan pendingRequest // unbuffered: to the idle request goroutine, if one waits
	idlers atomic.Int32        // request goroutines waiting for a request
	wg     sync.WaitGroup      // the writer and request goroutines

	// Touched only by the reader goroutine (version is written once, at
	// hello, before any ordered operation goes to the lane).
	hello   bool
	version int
	client  string
	bad     int  // bad frames in a row
	more    bool // more of the client's frames wait to be read (see answer)

	mu     sync.Mutex
	agents map[string]*remote // registered by this connection
}

// remote is an agent registered by a connection.
type remote struct {
	name string
	pid  *actor.PID
	// gone is closed when the client unregisters the agent: its handler,
	// waiting for a credit or an answer, gives up at once.
	gone chan struct{}
	wait *waiting // the delivery waiting for the client's answer, if any; guarded by conn.mu
	// w and timer serve the deliveries that wait for an answer, one at a
	// time (the agent handles one message at a time); touched only by its
	// handler.
	w     *waiting
	timer *time.Timer
	// slots, when the client asked for a window, holds one token per
	// delivery in flight: the forwarder takes one before it queues a
	// delivery, a credit frame gives them back. held reports that the
	// handler has taken the token of the next delivery already; touched
	// only by the handler.
	slots chan struct{}
	held  bool
	// inflight lists, oldest first, the deliveries in the window that the
	// client has not credited yet (nil for one that waits for an ack or a
	// response: its own failure accounts for it). A client credits what
	// its handler has finished, in order, so when the connection closes
	// these are exactly the deliveries it never handled: they are
	// dead-lettered. At most the window long; guarded by conn.mu.
	inflight []*agentbus.Message
	// durable marks an agent registered with "durable": its deliveries
	// stay in the bus's store until settled (a credit, an ack, a response,
	// or, without a window, the write), and when the connection closes it
	// is detached, not stopped: what it had not settled is delivered again
	// to the next client that registers its name.
	durable bool
	h       *forwarder // its handler, to detach only this one
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
		lane:   make(chan ordered, s.cfg.MaxQueuedOps),
		reqs:   make(chan struct{}, s.cfg.MaxRequests),
		idle:   make(chan pendingRequest),
		agents: map[string]*remote{},
	}
}

// run serves the connection until it ends, then cleans up.
func (c *conn) run() {
	p := c.t.Peer()
	c.log.Debug("client connected", "uid", p.UID, "pid", p.PID)
	c.wg.Add(2)
	go c.writeLoop()
	go c.laneLoop()
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

// Bounds of one write of the writer: frames that queued up while the
// connection was busy go out together, in one system call where they fit.
const (
	maxBatch      = 64
	maxBatchBytes = 64 << 10
)

// writeLoop writes queued frames until the connection ends: each time, the
// first waiting and, with it, those queued behind it (up to maxBatch
// frames, or maxBatchBytes once reached), in one SendBatch.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	var batch []item
	var frames [][]byte
	for {
		var it item
		select {
		case it = <-c.out:
		case <-c.ctx.Done():
			return
		}
		batch, frames = batch[:0], frames[:0]
		size := 0
		for {
			if c.encodeDelivery(&it) {
				batch = append(batch, it)
				if it.flushed == nil {
					frames = append(frames, it.frame.B)
					size += len(it.frame.B)
				}
			}
			if it.flushed != nil || len(batch) >= maxBatch || size >= maxBatchBytes {
				break
			}
			select {
			case it = <-c.out:
				continue
			default:
			}
			break
		}
		ok := c.writeBatch(batch, frames)
		clear(batch)
		clear(frames)
		if !ok {
			return
		}
	}
}

// encodeDelivery encodes the deliver frame of it, if it is a delivery not
// yet encoded, and reports whether it is to be written. A message the bus
// accepted always encodes; should one not, the delivery fails as its
// handler would have: a waiting one is settled with the error (a request
// fails, a requires_ack message is retried), another is dead-lettered as
// handler_error, and its place in the window is given back.
func (c *conn) encodeDelivery(it *item) bool {
	if it.deliver == nil || it.frame != nil {
		return true
	}
	b, err := protocol.EncodeBuffer(&protocol.Frame{Op: protocol.OpDeliver, Agent: it.agent, Message: it.deliver})
	if err == nil {
		it.frame = b
		return true
	}
	c.queued.Add(-1)
	if r := it.to; r.slots != nil { // its place in the window first: the failure is visible next
		c.mu.Lock()
		for i, m := range r.inflight {
			if m == it.msg { // nil for a waiting delivery: the first such
				r.inflight = append(r.inflight[:i], r.inflight[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		select {
		case <-r.slots:
		default:
		}
	}
	err = fmt.Errorf("agentbus daemon: deliver to %q: %w", it.agent, err)
	if it.wait != nil {
		c.settle(it.agent, func(w *waiting) bool { return w == it.wait && w.msgID == it.deliver.ID }, err)
	} else {
		c.s.bus.ActorSystem().Root.Send(c.s.bus.DeadLetterPID(), &deadletter.Letter{Message: it.deliver,
			Reason: deadletter.HandlerError, Agent: it.agent, Err: err.Error(), Attempts: it.deliver.Attempts})
	}
	return false
}

// writeBatch writes the frames of batch (frames; a flush, if any, comes
// last) and reports whether the connection goes on. On failure it
// dead-letters the deliveries of the batch that did not go out whole; the
// connection is then done.
func (c *conn) writeBatch(batch []item, frames [][]byte) bool {
	sent, err := len(frames), error(nil)
	if len(frames) > 0 {
		c.wmu.Lock()
		sent, err = transport.SendBatch(c.ctx, c.t, frames)
		c.queued.Add(-int64(len(batch)))
		c.wmu.Unlock()
	} else {
		c.queued.Add(-int64(len(batch)))
	}
	for i, it := range batch {
		switch {
		case it.flushed != nil:
			close(it.flushed)
		case err != nil && i >= sent && it.msg != nil:
			c.undelivered(it, err)
		case err == nil && it.msg != nil && it.to.durable && it.to.slots == nil:
			c.settleDurable(it.agent, it.msg) // written: the client's, as for any agent without a window
		}
		it.frame.Release()
	}
	if err != nil {
		c.cancel() // the reader's Recv returns, and run cleans up
		return false
	}
	return true
}

// emit writes it, or queues it for the writer, waiting while the queue is
// full. It reports false if the connection ended before it was written or
// queued; the caller accounts for it. (What the writer fails to write is
// dead-lettered by the writer.)
//
// It writes it itself, without a hand-off to the writer (one wake-up less
// per frame), when nothing is queued and the transport is free, unless
// queue asks to leave it to the writer, which the reader does while more
// of the client's frames wait to be read: its answers then queue up while
// it reads on, and go out in a few writes instead of one each. Deliveries
// always go to the writer (see item).
func (c *conn) emit(it item, queue bool) bool {
	if !queue && it.frame != nil && c.queued.Load() == 0 && c.wmu.TryLock() {
		if c.queued.Load() == 0 { // still nothing ahead of it
			err := c.t.Send(c.ctx, it.frame.B)
			c.wmu.Unlock()
			it.frame.Release()
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
		it.frame.Release()
		return false
	}
}

// readLoop reads and runs operations until the stream ends; it returns why.
func (c *conn) readLoop() error {
	// One frame, decoded into again and again: an operation keeps what it
	// needs of a frame (its strings, its message), never the frame.
	f := new(protocol.Frame)
	for {
		// Lent: decoding keeps nothing of data, and data is not used
		// after the next receive.
		data, err := transport.RecvLent(c.ctx, c.t)
		c.more = transport.Buffered(c.t)
		*f = protocol.Frame{}
		switch {
		case errors.Is(err, transport.ErrFrameTooLarge):
			err = fmt.Errorf("%w: %v", protocol.ErrFrameTooLarge, err)
		case err != nil:
			return err
		default:
			err = protocol.DecodeInto(f, data)
		}
		if err == nil {
			err = c.handle(f)
		}
		if err == nil {
			c.bad = 0
			continue
		}
		id := f.ID // also from a frame that decoded in part
		c.log.Debug("operation failed", "id", id, "error", err)
		ef := protocol.ErrorFrame(id, err)
		if f.Message != nil {
			ef.MessageID = f.Message.ID // a quiet send has no id: its message names it
		}
		if !c.answer(ef) {
			return c.ctx.Err()
		}
		if isBadFrame(err) {
			c.bad++
			if c.bad >= c.s.cfg.MaxBadFrames {
				c.answer(protocol.ErrorFrame("", fmt.Errorf("%w: %d bad frames in a row; closing",
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

// reply writes or queues f (see emit). It reports false if the connection
// ended.
func (c *conn) reply(f *protocol.Frame) bool {
	return c.emit(encode(f), false)
}

// answer is reply for the reader goroutine: while more of the client's
// frames wait to be read, its answers are left to the writer (see emit).
func (c *conn) answer(f *protocol.Frame) bool {
	return c.emit(encode(f), c.more)
}

// encode returns f as an outbound item.
func encode(f *protocol.Frame) item {
	b, err := protocol.EncodeBuffer(f)
	if err != nil { // a message the bus holds always encodes; be safe anyway
		b, _ = protocol.EncodeBuffer(protocol.ErrorFrame(f.ID, fmt.Errorf("%w: encode %s: %v", protocol.ErrInternal, f.Op, err)))
	}
	return item{frame: b}
}

func (c *conn) ok(id, msgID string) error {
	c.answer(&protocol.Frame{Op: protocol.OpOK, ID: id, MessageID: msgID})
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
		if c.hello {
			return fmt.Errorf("%w: hello already received (version %d)", protocol.ErrInvalidFrame, c.version)
		}
		if f.Version < 1 || f.Version > protocol.Version {
			return fmt.Errorf("%w: %d (this daemon speaks 1..%d)", protocol.ErrUnsupportedVersion, f.Version, protocol.Version)
		}
		c.hello, c.version, c.client = true, f.Version, f.Client
		c.log.Debug("client hello", "client", f.Client, "version", f.Version)
		c.answer(&protocol.Frame{Op: protocol.OpWelcome, ID: f.ID, Version: f.Version, Server: c.s.cfg.Name,
			MaxFrame: c.s.cfg.MaxFrameSize})
		return nil
	case protocol.OpPing:
		c.answer(&protocol.Frame{Op: protocol.OpPong, ID: f.ID})
		return nil
	case protocol.OpRegister:
		return c.register(f)
	case protocol.OpUnregister:
		return c.unregister(f)
	case protocol.OpSend, protocol.OpPublish, protocol.OpRespond, protocol.OpRequest:
		m, err := c.message(f)
		if err != nil {
			return err
		}
		if f.Op == protocol.OpRequest && f.TimeoutMS < 0 {
			return fmt.Errorf("%w: negative timeout_ms", protocol.ErrInvalidFrame)
		}
		return c.order(ordered{op: f.Op, id: f.ID, m: m, timeoutMS: f.TimeoutMS})
	case protocol.OpSync:
		return c.order(ordered{op: f.Op, id: f.ID})
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
		c.answer(&protocol.Frame{Op: protocol.OpStats, ID: f.ID, Stats: st})
		return nil
	case protocol.OpClusterStats:
		cl := bus.Cluster()
		if cl == nil {
			return fmt.Errorf("%w: the daemon is not a cluster node (serve --cluster)", protocol.ErrInvalidFrame)
		}
		ctx, cancel := context.WithTimeout(c.ctx, clusterStatsTimeout)
		defer cancel()
		cs, err := cl.Stats(ctx)
		if err != nil {
			return fmt.Errorf("%w: cluster stats: %v", protocol.ErrInternal, err)
		}
		st, err := json.Marshal(cs)
		if err != nil {
			return fmt.Errorf("%w: encode cluster stats: %v", protocol.ErrInternal, err)
		}
		c.answer(&protocol.Frame{Op: protocol.OpClusterStats, ID: f.ID, Stats: st})
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
	case protocol.OpDeadLetter:
		return c.deadLetter(f)
	case protocol.OpPurgeDeadLetters:
		return c.purgeDeadLetters(f)
	case protocol.OpSubscribers:
		return c.subscribers(f)
	case protocol.OpTopics:
		c.answer(&protocol.Frame{Op: protocol.OpTopics, ID: f.ID, Topics: c.topics(f.Limit)})
		return nil
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
		return fmt.Errorf("%w: register needs an agent name", agentbus.ErrInvalidAgent)
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
	r := &remote{name: f.Agent, gone: make(chan struct{}), durable: f.Durable}
	if f.Window > 0 {
		r.slots = make(chan struct{}, f.Window)
	}
	r.h = &forwarder{c: c, name: f.Agent, r: r}
	opts := []agentbus.SpawnOption{agentbus.WithSupervisor(supervisor.Resuming())}
	if r.durable {
		opts = append(opts, agentbus.WithDurable(), agentbus.WithHandOff())
	}
	// Reserve the name first: the handler may run before Spawn returns.
	c.mu.Lock()
	c.agents[f.Agent] = r
	c.mu.Unlock()
	pid, err := c.s.bus.Spawn(f.Agent, r.h, opts...)
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
	c.log.Debug("agent registered", "agent", f.Agent, "client", c.client, "durable", r.durable)
	c.s.changed(0)
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
	// Its handler lets go of the message it holds (see deliver), and the
	// mailbox is closed before the agent stops: what is queued is
	// dead-lettered as agent_stopped at once, and a send to it from now on
	// is refused, so the name is free when the ok goes out.
	close(r.gone)
	c.stopAgent(name, r, agentbus.ErrAgentStopped)
	c.log.Debug("agent unregistered", "agent", name, "client", c.client)
	c.s.changed(0)
	return c.ok(f.ID, "")
}

// detach detaches the durable agent r from this connection, if it is still
// the one attached under name: it stays in the bus, and what it had not
// settled goes to the next client that registers the name.
func (c *conn) detach(name string, r *remote) {
	if err := c.s.bus.Detach(name, r.h); err != nil && !errors.Is(err, agentbus.ErrNoRecipient) {
		c.log.Warn("durable agent not detached", "agent", name, "error", err)
	}
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

// forwarder is the handler of a remote agent: it queues each message as
// a deliver frame, waiting while the outbound queue is full. A requires_ack
// message then waits for the client's ack, and a request for the client's
// response: like an in-process agent, a remote agent is busy until it has
// answered, and if its connection closes first the requester learns it at
// once (the request is dead-lettered as transport_closed) instead of timing
// out.
//
// The handler runs on a goroutine the agent's mailbox starts afresh for
// each run of messages, whose stack is still small: it does little itself
// (the writer encodes the frame, see item), and its rare paths are
// functions of their own, so that the stack need not grow.
type forwarder struct {
	c    *conn
	name string
	r    *remote
}

// Handle delivers m; see forwarder.
func (f *forwarder) Handle(_ context.Context, m *agentbus.Message) error {
	return f.c.deliver(f.name, f.r, m)
}

// deliver is the handler of remote agent r, named name; see forward.
//
// A windowed agent's handler takes the window slot for the next delivery
// before it returns (see holdSlot), so that while the window is full the
// agent is busy and what it has no room for stays in its mailbox, in
// priority order, rather than in its handler.
func (c *conn) deliver(name string, r *remote, m *agentbus.Message) error {
	if r.slots != nil && !r.held && !c.takeSlot(r) { // flow control: wait for the client's credit
		return c.stopped(name, r, m)
	}
	r.held = false
	var w *waiting
	if m.Type == agentbus.TypeRequest || m.RequiresAck {
		w = c.await(r, m)
	}
	it := item{deliver: m, agent: name, to: r, wait: w}
	if w == nil { // a waiting delivery is dead-lettered by its failure instead
		it.msg = m
	}
	if m.RequiresAck {
		// Once this handler returns without an ack (a timeout, a closed
		// connection), the bus redelivers m and counts the attempt on it,
		// maybe before the writer has encoded it: the writer gets a copy.
		cp := *m
		it.deliver = &cp
	}
	if r.slots != nil { // listed before it is written: its credit may come back at once
		c.mu.Lock()
		r.inflight = append(r.inflight, it.msg)
		c.mu.Unlock()
	}
	queue := true
	if w != nil && c.queued.Load() == 0 {
		// A delivery that waits for an answer, to an idle connection (a
		// request, mostly): this handler waits anyway, so it encodes and
		// writes the frame itself, sparing the writer's wake-up on the
		// request's way.
		queue = !c.encodeWaiting(&it)
	}
	if !c.emit(it, queue) { // not queued: the bus dead-letters it as transport_closed
		c.unlist(r, it.msg)
		if w != nil {
			c.unwait(r, w)
		}
		return errClosedBefore(name)
	}
	if w == nil {
		c.holdSlot(r)
		return nil
	}
	err := c.answerOf(name, r, w, m)
	c.unwait(r, w)
	if errors.Is(err, errUnregistered) {
		return c.stopped(name, r, m)
	}
	if err == nil {
		if r.durable {
			c.settleDurable(name, m)
		}
		c.holdSlot(r)
	}
	return err
}

// encodeWaiting encodes the deliver frame of it, a delivery that waits
// for an answer, and reports whether it did; if it did not, the writer
// encodes it (and fails it as encodeDelivery says).
//
//go:noinline
func (c *conn) encodeWaiting(it *item) bool {
	b, err := protocol.EncodeBuffer(&protocol.Frame{Op: protocol.OpDeliver, Agent: it.agent, Message: it.deliver})
	if err != nil {
		return false
	}
	it.frame = b
	return true
}

// settleDurable tells the bus that the client is done with m, a delivery
// to its durable agent name: it leaves the store.
//
//go:noinline
func (c *conn) settleDurable(name string, m *agentbus.Message) {
	if err := c.s.bus.Settle(name, m.ID); err != nil {
		c.log.Debug("settle", "agent", name, "msg_id", m.ID, "error", err)
	}
}

// holdSlot takes, for a windowed agent r, the slot of its next delivery,
// waiting for the client's credit while the window is full; the handler
// returns only then. It gives up if the client unregisters r or the
// connection ends (m, delivered, needs nothing more).
func (c *conn) holdSlot(r *remote) {
	if r.slots != nil && c.takeSlot(r) {
		r.held = true
	}
}

// errUnregistered: the client unregistered the agent while its handler
// waited.
var errUnregistered = errors.New("agentbus daemon: agent unregistered")

// stopped is what the handler of r returns for m, which it held when the
// client unregistered r or the connection ended. After an unregister, m
// is dead-lettered as agent_stopped, as what was queued for the agent is
// (a letter the daemon records: the bus counts m as handled by the
// agent), except a request: the bus dead-letters it as agent_stopped (a
// handler error wrapping ErrAgentStopped is not the handler's fault), and
// its requester fails at once with that cause.
//
//go:noinline
func (c *conn) stopped(name string, r *remote, m *agentbus.Message) error {
	select {
	case <-r.gone:
	default:
		return errClosedBefore(name)
	}
	if m.Type == agentbus.TypeRequest {
		return fmt.Errorf("agentbus daemon: %q was unregistered before it answered: %w", name, agentbus.ErrAgentStopped)
	}
	c.s.bus.ActorSystem().Root.Send(c.s.bus.DeadLetterPID(), &deadletter.Letter{Message: m,
		Reason: deadletter.AgentStopped, Agent: name, Attempts: m.Attempts,
		Err: fmt.Sprintf("agentbus daemon: %q was unregistered while it held this message: %v", name, agentbus.ErrAgentStopped)})
	return nil
}

// takeSlot takes one of r's window slots, waiting for the client's credit;
// it reports false if the connection ended first.
//
//go:noinline
func (c *conn) takeSlot(r *remote) bool {
	select {
	case r.slots <- struct{}{}:
		return true
	case <-r.gone:
		return false
	case <-c.ctx.Done():
		return false
	}
}

// await makes m the delivery of r that waits for the client's answer and
// returns its waiting (r's own, reused: a remote agent handles one message
// at a time).
func (c *conn) await(r *remote, m *agentbus.Message) *waiting {
	if r.w == nil {
		r.w = &waiting{done: make(chan error, 1)}
	}
	w := r.w
	w.respond = m.Type == agentbus.TypeRequest
	w.id, w.msgID = m.ID, m.ID
	if w.respond {
		w.id = m.RequestID
	}
	c.mu.Lock()
	if c.agents[r.name] == r { // not once the agent is unregistered
		r.wait = w
	}
	c.mu.Unlock()
	return w
}

// unwait ends the wait of w, r's waiting delivery: from then on nothing
// settles it, and an answer that came too late is dropped, so w can be
// used again.
func (c *conn) unwait(r *remote, w *waiting) {
	c.mu.Lock()
	if r.wait == w {
		r.wait = nil
	}
	c.mu.Unlock()
	select {
	case <-w.done:
	default:
	}
}

// unlist takes m, the delivery just listed, off r's window (it was never
// queued).
//
//go:noinline
func (c *conn) unlist(r *remote, m *agentbus.Message) {
	if r.slots == nil {
		return
	}
	c.mu.Lock()
	if n := len(r.inflight); n > 0 && r.inflight[n-1] == m {
		r.inflight = r.inflight[:n-1]
	}
	c.mu.Unlock()
}

// answerOf waits for the client's answer to m, the delivery w of r: nil
// for an ack or a response, the error of a nack; or an error once the
// daemon's ack timeout passes or the connection closes.
//
//go:noinline
func (c *conn) answerOf(name string, r *remote, w *waiting, m *agentbus.Message) error {
	if r.timer == nil {
		r.timer = time.NewTimer(c.s.cfg.AckTimeout)
	} else {
		r.timer.Reset(c.s.cfg.AckTimeout)
	}
	defer r.timer.Stop()
	select {
	case err := <-w.done:
		return err
	case <-r.timer.C:
		return noAnswer(name, w, m, c.s.cfg.AckTimeout)
	case <-r.gone:
		return errUnregistered
	case <-c.ctx.Done():
		return closedBeforeAnswer(name, w, m)
	}
}

// what names the answer w waits for.
func (w *waiting) what() string {
	if w.respond {
		return "response"
	}
	return "ack"
}

//go:noinline
func errClosedBefore(name string) error {
	return fmt.Errorf("agentbus daemon: deliver to %q: %w", name, agentbus.ErrTransportClosed)
}

//go:noinline
func noAnswer(name string, w *waiting, m *agentbus.Message, d time.Duration) error {
	return fmt.Errorf("%w: %q sent no %s to %s within %v", protocol.ErrAckTimeout, name, w.what(), m.ID, d)
}

//go:noinline
func closedBeforeAnswer(name string, w *waiting, m *agentbus.Message) error {
	return fmt.Errorf("agentbus daemon: %q closed before its %s to %s: %w", name, w.what(), m.ID,
		agentbus.ErrTransportClosed)
}

// settle releases the delivery of one of the connection's agents (the one
// named, or any) that waits and matches, with result. It reports whether
// one was waiting.
func (c *conn) settle(agent string, match func(*waiting) bool, result error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, r := range c.agents {
		if r.wait != nil && match(r.wait) && (agent == "" || agent == name) {
			// Sent under the lock (it never blocks: one result per wait),
			// so that once unwait has the lock, the result is in w.done or
			// will never be.
			r.wait.done <- result
			r.wait = nil
			return true
		}
	}
	return false
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
	var done []*agentbus.Message
	if r.durable {
		done = slices.Clone(r.inflight[:n])
	}
	clear(r.inflight[:n])
	r.inflight = r.inflight[n:]
	c.mu.Unlock()
	for _, m := range done {
		if m != nil { // nil: a delivery settled by its own answer
			c.settleDurable(name, m)
		}
	}
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
	if durable, _ := c.s.bus.Durable(name); durable {
		c.settleDurable(name, found)
	}
	c.s.bus.ActorSystem().Root.Send(c.s.bus.DeadLetterPID(), &deadletter.Letter{Message: found,
		Reason: deadletter.HandlerError, Agent: name, Err: result.Error(), Attempts: found.Attempts})
	return true
}

// request runs a request in a goroutine of its own, so the connection goes
// on reading (the response may come from this very connection): an idle
// request goroutine of the connection if one waits, else a new one.
func (c *conn) request(id string, timeoutMS int64, m *agentbus.Message) error {
	select {
	case c.reqs <- struct{}{}:
	default:
		return fmt.Errorf("%w: %d", protocol.ErrTooManyRequests, c.s.cfg.MaxRequests)
	}
	r := pendingRequest{id: id, timeout: time.Duration(timeoutMS) * time.Millisecond, m: m}
	select {
	case c.idle <- r:
	default:
		c.wg.Add(1)
		go c.requester(r)
	}
	return nil
}

// pendingRequest is a request frame handed to a request goroutine.
type pendingRequest struct {
	id      string        // the frame's id
	timeout time.Duration // 0: the bus's RequestTimeout
	m       *agentbus.Message
}

// maxIdleRequesters is how many request goroutines a connection keeps
// waiting for its next request. A goroutine that has run a request has
// grown its stack to what a request takes; a fresh one would grow it again
// (the copies are a good part of a request's cost), so one is kept for
// the next request rather than started anew.
const maxIdleRequesters = 1

// requester runs r, then waits for the next request as the connection's
// idle request goroutine, if there is none yet; it returns when there is,
// or when the connection ends.
func (c *conn) requester(r pendingRequest) {
	defer c.wg.Done()
	for {
		c.runRequest(r)
		if c.idlers.Add(1) > maxIdleRequesters {
			c.idlers.Add(-1)
			return
		}
		select {
		case r = <-c.idle:
			c.idlers.Add(-1)
		case <-c.ctx.Done():
			c.idlers.Add(-1)
			return
		}
	}
}

// runRequest runs r on the bus and answers it; it frees r's place among
// the connection's requests in flight.
func (c *conn) runRequest(r pendingRequest) {
	defer func() { <-c.reqs }()
	ctx, cancel := c.ctx, context.CancelFunc(nil)
	if r.timeout > 0 {
		ctx, cancel = context.WithTimeout(c.ctx, r.timeout)
	}
	resp, err := c.s.bus.Request(ctx, r.m)
	gaveUp := err != nil && (errors.Is(err, agentbus.ErrRequestTimeout) || ctx.Err() != nil)
	if cancel != nil {
		cancel()
	}
	if err != nil {
		if gaveUp {
			c.s.abandoned(r.m.RequestID)
		}
		c.reply(protocol.ErrorFrame(r.id, err))
		return
	}
	c.reply(&protocol.Frame{Op: protocol.OpResponse, ID: r.id, Message: resp})
}

func (c *conn) limit(n int) int {
	if n == 0 || n > c.s.cfg.MaxList {
		return c.s.cfg.MaxList
	}
	return n
}

func (c *conn) deadLetters(f *protocol.Frame) error {
	if f.Limit < 0 {
		return fmt.Errorf("%w: limit %d is negative", protocol.ErrInvalidFrame, f.Limit)
	}
	if f.Reason != "" && !validReason(f.Reason) {
		return fmt.Errorf("%w: unknown reason %q", protocol.ErrInvalidFrame, f.Reason)
	}
	letters := c.s.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.Reason(f.Reason), Agent: f.Agent,
		Topic: f.Topic, Limit: c.limit(f.Limit)})
	out := make([]protocol.Letter, len(letters))
	for i, l := range letters {
		out[i] = protocol.FromLetter(l)
	}
	if len(out) == 0 {
		c.emit(emptyList(protocol.OpDeadLetters, f.ID, "letters"), c.more)
		return nil
	}
	c.answer(&protocol.Frame{Op: protocol.OpDeadLetters, ID: f.ID, Letters: out})
	return nil
}

// emptyList is the answer op with an empty list named field: the frame
// encoder leaves an empty list out, and the protocol sends [].
func emptyList(op, id, field string) item {
	it := encode(&protocol.Frame{Op: op, ID: id})
	b := it.frame.B[:len(it.frame.B)-1] // without its closing brace
	it.frame.B = append(append(b, `,"`+field+`":[]`...), '}')
	return it
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
	if f.Limit < 0 {
		return fmt.Errorf("%w: limit %d is negative", protocol.ErrInvalidFrame, f.Limit)
	}
	q := agentbus.HistoryQuery{Sender: f.Sender, Recipient: f.Recipient, Topic: f.Topic, Limit: c.limit(f.Limit)}
	if f.Type != "" {
		var t agentbus.MessageType
		if err := t.UnmarshalText([]byte(f.Type)); err != nil {
			return fmt.Errorf("%w: unknown type %q", protocol.ErrInvalidFrame, f.Type)
		}
		q.Type = t
	}
	msgs := c.s.bus.QueryHistory(q)
	if len(msgs) == 0 {
		c.emit(emptyList(protocol.OpHistory, f.ID, "messages"), c.more)
		return nil
	}
	c.answer(&protocol.Frame{Op: protocol.OpHistory, ID: f.ID, Messages: msgs})
	return nil
}

// topics lists the bus's subscribed topics, at most limit of them (capped
// like dead_letters), each with its subscribers.
func (c *conn) topics(limit int) []protocol.TopicInfo {
	all := c.s.bus.Topics()
	all = all[:min(len(all), c.limit(limit))]
	out := make([]protocol.TopicInfo, 0, len(all))
	for _, t := range all {
		out = append(out, protocol.TopicInfo{Topic: t, Subscribers: c.s.bus.Subscribers(t)})
	}
	return out
}

// cleanup runs once the reader has returned and the context is canceled:
// it stops the connection's agents (what was queued for them is
// dead-lettered as transport_closed), waits for its goroutines, closes the
// transport, and dead-letters the deliveries that were never written, and
// those of windowed agents that the client never credited.
func (c *conn) cleanup(why error) {
	c.mu.Lock()
	agents := c.agents
	c.agents = map[string]*remote{}
	c.mu.Unlock()
	for name, r := range agents {
		if r.durable {
			c.detach(name, r)
			continue
		}
		c.stopAgent(name, r, agentbus.ErrTransportClosed)
	}
	c.wg.Wait()
	_ = c.t.Close()
	// What was queued and never written; then what was written to a
	// windowed agent and never credited. Each delivery is dead-lettered
	// once: undelivered takes it off its window first.
	for {
		select {
		case it := <-c.out:
			if it.msg != nil && it.to.durable {
				it.frame.Release() // held by the bus, for the next client of the agent
			} else if it.msg != nil {
				c.undelivered(it, transport.ErrClosed)
			} else if it.flushed != nil {
				close(it.flushed)
			}
			continue
		default:
		}
		break
	}
	for name, r := range agents {
		if r.durable {
			continue // not settled: held by the bus for the next client
		}
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
	c.log.Debug("client disconnected", "client", c.client, "agents", len(agents), "reason", fmt.Sprint(why))
}

// undelivered dead-letters a delivery that was queued for the connection
// but not written to it, or written to a windowed agent but never credited
// (it takes the delivery off the agent's window, so that it is
// dead-lettered once). The bus already counted it as handled by the
// remote agent, so it goes to the dead-letter queue as a letter from outside
// the bus's ledger (see agentbus.Accounting).
func (c *conn) undelivered(it item, why error) {
	if r := it.to; r != nil && r.slots != nil { // off its window, where cleanup would find it again
		c.mu.Lock()
		for i, m := range r.inflight {
			if m == it.msg {
				r.inflight[i] = nil
				break
			}
		}
		c.mu.Unlock()
	}
	l := &deadletter.Letter{Message: it.msg, Reason: deadletter.TransportClosed, Agent: it.agent,
		Err: fmt.Sprintf("%v: %v", agentbus.ErrTransportClosed, why), Attempts: it.msg.Attempts}
	c.s.bus.ActorSystem().Root.Send(c.s.bus.DeadLetterPID(), l)
	// Logged too: once the bus has shut down (a daemon stopping with a
	// client that would not read), the log is the only record left. There
	// are at most OutboundQueue such messages per connection.
	c.log.Warn("dead letter", "msg_id", it.msg.ID, "agent", it.agent, "reason", string(deadletter.TransportClosed),
		"error", l.Err)
}
