package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/cluster/wire"
	"github.com/descartes/agentbus/mailbox"
)

// Retransmission of unconfirmed frames: after retransmitFirst, doubling up
// to retransmitMax. Protoactor remote loses the frames of a stream that
// breaks; the receiver drops the copies it already has.
const (
	retransmitFirst = time.Second
	retransmitMax   = 8 * time.Second
)

// leaveGrace is how long a link to a member that left waits for its last
// confirmations before it dead-letters the rest as node_left.
const leaveGrace = time.Second

// link is this node's sending side to one member: a window of frames sent
// and not yet confirmed, in sequence.
type link struct {
	n     *Node
	to    string
	pid   *actor.PID
	epoch uint64
	slots chan struct{} // one token per frame in flight
	done  chan struct{} // closed by fail

	mu       sync.Mutex
	seq      uint64
	pending  inflight // frames sent, not confirmed
	err      error    // why the link failed
	batch    [][]byte // encoded deliveries waiting for the flusher, in sequence
	flushing bool     // the flusher is sending a batch
	flusher  bool     // the flusher runs
	lastPost time.Time
	flushSig chan struct{}
	leaving  atomic.Bool
}

type outbound struct {
	d    []byte // the encoded delivery (wire.EncodeDelivery), as it goes on the wire
	seq  uint64
	m    *actors.Message
	sent time.Time
	wait time.Duration
}

func newLink(n *Node, to string, pid *actor.PID, epoch uint64) *link {
	return &link{n: n, to: to, pid: pid, epoch: epoch, slots: make(chan struct{}, n.cfg.Window),
		done: make(chan struct{}), pending: newInflight(n.cfg.Window), flushSig: make(chan struct{}, 1)}
}

func (l *link) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Send sends m, bound for an agent or topic of member id, over its link. It
// waits up to wait for room in the link's window (as a sender waits for room
// in a mailbox), and tells the receiver it may wait up to patience for room
// in the destination. It returns nil once m is in flight: from then on it is
// either confirmed by the member or handed back to Host.Undelivered. Errors:
// an error wrapping mailbox.ErrFull (no room, wait 0) or
// mailbox.ErrBackpressureTimeout, ErrNodeUnreachable (no such alive
// member), ErrNodeLeft, ErrClosed.
func (n *Node) Send(ctx context.Context, id string, m *actors.Message, wait, patience time.Duration) error {
	n.mu.RLock()
	mem := n.members[id]
	var l *link
	if mem != nil && mem.state == StateAlive {
		l = mem.link
	}
	n.mu.RUnlock()
	if l == nil {
		return fmt.Errorf("%w: %s", ErrNodeUnreachable, id)
	}
	origin := ""
	if m.Type == actors.TypeRequest {
		origin = n.self
	}
	return l.send(ctx, m, wait, patience, origin)
}

func (l *link) send(ctx context.Context, m *actors.Message, wait, patience time.Duration, origin string) error {
	if l.leaving.Load() {
		return fmt.Errorf("%w: %s", ErrNodeLeft, l.to)
	}
	select {
	case l.slots <- struct{}{}:
	default:
		if err := l.await(ctx, wait); err != nil {
			return err
		}
	}
	o := &outbound{m: m, wait: retransmitFirst}
	d := wire.EncodeDelivery(m, patience, origin)
	l.mu.Lock()
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		<-l.slots
		return fmt.Errorf("%w: %s", err, l.to)
	}
	l.seq++
	o.seq = l.seq
	o.d = wire.AppendSeq(d, o.seq) // in the room EncodeDelivery left: no copy
	d = o.d
	now := time.Now()
	o.sent = now
	l.pending.add(o)
	l.n.stats.sent.Add(1)
	// A delivery goes at once when the link is quiet (a request, a
	// trickle); in a stream it joins the batch the link's flusher sends
	// next, so that protoactor and the receiver handle one frame for many.
	// Either way the order is the sequence's: nothing goes at once while a
	// batch waits or is being sent.
	if len(l.batch) == 0 && !l.flushing && now.Sub(l.lastPost) > batchGap {
		l.lastPost = now
		l.mu.Unlock()
		l.post([][]byte{d})
		return nil
	}
	l.lastPost = now
	l.batch = append(l.batch, d)
	first := len(l.batch) == 1 // else the flusher has been told, and takes d with the batch
	start := !l.flusher
	l.flusher = true
	l.mu.Unlock()
	if start && !l.n.spawn(l.flush) {
		l.mu.Lock()
		l.flusher = false
		l.mu.Unlock()
	}
	if first {
		l.n.signal(l.flushSig)
	}
	return nil
}

// post sends deliveries in one frame, with the confirmations that wait for
// this link's member.
func (l *link) post(ds [][]byte) {
	f := &wire.Frame{Version: wire.Version, Kind: wire.Kind_DELIVER, From: l.n.self, Link: l.epoch, Deliveries: ds}
	f.ConfirmLink, f.Confirms = l.n.takeConfirms(l.to)
	l.n.post(l.to, l.pid, f)
}

// batchGap is how soon after the last delivery a new one waits for the
// flusher, to go with others, rather than going at once.
const batchGap = 50 * time.Microsecond

// maxBatch caps the deliveries of one frame.
const maxBatch = 256

