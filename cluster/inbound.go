package cluster

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/cluster/wire"
)

// originMemory bounds the requests from peers whose origin node is
// remembered, to route their response and their failure back. Older ones
// are forgotten: their response then goes by its Recipient.
const originMemory = 1 << 16

// maxSeen bounds how far above its contiguous base a link's receiver
// remembers sequence numbers (taken out of order, or parked behind a full
// destination): far more than any sender's window. A seq further above is
// taken by giving up the lowest missing ones.
const maxSeen = 1 << 16

// maxConfirmBatch caps the sequence numbers one CONFIRM frame carries.
const maxConfirmBatch = 4096

// inbox is the protoactor process peers send data frames to. Protoactor
// calls it on the gRPC stream's goroutine of the sending peer, in order.
type inbox struct{ n *Node }

func (i inbox) SendUserMessage(_ *actor.PID, msg any) { i.n.receive(actor.UnwrapEnvelopeMessage(msg)) }
func (i inbox) SendSystemMessage(*actor.PID, any)     {}
func (i inbox) Stop(*actor.PID)                       {}

// linkKey names a peer's link: its member id and link incarnation.
type linkKey struct {
	from string
	link uint64
}

// inbound is the receiving side of one peer's link: which sequence numbers
// it has taken (to drop retransmitted copies), and the messages parked
// behind a full destination, in order per destination.
type inbound struct {
	key    linkKey
	used   time.Time
	mu     sync.Mutex
	base   uint64 // every seq <= base was taken and confirmed
	cur    uint64 // 0, or base+1 taken and not in seen (see take)
	seen   seqSet // seq > base taken, and whether it is parked
	parked map[dest]*parking
}

type parking struct {
	items []parkedFrame
}

type parkedFrame struct {
	seq   uint64
	m     *actors.Message
	until time.Time
}

// take reports whether seq was taken before, and whether it is still
// parked; otherwise it records it as taken. The seq right after base, taken
// while nothing else is, is recorded in cur rather than in seen: a link in
// order touches no set.
func (in *inbound) take(seq uint64) (dup, parked bool) {
	if seq <= in.base || seq == in.cur {
		return true, false
	}
	if seq-in.base > maxSeen {
		// Frames below are missing for far longer than retransmission
		// takes: give up on them rather than grow.
		in.giveUp(seq - maxSeen)
	} else if taken, p := in.seen.get(seq); taken {
		return true, p
	}
	if in.cur == 0 && in.seen.n == 0 && seq == in.base+1 {
		in.cur = seq
		return false, false
	}
	in.seen.set(seq, false)
	return false, false
}

// giveUp moves base up to to, as if every seq up to it was taken and
// confirmed.
func (in *inbound) giveUp(to uint64) {
	for s := in.base + 1; s <= to && in.seen.n > 0; s++ {
		in.seen.clear(s)
	}
	in.base = to
	if in.cur <= in.base {
		in.cur = 0
	}
}

// park marks seq, taken, as parked.
func (in *inbound) park(seq uint64) {
	if in.cur == seq {
		in.cur = 0
	}
	if seq > in.base {
		in.seen.set(seq, true)
	}
}

// done marks seq confirmed and moves base up.
func (in *inbound) done(seq uint64) {
	switch {
	case seq == in.cur:
		in.cur = 0
		if seq == in.base+1 {
			in.base = seq
		} else if seq > in.base {
			in.seen.set(seq, false)
		}
	case seq > in.base:
		if taken, _ := in.seen.get(seq); taken {
			in.seen.set(seq, false)
		}
	}
	for in.seen.n > 0 {
		taken, p := in.seen.get(in.base + 1)
		if !taken || p {
			return
		}
		in.seen.clear(in.base + 1)
		in.base++
	}
}

// seqSet is a set of sequence numbers within maxSeen of each other, each
// with a parked flag: two bitmaps over a ring of maxSeen cells (16 KiB),
// allocated when first needed. A Go map here cost a receiving node a
// quarter of a microsecond a message once its destination was full and
// frames parked (BenchmarkClusterSend). The caller keeps every seq it
// passes within maxSeen above its base (see inbound.take), so no two held
// seqs share a cell.
type seqSet struct {
	taken, parked []uint64
	n             int // seqs held
}

func seqBit(seq uint64) (word int, bit uint64) {
	c := seq & (maxSeen - 1)
	return int(c >> 6), 1 << (c & 63)
}

// get reports whether seq is held, and whether it is parked.
func (s *seqSet) get(seq uint64) (taken, parked bool) {
	if s.n == 0 {
		return false, false
	}
	w, b := seqBit(seq)
	return s.taken[w]&b != 0, s.parked[w]&b != 0
}

