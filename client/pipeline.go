package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/transport"
)

// DefaultWindow is the default of Options.Window.
const DefaultWindow = 1024

// maxFailures bounds the refusals kept for Flush to report; more are
// counted, not kept.
const maxFailures = 1024

// Pending is a send, publish or reply in flight, as SendAsync,
// PublishAsync and PublishMessageAsync return it. It is settled once the
// daemon has confirmed or refused it, or the connection it went out on
// dropped (then its error is ErrDisconnected: whether the daemon carried
// it out is unknown). Its methods are safe for concurrent use.
type Pending struct {
	msgID string
	seq   uint64
	quiet bool          // confirmed by a sync, not by an ok of its own
	done  chan struct{} // closed once settled
	id    string        // the ID the daemon confirmed; set before done closes
	err   error         // set before done closes

	settled bool     // guarded by Client.amu
	next    *Pending // the next quiet send of the same message ID; guarded by Client.amu
}

// Done returns a channel that is closed once p is settled. It does not
// block.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait blocks until p is settled or ctx ends, and returns the message's
// ID, or the error the daemon refused it with (wrapping the bus's
// sentinel, as Send's errors do), ErrDisconnected, ErrClosed, or ctx's
// error (p is still in flight then).
func (p *Pending) Wait(ctx context.Context) (string, error) {
	select {
	case <-p.done:
		return p.id, p.err
	default:
	}
	select {
	case <-p.done:
		return p.id, p.err
	case <-ctx.Done():
		return "", context.Cause(ctx)
	}
}

// Err returns p's error once it is settled: nil if the daemon accepted it,
// and also while it is in flight. It does not block.
func (p *Pending) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// link is the outbound side of one connection: frames queued for the
// socket, written in batches by whoever flushes (the link's flusher
// goroutine, or a caller that waits for its answer and finds nobody
// writing). Its fields are guarded by Client.amu, but for t and gen.
type link struct {
	t     transport.Conn
	gen   uint64
	max   int  // the transport's largest frame
	quiet bool // the daemon speaks a version with quiet sends; guarded by amu

	frames   []*protocol.Buffer
	spare    []*protocol.Buffer // the slice frames had before the last flush took it
	raw      [][]byte           // the flusher's: frames as SendBatch takes them
	flushing bool               // someone is writing
	kicked   bool               // the flusher was kicked and has not run yet
	unsynced bool               // quiet sends are queued that no sync follows yet
	lazy     int                // quiet replies no sync follows yet (see lazySync)
	dead     bool               // the connection dropped: nothing more is written
	kick     chan struct{}      // capacity 1: wakes the flusher
	done     chan struct{}      // closed when the connection drops
}