// flush sends the batched deliveries, as many as wait (up to maxBatch) in
// one frame, until the link fails or the node stops.
func (l *link) flush() {
	for {
		select {
		case <-l.flushSig:
		case <-l.done:
			return
		case <-l.n.ctx.Done():
			return
		}
		for {
			l.mu.Lock()
			if len(l.batch) == 0 {
				l.flushing = false
				l.mu.Unlock()
				break
			}
			k := min(len(l.batch), maxBatch)
			ds := l.batch[:k:k]
			l.batch = l.batch[k:]
			if len(l.batch) == 0 {
				l.batch = nil
			}
			l.flushing = true
			l.mu.Unlock()
			l.post(ds)
		}
	}
}

// await waits up to wait for a slot in the window.
func (l *link) await(ctx context.Context, wait time.Duration) error {
	full := fmt.Errorf("%w (link to %s, window %d)", mailbox.ErrFull, l.to, cap(l.slots))
	if wait <= 0 {
		return full
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-timer.C:
		return fmt.Errorf("%w after %v: %w", mailbox.ErrBackpressureTimeout, wait, full)
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", mailbox.ErrBackpressureTimeout, context.Cause(ctx))
	case <-l.done:
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		return fmt.Errorf("%w: %s", err, l.to)
	}
}

// confirm takes confirmed frames out of the window.
func (l *link) confirm(epoch uint64, seqs []uint64) {
	if epoch != l.epoch {
		return // for an earlier link to the same member
	}
	var done []*actors.Message
	l.mu.Lock()
	for _, s := range seqs {
		if o := l.pending.take(s); o != nil {
			done = append(done, o.m)
			<-l.slots
		}
	}
	l.mu.Unlock()
	l.n.stats.confirmed.Add(uint64(len(done)))
	for _, m := range done {
		l.n.host.Confirmed(m, l.to)
	}
}

// fail closes the link: every frame still unconfirmed is handed back to the
// host with cause, and senders waiting for room get cause.
func (l *link) fail(cause error) {
	l.mu.Lock()
	if l.err != nil {
		l.mu.Unlock()
		return
	}
	l.err = cause
	close(l.done)
	pending := l.pending.clear()
	l.mu.Unlock()
	for _, o := range pending {
		l.n.stats.undelivered.Add(1)
		l.n.host.Undelivered(o.m, l.to, destOf(o.m), cause)
	}
}

// leave closes the link to a member that left, once its last confirmations
// came in or leaveGrace passed.
func (l *link) leave() {
	l.leaving.Store(true)
	ok := l.n.spawn(func() {
		timer := time.NewTimer(leaveGrace)
		defer timer.Stop()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for l.inFlight() > 0 {
			select {
			case <-timer.C:
				l.fail(ErrNodeLeft)
				return
			case <-tick.C:
			case <-l.n.ctx.Done():
				return // Shutdown fails it
			}
		}
		l.fail(ErrNodeLeft)
	})
	if !ok {
		l.fail(ErrNodeLeft)
	}
}

func (l *link) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending.len()
}

// retransmit sends again the frames unconfirmed for longer than their
// backoff.
func (l *link) retransmit(now time.Time) {
	var again []*outbound
	l.mu.Lock()
	l.pending.each(func(o *outbound) {
		if now.Sub(o.sent) >= o.wait {
			o.sent, o.wait = now, min(o.wait*2, retransmitMax)
			again = append(again, o)
		}
	})
	l.mu.Unlock()
	slices.SortFunc(again, func(a, b *outbound) int { return cmp.Compare(a.seq, b.seq) })
	l.n.stats.retransmitted.Add(uint64(len(again)))
	for len(again) > 0 {
		k := min(len(again), maxBatch)
		ds := make([][]byte, k)
		for i, o := range again[:k] {
			ds[i] = o.d
		}
		l.post(ds)
		again = again[k:]
	}
}

// destOf names where m was bound: its recipient, or "topic " and its topic.
func destOf(m *actors.Message) string {
	if m.Type == actors.TypePublish {
		return "topic " + m.Topic
	}
	return m.Recipient
}

// post sends a data frame to member id (unless a simulated partition cuts
// it off).
func (n *Node) post(id string, pid *actor.PID, f *wire.Frame) {
	if p := n.cfg.Partition; p != nil {
		n.mu.RLock()
		m := n.members[id]
		addr := ""
		if m != nil && m.node != nil {
			addr = m.node.Address()
		}
		n.mu.RUnlock()
		if p.blocked(n.addr, addr) {
			return
		}
	}
	n.hub.sys.Root.Send(pid, f)
}

// drain waits until no link has a frame in flight, or ctx ends.
func (n *Node) drain(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		busy := 0
		n.mu.RLock()
		for _, m := range n.members {
			if m.link != nil && m.state == StateAlive {
				busy += m.link.inFlight()
			}
		}
		n.mu.RUnlock()
		if busy == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// FailRequest tells member origin that its request id was dead-lettered
// here, with reason and error text, so that its Request fails at once.
func (n *Node) FailRequest(origin, id, reason, text string) {
	n.mu.RLock()
	m := n.members[origin]
	var pid *actor.PID
	if m != nil && m.state == StateAlive {
		pid = m.pid
	}
	n.mu.RUnlock()
	if pid == nil {
		return // gone: its request fails with node_unreachable there
	}
	n.post(origin, pid, &wire.Frame{Version: wire.Version, Kind: wire.Kind_REQUEST_FAILED, From: n.self,
		RequestId: id, Reason: reason, Error: text})
}