// set holds seq, parked or not.
func (s *seqSet) set(seq uint64, parked bool) {
	if s.taken == nil {
		s.taken, s.parked = make([]uint64, maxSeen/64), make([]uint64, maxSeen/64)
	}
	w, b := seqBit(seq)
	if s.taken[w]&b == 0 {
		s.taken[w] |= b
		s.n++
	}
	if parked {
		s.parked[w] |= b
	} else {
		s.parked[w] &^= b
	}
}

// clear removes seq.
func (s *seqSet) clear(seq uint64) {
	if s.n == 0 {
		return
	}
	w, b := seqBit(seq)
	if s.taken[w]&b != 0 {
		s.taken[w] &^= b
		s.parked[w] &^= b
		s.n--
	}
}

// receive handles a data frame from a peer. Nothing a peer sends makes it
// panic: what is malformed is dropped and counted.
func (n *Node) receive(v any) {
	f, ok := v.(*wire.Frame)
	if !ok {
		n.stats.malformed.Add(1)
		n.log.Debug("cluster: not a frame", "type", fmt.Sprintf("%T", v))
		return
	}
	if err := f.Check(); err != nil {
		if errors.Is(err, wire.ErrVersion) {
			n.stats.refused.Add(1)
		} else {
			n.stats.malformed.Add(1)
		}
		n.log.Debug("cluster: frame dropped", "error", err)
		return
	}
	n.mu.RLock()
	m := n.members[f.GetFrom()]
	var (
		l    *link
		addr string
	)
	alive := m != nil && m.state == StateAlive
	if alive {
		l = m.link
		if n.cfg.Partition != nil {
			addr = m.node.Address()
		}
	}
	n.mu.RUnlock()
	if !alive {
		n.stats.strays.Add(1) // not (or no longer) a member: it retransmits once it is
		return
	}
	if p := n.cfg.Partition; p != nil && p.blocked(addr, n.addr) {
		return
	}
	n.touch()
	switch f.GetKind() {
	case wire.Kind_DELIVER:
		if len(f.GetConfirms()) > 0 {
			l.confirm(f.GetConfirmLink(), f.GetConfirms())
		}
		if ds := f.GetDeliveries(); len(ds) > 0 {
			key := linkKey{from: f.GetFrom(), link: f.GetLink()}
			in := n.inboundFor(key)
			for _, d := range ds {
				n.deliver(in, key, d)
			}
		}
	case wire.Kind_CONFIRM:
		l.confirm(f.GetLink(), f.GetConfirms())
	case wire.Kind_REQUEST_FAILED:
		n.host.RequestFailed(f.GetRequestId(), f.GetFrom(), f.GetReason(), f.GetError())
	default:
		n.stats.malformed.Add(1)
	}
}

// deliver hands a DELIVER frame's message to the host: at once if its
// destination has room, else parked behind it (in order) and delivered by a
// goroutine that waits for room as the sender allowed. It is confirmed once
// the host took it on.
func (n *Node) deliver(in *inbound, key linkKey, raw []byte) {
	f, err := wire.DecodeDelivery(raw)
	seq := f.Seq
	if err != nil || seq == 0 {
		n.stats.malformed.Add(1)
		return
	}
	in.mu.Lock()
	dup, parked := in.take(seq)
	in.mu.Unlock()
	if dup {
		n.stats.duplicates.Add(1)
		if !parked {
			n.confirm(key, seq) // its confirmation may have been lost
		}
		return
	}
	m, err := wire.Decode(f.Message, n.maxSize)
	if err != nil {
		n.stats.malformed.Add(1)
		n.log.Debug("cluster: message dropped", "from", key.from, "error", err)
		n.finish(in, key, seq)
		return
	}
	n.stats.received.Add(1)
	if m.Type == actors.TypeRequest && f.Origin != "" {
		n.origins.add(m.RequestID, f.Origin)
	}
	dest := parkKey(m)
	patience := max(f.Patience, 0)
	in.mu.Lock()
	if q := in.parked[dest]; dest.kind != 0 && q != nil {
		q.items = append(q.items, parkedFrame{seq: seq, m: m, until: time.Now().Add(patience)})
		in.park(seq)
		in.mu.Unlock()
		return
	}
	in.mu.Unlock()
	err = n.host.Deliver(n.ctx, m, key.from, 0)
	if !errors.Is(err, ErrWouldBlock) || dest.kind == 0 || patience == 0 {
		if errors.Is(err, ErrWouldBlock) {
			err = n.host.Deliver(n.ctx, m, key.from, time.Nanosecond) // it dead-letters it
		}
		if err != nil {
			n.log.Debug("cluster: delivery", "from", key.from, "error", err)
		}
		n.finish(in, key, seq)
		return
	}
	q := &parking{items: []parkedFrame{{seq: seq, m: m, until: time.Now().Add(patience)}}}
	in.mu.Lock()
	in.parked[dest] = q
	in.park(seq)
	in.mu.Unlock()
	n.stats.parked.Add(1)
	if !n.spawn(func() { n.unpark(in, key, dest, q) }) {
		in.mu.Lock()
		delete(in.parked, dest)
		in.mu.Unlock()
		_ = n.host.Deliver(n.ctx, m, key.from, time.Nanosecond)
		n.finish(in, key, seq)
	}
}

