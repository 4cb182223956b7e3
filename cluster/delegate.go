package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/descartes/agentbus/cluster/wire"
)

// delegate receives memberlist's callbacks. They run on memberlist's
// goroutines and must not block: anything that sends is handed to a
// goroutine the node owns.
type delegate struct{ n *Node }

var (
	_ memberlist.Delegate      = delegate{}
	_ memberlist.EventDelegate = delegate{}
	_ memberlist.AliveDelegate = delegate{}
	_ memberlist.MergeDelegate = delegate{}
	_ memberlist.PingDelegate  = delegate{}
)

// NodeMeta announces this node's cluster, wire version, name and data link
// address.
func (d delegate) NodeMeta(limit int) []byte {
	b, err := wire.Marshal(&wire.Frame{Kind: wire.Kind_META, From: d.n.self, Cluster: d.n.cfg.Name,
		NodeName: d.n.name, RemoteAddr: d.n.raddr})
	if err != nil || len(b) > limit {
		d.n.log.Error("cluster: node metadata does not fit", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

// meta decodes and checks a peer's metadata.
func (d delegate) meta(peer *memberlist.Node) (*wire.Frame, error) {
	f, err := wire.Unmarshal(peer.Meta)
	if err != nil {
		return nil, fmt.Errorf("peer %s (%s): %w", peer.Name, peer.Address(), err)
	}
	switch {
	case f.GetKind() != wire.Kind_META:
		return nil, fmt.Errorf("peer %s: %w: metadata of kind %v", peer.Name, wire.ErrMalformed, f.GetKind())
	case f.GetCluster() != d.n.cfg.Name:
		return nil, fmt.Errorf("peer %s belongs to cluster %q, not %q", peer.Name, f.GetCluster(), d.n.cfg.Name)
	case f.GetFrom() != peer.Name:
		return nil, fmt.Errorf("peer %s: %w: metadata names %q", peer.Name, wire.ErrMalformed, f.GetFrom())
	}
	return f, nil
}

// NotifyAlive refuses a peer of another wire version or cluster.
func (d delegate) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name == d.n.self {
		return nil
	}
	if _, err := d.meta(peer); err != nil {
		d.n.stats.refused.Add(1)
		d.n.log.Warn("cluster: peer refused", "peer", peer.Name, "error", err)
		return fmt.Errorf("%w: %w", ErrIncompatible, err)
	}
	return nil
}

// NotifyMerge refuses to join a cluster that has a peer NotifyAlive would
// refuse; Start reports it.
func (d delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if p.Name == d.n.self {
			continue
		}
		if _, err := d.meta(p); err != nil {
			d.n.stats.refused.Add(1)
			d.n.mu.Lock()
			d.n.refusal = err
			d.n.mu.Unlock()
			return fmt.Errorf("%w: %w", ErrIncompatible, err)
		}
	}
	return nil
}

// NotifyJoin adds a member (or revives one that was declared dead and
// refuted it), and sends it this node's directory entry under a new epoch.
func (d delegate) NotifyJoin(peer *memberlist.Node) {
	n := d.n
	if peer.Name == n.self {
		return
	}
	info, err := d.meta(peer)
	if err != nil {
		return // NotifyAlive refused it
	}
	n.touch()
	n.mu.Lock()
	m := n.members[peer.Name]
	if m == nil {
		if len(n.members) >= maxMembers {
			n.mu.Unlock()
			n.log.Error("cluster: too many members", "max", maxMembers, "peer", peer.Name)
			return
		}
		m = &member{}
		n.members[peer.Name] = m
	}
	nodeCopy := *peer
	m.node, m.info, m.since = &nodeCopy, info, time.Now()
	if m.state != StateAlive {
		m.state = StateAlive
		n.alive.Add(1)
	}
	m.pid = pidOf(info.GetRemoteAddr(), peer.Name)
	if m.link == nil || m.link.closed() || m.link.leaving.Load() {
		n.nextLink++
		m.link = newLink(n, peer.Name, m.pid, n.boot+n.nextLink)
	}
	n.reindex(peer.Name, m)
	// A new epoch, so that a member that had declared this node dead
	// takes its entry anew.
	n.own.epoch++
	n.mu.Unlock()
	n.log.Info("cluster member joined", "member", peer.Name, "addr", peer.Address(), "remote", info.GetRemoteAddr())
	n.host.Event(Event{Kind: EventJoined, Member: n.memberOf(peer.Name)})
	n.sendState(peer.Name, true)
	n.signal(n.wake)
}

// NotifyLeave marks a member left or dead: its names leave the directory,
// and what this node sent it unconfirmed is dead-lettered.
func (d delegate) NotifyLeave(peer *memberlist.Node) {
	n := d.n
	if peer.Name == n.self {
		return
	}
	cause := ErrNodeUnreachable
	state := StateDead
	n.mu.Lock()
	m := n.members[peer.Name]
	if m == nil || m.state != StateAlive {
		n.mu.Unlock()
		return
	}
	if m.leaving {
		cause, state = ErrNodeLeft, StateLeft
	}
	m.leaving = false
	m.state, m.since = state, time.Now()
	n.alive.Add(-1)
	n.buryLocked(peer.Name, m)
	l := m.link
	n.mu.Unlock()
	n.log.Warn("cluster member gone", "member", peer.Name, "state", state.String())
	if l != nil {
		if state == StateLeft {
			l.leave() // it confirms what it got before it goes
		} else {
			l.fail(cause)
		}
	}
	n.host.Event(Event{Kind: EventLeft, Member: n.memberOf(peer.Name), Err: cause})
}

// NotifyUpdate is called when a member's metadata changes; it never does.
func (d delegate) NotifyUpdate(*memberlist.Node) {}

// NotifyMsg receives a control frame (directory, claims, statistics).
func (d delegate) NotifyMsg(b []byte) {
	n := d.n
	f, err := wire.Unmarshal(b)
	if err != nil {
		n.stats.malformed.Add(1)
		n.log.Debug("cluster: control frame dropped", "error", err)
		return
	}
	n.touch()
	n.control(f)
}

// GetBroadcasts: the node sends its control frames directly, not by gossip.
func (d delegate) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState is this node's directory entry, for memberlist's push/pull;
// nothing while it is fenced (it does not vouch for its names then).
func (d delegate) LocalState(bool) []byte {
	if d.n.isFenced() {
		return nil
	}
	b, err := wire.Marshal(d.n.stateFrame(false))
	if err != nil {
		return nil
	}
	return b
}

// MergeRemoteState applies a peer's directory entry from push/pull.
func (d delegate) MergeRemoteState(b []byte, _ bool) {
	if len(b) == 0 {
		return
	}
	d.NotifyMsg(b)
}

// AckPayload is called when this node answers a probe: a peer was heard
// from.
func (d delegate) AckPayload() []byte {
	d.n.touch()
	return nil
}

// NotifyPingComplete is called when a probe of a peer succeeded.
func (d delegate) NotifyPingComplete(*memberlist.Node, time.Duration, []byte) { d.n.touch() }

// memberOf describes member id.
func (n *Node) memberOf(id string) Member {
	n.mu.RLock()
	defer n.mu.RUnlock()
	m := n.members[id]
	if m == nil || m.node == nil {
		return Member{ID: id}
	}
	return Member{ID: id, Name: m.info.GetNodeName(), Addr: m.node.Address(), RemoteAddr: m.info.GetRemoteAddr(),
		State: m.state, Agents: len(m.entry.names), Since: m.since}
}

// send sends control frame f to member id over memberlist (TCP). It blocks
// for the connection; call it from the node's own goroutines.
func (n *Node) send(id string, f *wire.Frame) error {
	f.From = n.self
	b, err := wire.Marshal(f)
	if err != nil {
		return err
	}
	return n.sendBytes(id, b)
}

// sendBytes sends an encoded control frame to member id.
func (n *Node) sendBytes(id string, b []byte) error {
	n.mu.RLock()
	m := n.members[id]
	var node *memberlist.Node
	if m != nil {
		node = m.node
	}
	n.mu.RUnlock()
	if node == nil {
		return fmt.Errorf("%w: %s", ErrNodeUnreachable, id)
	}
	return n.ml.SendReliable(node, b)
}

// signal wakes a goroutine waiting on c without blocking.
func (n *Node) signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// goSend sends f to member id from a goroutine of the node's. f may be
// sent to others too: it is encoded here, once.
func (n *Node) goSend(id string, f *wire.Frame) {
	f.From = n.self
	b, err := wire.Marshal(f)
	if err != nil {
		n.log.Error("cluster: encode a control frame", "error", err)
		return
	}
	n.spawn(func() {
		if err := n.sendBytes(id, b); err != nil {
			n.log.Debug("cluster: control frame not sent", "member", id, "kind", f.GetKind().String(), "error", err)
		}
	})
}

// spawn runs fn on a goroutine the node waits for at Shutdown, unless the
// node is shutting down; it reports whether fn runs.
func (n *Node) spawn(fn func()) bool {
	n.goMu.Lock()
	defer n.goMu.Unlock()
	if n.closed.Load() {
		return false
	}
	n.wg.Go(fn)
	return true
}