func newLink(t transport.Conn, gen uint64) *link {
	return &link{t: t, gen: gen, max: transport.MaxFrame(t), kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// flusher writes what is queued on l each time it is kicked, until l's
// connection drops or the client closes.
func (c *Client) flusher(l *link) {
	defer c.wg.Done()
	for {
		select {
		case <-l.kick:
			c.flush(l)
		case <-l.done:
			return
		case <-c.ctx.Done():
			return
		}
	}
}

// queue appends b to l's frames (taking it over) and, unless the caller
// flushes itself, makes sure the flusher will write it. The caller holds
// amu.
func (c *Client) queueLocked(l *link, b *protocol.Buffer, flushing bool) bool {
	if l.dead {
		b.Release()
		return false
	}
	l.frames = append(l.frames, b)
	if !flushing && !l.flushing && !l.kicked {
		l.kicked = true
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// enqueue queues b on l; with now, the caller writes it (and whatever is
// queued before it) at once unless someone is writing already, who then
// writes it. It reports false if l's connection has dropped.
func (c *Client) enqueue(l *link, b *protocol.Buffer, now bool) bool {
	c.amu.Lock()
	ok := c.queueLocked(l, b, now)
	c.amu.Unlock()
	if ok && now {
		c.flush(l)
	}
	return ok
}

// flush writes l's queued frames, batch after batch, until none is left,
// unless someone else is writing already (who then writes them). A batch
// that holds quiet sends ends with a sync, whose ok confirms them.
func (c *Client) flush(l *link) {
	c.amu.Lock()
	if l.flushing {
		c.amu.Unlock()
		return
	}
	l.flushing, l.kicked = true, false
	for len(l.frames) > 0 && !l.dead {
		if l.unsynced || l.lazy >= lazySync {
			c.syncLocked(l)
		}
		frames := l.frames
		l.frames, l.spare = l.spare[:0], nil
		c.amu.Unlock()
		raw := l.raw[:0]
		for _, b := range frames {
			raw = append(raw, b.B)
		}
		_, err := transport.SendBatch(c.ctx, l.t, raw)
		clear(raw)
		l.raw = raw[:0]
		for i, b := range frames {
			b.Release()
			frames[i] = nil
		}
		if err != nil {
			// The reader sees the connection end and settles what is in
			// flight; what is queued is dropped with it.
			_ = l.t.Close()
		}
		c.amu.Lock()
		l.spare = frames[:0]
		if err != nil {
			l.dead = true
		}
	}
	l.flushing = false
	c.flushed.Broadcast()
	if l.dead {
		for i, b := range l.frames {
			b.Release()
			l.frames[i] = nil
		}
		l.frames = l.frames[:0]
	}
	c.amu.Unlock()
}

// lazySync is how many quiet replies (ReplyAsync) may go out before a
// write ends with a sync for them; fewer are confirmed by the next sync
// that a send, a Flush or a full window asks for.
const lazySync = 64

// syncLocked queues a sync that confirms every quiet send and reply queued
// so far, if any waits for one. The caller holds amu.
func (c *Client) syncLocked(l *link) {
	if !l.unsynced && l.lazy == 0 {
		return
	}
	l.unsynced, l.lazy = false, 0
	if b, err := protocol.EncodeBuffer(&protocol.Frame{Op: protocol.OpSync, ID: syncID(c.aseq)}); err == nil {
		l.frames = append(l.frames, b)
	}
}

// syncNow writes a sync for the quiet replies that wait for one, if any.
func (c *Client) syncNow() {
	c.mu.Lock()
	l := c.lk
	c.mu.Unlock()
	if l == nil {
		return
	}
	c.amu.Lock()
	lazy := l.lazy > 0 && !l.dead
	if lazy {
		c.syncLocked(l)
	}
	c.amu.Unlock()
	if lazy {
		c.flush(l)
	}
}

// drain writes everything queued on l before it returns, waiting for a
// flush in progress to end first.
func (c *Client) drain(l *link) {
	c.amu.Lock()
	for l.flushing {
		c.flushed.Wait()
	}
	c.amu.Unlock()
	c.flush(l)
}

// Async answers carry ids of their own kind: "a<n>" for a send that is
// answered by an ok of its own, "s<seq>" for a sync that confirms the quiet
// sends before seq.
func asyncID(n uint64) string  { return "a" + strconv.FormatUint(n, 10) }
func syncID(seq uint64) string { return "s" + strconv.FormatUint(seq, 10) }

// acquire takes a place in the window of unconfirmed sends, waiting while
// it is full.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.win <- struct{}{}:
		return nil
	default:
	}
	c.syncNow() // quiet replies may hold the window: have them confirmed
	select {
	case c.win <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// How async sends: see async.
type mode int

const (
	modeAsync   mode = iota // quiet, confirmed by the sync that ends its write; written by the flusher
	modeConfirm             // answered by an ok of its own, written at once: a caller waits for it
	modeReply               // quiet, confirmed lazily (see lazySync), written at once
)

// async sends msg with op through the pipeline, as m says, and returns its
// Pending. A send is quiet only where the daemon speaks version 2;
// otherwise every send has an ok of its own.
func (c *Client) async(ctx context.Context, op string, msg *agentbus.Message, m mode) (*Pending, error) {
	if msg == nil {
		return nil, fmt.Errorf("client: %w: nil message", agentbus.ErrInvalidMessage)
	}
	stamp(ctx, msg)
	if msg.ID == "" {
		msg.ID = actors.NewID() // a refusal of a quiet send names it
	}
	if err := c.acquire(ctx); err != nil {
		return nil, err
	}
	l, err := c.current(ctx)
	if err != nil {
		<-c.win
		return nil, err
	}
	now := m != modeAsync
	p := &Pending{msgID: msg.ID, quiet: l.quiet && m != modeConfirm, done: make(chan struct{})}
	f := protocol.Frame{Op: op, Message: msg}
	if !p.quiet {
		f.ID = asyncID(c.nextID.Add(1))
	}
	b, err := protocol.EncodeBuffer(&f)
	if err != nil {
		<-c.win
		return nil, fmt.Errorf("client: %w: %v", agentbus.ErrInvalidMessage, err)
	}
	if max := c.maxFrame(l); len(b.B) > max {
		n := len(b.B)
		b.Release()
		<-c.win
		return nil, fmt.Errorf("client: %w: a frame of %d bytes, at most %d go out", agentbus.ErrMessageTooLarge, n, max)
	}
	c.amu.Lock()
	if l.dead {
		c.amu.Unlock()
		b.Release()
		<-c.win
		return nil, ErrDisconnected
	}
	p.seq = c.aseq
	c.aseq++
	c.fifo = append(c.fifo, p)
	if p.quiet {
		if first := c.byMsg[p.msgID]; first == nil {
			c.byMsg[p.msgID] = p
		} else {
			for first.next != nil {
				first = first.next
			}
			first.next = p
		}
		if m == modeReply {
			l.lazy++
		} else {
			l.unsynced = true
		}
	} else {
		c.byID[f.ID] = p
	}
	c.queueLocked(l, b, now)
	c.amu.Unlock()
	if now {
		c.flush(l)
	}
	return p, nil
}

// settleLocked settles p with the daemon's answer: the message ID, or the
// refusal. The caller holds amu.
func (c *Client) settleLocked(p *Pending, id string, err error) {
	if p.settled {
		return
	}
	p.settled = true
	p.id, p.err = id, err
	if p.quiet {
		c.unchainLocked(p)
	}
	if err != nil {
		if len(c.fails) < maxFailures {
			c.fails = append(c.fails, failure{seq: p.seq, err: err})
		} else {
			c.lostFails++
		}
	}
	close(p.done)
	<-c.win
	// The oldest unsettled send is how far a Flush has got.
	moved := false
	for c.fhead < len(c.fifo) && c.fifo[c.fhead].settled {
		c.fifo[c.fhead] = nil
		c.fhead++
		moved = true
	}
	if c.fhead == len(c.fifo) {
		c.fifo, c.fhead = c.fifo[:0], 0
	} else if c.fhead >= 1024 && c.fhead > len(c.fifo)/2 {
		n := copy(c.fifo, c.fifo[c.fhead:])
		clear(c.fifo[n:])
		c.fifo, c.fhead = c.fifo[:n], 0
	}
	if moved {
		close(c.progress)
		c.progress = make(chan struct{})
	}
}

// unchainLocked takes p, a quiet send, off the list of its message ID.
func (c *Client) unchainLocked(p *Pending) {
	first := c.byMsg[p.msgID]
	switch {
	case first == p && p.next == nil:
		delete(c.byMsg, p.msgID)
	case first == p:
		c.byMsg[p.msgID] = p.next
	case first != nil:
		for q := first; q.next != nil; q = q.next {
			if q.next == p {
				q.next = p.next
				break
			}
		}
	}
	p.next = nil
}

// failure is a refusal kept for Flush.
type failure struct {
	seq uint64
	err error
}

// answerAsync settles what an answer with an async id settles, and
// reports whether f was one.
func (c *Client) answerAsync(f *protocol.Frame) bool {
	switch {
	case len(f.ID) > 1 && f.ID[0] == 's' && f.Op == protocol.OpOK:
		through, err := strconv.ParseUint(f.ID[1:], 10, 64)
		if err != nil {
			return false
		}
		c.amu.Lock()
		// Settling moves the fifo along: take the sends first.
		confirmed := c.confirmed[:0]
		for _, p := range c.fifo[c.fhead:] {
			if p.seq >= through {
				break
			}
			if p.quiet && !p.settled {
				confirmed = append(confirmed, p)
			}
		}
		for i, p := range confirmed {
			c.settleLocked(p, p.msgID, nil)
			confirmed[i] = nil
		}
		c.confirmed = confirmed[:0]
		c.amu.Unlock()
		return true
	case len(f.ID) > 1 && f.ID[0] == 'a':
		c.amu.Lock()
		p := c.byID[f.ID]
		delete(c.byID, f.ID)
		if p != nil {
			if f.Op == protocol.OpError {
				c.settleLocked(p, "", protocol.FrameError(f))
			} else {
				c.settleLocked(p, f.MessageID, nil)
			}
		}
		c.amu.Unlock()
		return p != nil
	case f.ID == "" && f.Op == protocol.OpError && f.MessageID != "":
		c.amu.Lock()
		p := c.byMsg[f.MessageID]
		if p != nil {
			c.settleLocked(p, "", protocol.FrameError(f))
		}
		c.amu.Unlock()
		return p != nil
	}
	return false
}

// dropLink marks l dead and settles everything in flight with
// ErrDisconnected: what went out on l may or may not have been carried
// out, and l's answers will never come.
func (c *Client) dropLink(l *link) {
	c.amu.Lock()
	l.dead = true
	lost := append([]*Pending(nil), c.fifo[c.fhead:]...)
	for _, p := range lost {
		c.settleLocked(p, "", ErrDisconnected)
	}
	clear(c.byID)
	if !l.flushing {
		for i, b := range l.frames {
			b.Release()
			l.frames[i] = nil
		}
		l.frames = l.frames[:0]
	}
	c.amu.Unlock()
}

// SendAsync sends msg (a direct message unless its Type says otherwise)
// without waiting for the daemon's answer, and returns its Pending. It
// blocks only while the window of unconfirmed sends (Options.Window) is
// full, or while the client reconnects: that is its backpressure. Sends
// of one client reach the daemon in the order their SendAsync calls
// returned, and the daemon carries them out in that order; a refusal
// (ErrNoRecipient, ErrBackpressureTimeout, …) settles the Pending with
// its error, and is reported by the next Flush too. It stamps an empty
// ID (so that a refusal can name the message) and Sender as Send does.
// Errors, when msg was not sent at all: ErrInvalidMessage (it does not
// encode), ErrMessageTooLarge, ErrDisconnected, ErrClosed, or ctx's. Safe
// for concurrent use.
func (c *Client) SendAsync(ctx context.Context, msg *agentbus.Message) (*Pending, error) {
	return c.async(ctx, protocol.OpSend, msg, modeAsync)
}

// PublishAsync publishes payload on topic as SendAsync sends.
func (c *Client) PublishAsync(ctx context.Context, topic string, payload []byte) (*Pending, error) {
	msg := agentbus.NewMessage(agentbus.TypePublish, "", payload)
	msg.Topic = topic
	return c.async(ctx, protocol.OpPublish, msg, modeAsync)
}

// PublishMessageAsync publishes msg (its Topic set) as SendAsync sends.
func (c *Client) PublishMessageAsync(ctx context.Context, msg *agentbus.Message) (*Pending, error) {
	return c.async(ctx, protocol.OpPublish, msg, modeAsync)
}

// Flush blocks until every send, publish and reply this client started
// before the call is settled (confirmed, refused, or lost with a dropped
// connection), or ctx ends. It returns nil if all of them were accepted;
// otherwise an error joining each refusal not yet reported by an earlier
// Flush (errors.Is works on it: agentbus.ErrNoRecipient, ErrDisconnected,
// …; past 1,024 of them, the rest are counted). Errors of its own: ctx's,
// or ErrClosed. Safe for concurrent use.
func (c *Client) Flush(ctx context.Context) error {
	c.amu.Lock()
	target := c.aseq
	c.amu.Unlock()
	c.mu.Lock()
	l := c.lk
	c.mu.Unlock()
	if l != nil {
		c.amu.Lock()
		if !l.dead {
			c.syncLocked(l) // the sync that confirms the quiet sends and replies goes out now
		}
		c.amu.Unlock()
		c.flush(l)
	}
	for {
		c.amu.Lock()
		low := c.aseq
		if c.fhead < len(c.fifo) {
			low = c.fifo[c.fhead].seq
		}
		if low >= target {
			var errs []error
			kept := c.fails[:0]
			for _, f := range c.fails {
				if f.seq < target {
					errs = append(errs, f.err)
				} else {
					kept = append(kept, f)
				}
			}
			clear(c.fails[len(kept):])
			c.fails = kept
			if c.lostFails > 0 {
				errs = append(errs, fmt.Errorf("client: and %d more refusals", c.lostFails))
				c.lostFails = 0
			}
			c.amu.Unlock()
			return errors.Join(errs...)
		}
		progress := c.progress
		c.amu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}