// unpark delivers what waits behind a full destination, in order, each
// waiting for room until its sender's patience runs out (then the host
// dead-letters it).
func (n *Node) unpark(in *inbound, key linkKey, dest dest, q *parking) {
	for {
		in.mu.Lock()
		if len(q.items) == 0 {
			delete(in.parked, dest)
			in.mu.Unlock()
			return
		}
		it := q.items[0]
		in.mu.Unlock()
		wait := max(time.Until(it.until), time.Nanosecond)
		if err := n.host.Deliver(n.ctx, it.m, key.from, wait); err != nil {
			n.log.Debug("cluster: parked delivery", "from", key.from, "error", err)
		}
		in.mu.Lock()
		q.items = q.items[1:]
		in.mu.Unlock()
		n.finish(in, key, it.seq)
	}
}

// finish confirms seq.
func (n *Node) finish(in *inbound, key linkKey, seq uint64) {
	in.mu.Lock()
	in.done(seq)
	in.mu.Unlock()
	n.confirm(key, seq)
}

// dest names what a message waits for when it finds no room: an agent or a
// topic, by name.
type dest struct {
	kind byte // 0: nothing (it never waits); 'a': an agent; 't': a topic
	name string
}

// parkKey returns what m waits for when it finds no room; the zero dest
// for what never waits.
func parkKey(m *actors.Message) dest {
	switch m.Type {
	case actors.TypeBroadcast, actors.TypeSubscribe, actors.TypeUnsubscribe:
		return dest{}
	case actors.TypePublish:
		return dest{kind: 't', name: m.Topic}
	}
	if m.Recipient == "" {
		return dest{}
	}
	return dest{kind: 'a', name: m.Recipient}
}

// inboundFor returns the receiving state of a peer's link, replacing that
// of an earlier link of the same peer.
func (n *Node) inboundFor(key linkKey) *inbound {
	n.inMu.Lock()
	defer n.inMu.Unlock()
	in := n.inbound[key.from]
	if in == nil || in.key != key {
		if in == nil && len(n.inbound) >= maxMembers {
			var oldest string
			for k, v := range n.inbound {
				if oldest == "" || v.used.Before(n.inbound[oldest].used) {
					oldest = k
				}
			}
			delete(n.inbound, oldest)
		}
		in = &inbound{key: key, parked: make(map[dest]*parking)}
		n.inbound[key.from] = in
	}
	in.used = time.Now()
	return in
}

// confirm queues a confirmation for the confirmer.
func (n *Node) confirm(key linkKey, seq uint64) {
	n.confirmMu.Lock()
	n.confirmBuf[key] = append(n.confirmBuf[key], seq)
	if !n.confirmArmed {
		// The confirmer wakes once confirmDelay passed, unless a frame to
		// the member took them before; no goroutine wakes per
		// confirmation.
		n.confirmArmed = true
		n.confirmTimer.Reset(confirmDelay)
	}
	n.confirmMu.Unlock()
}

// confirmDelay is how long the confirmer lets confirmations gather (or ride
// along on a DELIVER frame the other way, such as a request's response)
// before it sends them in a CONFIRM frame of their own.
const confirmDelay = time.Millisecond

// takeConfirms takes the confirmations queued for member's link, to ride
// along on a frame to it.
func (n *Node) takeConfirms(member string) (link uint64, seqs []uint64) {
	n.confirmMu.Lock()
	defer n.confirmMu.Unlock()
	for k, s := range n.confirmBuf {
		if k.from == member && len(s) <= maxConfirmBatch {
			delete(n.confirmBuf, k)
			if len(n.confirmBuf) == 0 && n.confirmArmed {
				n.confirmArmed = false
				n.confirmTimer.Stop() // nothing left for the confirmer
			}
			return k.link, s
		}
	}
	return 0, nil
}

// confirmer sends the queued confirmations, one CONFIRM frame per link for
// all that queued since its last round: under load they batch themselves.
func (n *Node) confirmer() {
	defer n.confirmTimer.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.confirmTimer.C:
		}
		n.confirmMu.Lock()
		buf := n.confirmBuf
		n.confirmBuf = make(map[linkKey][]uint64, len(buf))
		n.confirmArmed = false
		n.confirmMu.Unlock()
		for key, seqs := range buf {
			n.mu.RLock()
			m := n.members[key.from]
			var pid *actor.PID
			if m != nil && m.state == StateAlive {
				pid = m.pid
			}
			n.mu.RUnlock()
			if pid == nil {
				continue // gone; it dead-letters what it sent
			}
			for len(seqs) > 0 {
				k := min(len(seqs), maxConfirmBatch)
				n.post(key.from, pid, &wire.Frame{Version: wire.Version, Kind: wire.Kind_CONFIRM, From: n.self,
					Link: key.link, Confirms: seqs[:k]})
				seqs = seqs[k:]
			}
		}
	}
}

// RequestOrigin returns, and forgets, the member a request with id came
// from, if it came from a peer.
func (n *Node) RequestOrigin(id string) (string, bool) { return n.origins.take(id) }

// origins is a bounded map of request IDs to the members they came from.
type origins struct {
	mu  sync.Mutex
	lru *simplelru.LRU[string, string]
}

func newOrigins(size int) *origins {
	l, _ := simplelru.NewLRU[string, string](size, nil) // size > 0
	return &origins{lru: l}
}

func (o *origins) add(id, member string) {
	o.mu.Lock()
	o.lru.Add(id, member)
	o.mu.Unlock()
}

func (o *origins) take(id string) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.lru.Peek(id)
	if ok {
		o.lru.Remove(id)
	}
	return v, ok
}

// intercept checks every gRPC stream of the data link before protoactor
// reads it: protoactor's receiver dereferences what a peer sends without
// checking it (an unregistered type name, an index out of range), on a
// goroutine without recover, which would crash the process. Envelopes that
// would are dropped and counted; a panic that gets through anyway ends the
// stream, not the process.
func (h *hub) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			h.malformed.Add(1)
			h.log.Warn("cluster: a peer's stream made protoactor panic; stream closed", "panic", fmt.Sprint(v))
			err = fmt.Errorf("%w: %v", wire.ErrMalformed, v)
		}
	}()
	return handler(srv, checkedStream{ss, h})
}

// checkedStream sanitizes the message batches a peer sends.
type checkedStream struct {
	grpc.ServerStream
	h *hub
}

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if rm, ok := m.(*remote.RemoteMessage); ok {
		if b := rm.GetMessageBatch(); b != nil {
			if dropped := sanitize(b); dropped > 0 {
				s.h.malformed.Add(uint64(dropped))
				s.h.log.Warn("cluster: envelopes dropped from a peer's batch", "dropped", dropped)
			}
		}
		if c := rm.GetConnectRequest(); c != nil && c.GetServerConnection() == nil {
			rm.MessageType = nil // protoactor would dereference the missing connection
			s.h.malformed.Add(1)
		}
	}
	return nil
}

// sanitize drops the envelopes of b that protoactor's receiver cannot read
// safely: a type name out of range, not registered, or not one the cluster
// sends (only our Frame and protoactor's own actor.* messages are let
// through), a serializer other than protobuf, a target or sender out of
// range. It returns how many it dropped.
func sanitize(b *remote.MessageBatch) int {
	ok := make([]bool, len(b.TypeNames))
	for i, name := range b.TypeNames {
		full := protoreflect.FullName(name)
		if name != wire.FullName && full.Parent() != "actor" {
			continue
		}
		if _, err := protoregistry.GlobalTypes.FindMessageByName(full); err == nil {
			ok[i] = true
		}
	}
	kept := b.Envelopes[:0]
	dropped := 0
	for _, e := range b.Envelopes {
		if e == nil || e.TypeId < 0 || int(e.TypeId) >= len(ok) || !ok[e.TypeId] || e.SerializerId != 0 ||
			e.Target < 0 || int(e.Target) >= len(b.Targets) || b.Targets[e.Target] == nil ||
			e.Sender < 0 || int(e.Sender) > len(b.Senders) || e.Sender > 0 && b.Senders[e.Sender-1] == nil {
			dropped++
			continue
		}
		kept = append(kept, e)
	}
	clear(b.Envelopes[len(kept):])
	b.Envelopes = kept
	return dropped
}
