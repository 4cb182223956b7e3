package agentbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/cluster"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/topics"
)

// ClusterConfig makes the bus one node of a cluster; see cluster.Config
// and docs/cluster.md.
type ClusterConfig = cluster.Config

// Member is one node of the cluster; see cluster.Member.
type Member = cluster.Member

// Partition simulates network partitions between in-process nodes, for
// tests; see cluster.Partition.
type Partition = cluster.Partition

// NewPartition returns a Partition that cuts nothing.
func NewPartition() *Partition { return cluster.NewPartition() }

// The member states; see cluster.State.
const (
	StateAlive = cluster.StateAlive
	StateDead  = cluster.StateDead
	StateLeft  = cluster.StateLeft
)

// The cluster's errors, re-exported.
var (
	// ErrNodeUnreachable: a message's node failed before confirming it
	// (dead letters: node_unreachable).
	ErrNodeUnreachable = cluster.ErrNodeUnreachable
	// ErrNodeLeft: a message's node left before confirming it (dead
	// letters: node_left).
	ErrNodeLeft = cluster.ErrNodeLeft
	// ErrNameConflict: the agent lost its name to an agent of another node
	// (dead letters: name_conflict).
	ErrNameConflict = cluster.ErrNameConflict
	// ErrIncompatiblePeer: a peer of another wire version or cluster was
	// refused.
	ErrIncompatiblePeer = cluster.ErrIncompatible
)

// Cluster is the bus's view of its cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	b       *Bus
	n       *cluster.Node
	expired context.Context // canceled: for deliveries that must not wait
}

// Cluster returns the bus's cluster, or nil when Config.Cluster was nil.
func (b *Bus) Cluster() *Cluster { return b.cluster }

// Self returns this node. It does not block.
func (c *Cluster) Self() Member { return c.n.Self() }

// Members returns every node this one knows, itself included, with its
// state (alive, dead, left), sorted by name. It does not block.
func (c *Cluster) Members() []Member {
	return slices.DeleteFunc(c.n.Members(), func(m Member) bool { return m.State == 0 })
}

// Where returns the node that holds the agent name: this node if the agent
// is local (and this node vouches for it, see Vouches), else the node the
// directory names. It does not block.
func (c *Cluster) Where(agent string) (Member, bool) {
	if c.b.agent(agent) != nil && !c.n.Fenced() && !c.n.Lost(agent) {
		return c.n.Self(), true
	}
	id, ok := c.n.Where(agent)
	if !ok {
		return Member{}, false
	}
	for _, m := range c.n.Members() {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// Vouches reports whether this node vouches for its agents' names now: it
// does not while it is fenced (it heard from no peer for longer than
// FenceAfter and is checking with the others that nobody took their names;
// its agents handle nothing meanwhile). It does not block.
func (c *Cluster) Vouches() bool { return !c.n.Fenced() }

// Counters returns this node's link and membership counts. It does not
// block.
func (c *Cluster) Counters() cluster.Counters { return c.n.Counters() }

// NodeStats is one node's statistics in ClusterStats.
type NodeStats struct {
	Member Member           `json:"member"`
	Stats  Stats            `json:"stats"`
	Links  cluster.Counters `json:"links"`
}

// ClusterStats is the statistics of every node that answered.
type ClusterStats struct {
	Time  time.Time   `json:"time"`
	Nodes []NodeStats `json:"nodes"`
	// Missing lists the alive members that did not answer in time.
	Missing []string `json:"missing,omitempty"`
	// Ledger sums the nodes' Accounting. Each node's balances on its own
	// (a message it sent to another node is handled once that node
	// confirmed it, or dead-lettered here), so the sum does too.
	Ledger Accounting `json:"ledger"`
}

// Stats asks every alive node for its statistics (this one included) and
// returns them, sorted by node name. It blocks until every node answered or
// ctx ends; the nodes that did not answer are listed in Missing. A node's
// answer that cannot be decoded is an error.
func (c *Cluster) Stats(ctx context.Context) (ClusterStats, error) {
	out := ClusterStats{Time: time.Now(), Nodes: []NodeStats{c.nodeStats()}}
	replies, missing := c.n.Stats(ctx)
	out.Missing = missing
	for id, body := range replies {
		var ns NodeStats
		if err := json.Unmarshal(body, &ns); err != nil {
			return out, fmt.Errorf("agentbus: statistics of node %s: %w", id, err)
		}
		out.Nodes = append(out.Nodes, ns)
	}
	slices.SortFunc(out.Nodes, func(a, b NodeStats) int {
		if a.Member.Name != b.Member.Name {
			if a.Member.Name < b.Member.Name {
				return -1
			}
			return 1
		}
		return 0
	})
	for _, ns := range out.Nodes {
		l := ns.Stats.Ledger
		out.Ledger.Accepted += l.Accepted
		out.Ledger.Handled += l.Handled
		out.Ledger.DeadLettered += l.DeadLettered
		out.Ledger.Retried += l.Retried
		out.Ledger.InFlight += l.InFlight
		out.Ledger.Scheduled += l.Scheduled
	}
	return out, nil
}

func (c *Cluster) nodeStats() NodeStats {
	return NodeStats{Member: c.n.Self(), Stats: c.b.Stats(), Links: c.n.Counters()}
}

// startCluster makes the bus a node of the cluster cfg.Cluster names.
func (b *Bus) startCluster() error {
	// The host is called only once Start has returned: before, no peer
	// knows the node.
	n, err := cluster.Start(*b.cfg.Cluster, clusterHost{b}, b.cfg.MaxMessageSize, b.log)
	if err != nil {
		return err
	}
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	b.cluster = &Cluster{b: b, n: n, expired: expired}
	return nil
}

// clusterClaim takes name for a local agent cluster-wide (see
// cluster.Node.Claim), and returns what Spawn must call once it knows
// whether the agent runs.
func (b *Bus) clusterClaim(name string) (func(bool), error) {
	if b.agent(name) != nil {
		return nil, fmt.Errorf("%w: %q", ErrAgentExists, name)
	}
	done, err := b.cluster.n.Claim(name)
	if errors.Is(err, cluster.ErrNameTaken) {
		return nil, fmt.Errorf("%w: %w", ErrAgentExists, err)
	}
	return done, err
}

// clusterGate wraps an agent's handler so that it handles nothing while the
// node is fenced (see cluster.Node.Gate): an agent whose name another node
// took meanwhile fails its message with ErrNameConflict and is stopped.
func (b *Bus) clusterGate(name string, h Handler) Handler {
	n := b.cluster.n
	return HandlerFunc(func(ctx context.Context, m *Message) error {
		if err := n.Gate(ctx, name); err != nil {
			return err
		}
		return h.Handle(ctx, m)
	})
}

// leaveCluster leaves the cluster once the links have drained (Shutdown).
func (b *Bus) leaveCluster(ctx context.Context) error {
	if b.cluster == nil {
		return nil
	}
	return b.cluster.n.Leave(ctx)
}

// stopCluster stops the node (Shutdown).
func (b *Bus) stopCluster() {
	if b.cluster != nil {
		b.cluster.n.Shutdown()
	}
}

// clusterAccounting adds the messages handed to other nodes: accepted,
// handled once confirmed, in flight until then (those handed back are
// dead-lettered, which the ledger counts).
func (b *Bus) clusterAccounting(a *Accounting) {
	if b.cluster == nil {
		return
	}
	c := b.cluster.n.Counters()
	a.Accepted += c.Sent
	a.Handled += c.Confirmed
	a.InFlight += c.InFlight
}

// clusterSend routes msg to another node when that is where it goes: its
// recipient lives there, a subscriber of its topic does, it is a broadcast,
// or it answers a request that came from there. done is false when the
// message stays local and the bus's own path takes it.
func (b *Bus) clusterSend(ctx context.Context, msg *Message, self *actors.Agent) (id string, err error, done bool) {
	n := b.cluster.n
	switch msg.Type {
	case TypeSubscribe, TypeUnsubscribe:
		return "", nil, false
	case TypeAck:
		if msg.Recipient == "" {
			return "", nil, false
		}
	case TypeBroadcast:
		id, err := b.clusterBroadcast(ctx, msg, self)
		return id, err, true
	case TypePublish:
		return b.clusterPublish(ctx, msg, self)
	case TypeResponse:
		if _, ok := b.calls.Load(msg.RequestID); ok {
			return "", nil, false
		}
		if origin, ok := n.RequestOrigin(msg.RequestID); ok {
			id, err := b.forward(ctx, origin, msg, self)
			return id, err, true
		}
	}
	if msg.Recipient == "" || b.agent(msg.Recipient) != nil {
		return "", nil, false
	}
	member, ok := n.Where(msg.Recipient)
	if !ok {
		return "", nil, false
	}
	id, err = b.forward(ctx, member, msg, self)
	return id, err, true
}

// patience returns how long a sender waits for room (Send's rules), which is
// also how long the receiving node may wait for its destination.
func (b *Bus) patience(self *actors.Agent) time.Duration {
	if self != nil {
		return b.cfg.Backpressure.WaitDuration
	}
	return b.cfg.Backpressure.Timeout
}

// remotePatience is how long the receiving node may wait for room in
// msg's destination, for a sender that waits up to wait: twice as long, so
// that a sender facing a stuck remote agent runs out of patience on the
// full window first and gets ErrBackpressureTimeout, as it would from a full
// mailbox in its own process, instead of seeing a slot free each time a
// parked message, sent a moment before it began to wait, expires.
func remotePatience(wait time.Duration) time.Duration { return 2 * wait }

// forward hands msg to member's link under Send's backpressure rules: the
// link's window is full as a mailbox is full.
func (b *Bus) forward(ctx context.Context, member string, msg *Message, self *actors.Agent) (string, error) {
	wait := b.patience(self)
	err := b.cluster.n.Send(ctx, member, msg, wait, remotePatience(wait))
	switch {
	case err == nil:
		b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
		return msg.ID, nil
	case self != nil && errors.Is(err, ErrBackpressureTimeout):
		b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
		l := &deadletter.Letter{Message: msg, Reason: deadletter.MailboxFull, Err: err.Error(), Agent: destOf(msg)}
		b.deadLetter(Outcome{Letter: l, Err: err})
		return msg.ID, deadLetteredError(l, err)
	case errors.Is(err, ErrNodeUnreachable), errors.Is(err, ErrNodeLeft), errors.Is(err, cluster.ErrClosed):
		return "", fmt.Errorf("%w: %q: %w", ErrNoRecipient, msg.Recipient, err)
	default:
		return "", err
	}
}

// destOf is where a letter of msg was bound.
func destOf(m *Message) string {
	if m.Type == TypePublish {
		return "topic " + m.Topic
	}
	return m.Recipient
}

// clusterPublish publishes msg here if a local agent subscribes, and hands
// a copy to every other node one of whose agents does: one copy per node,
// which its own topic actor fans out to its subscribers. With no remote
// subscriber, the bus's own publish takes it (no_subscribers included).
func (b *Bus) clusterPublish(ctx context.Context, msg *Message, self *actors.Agent) (string, error, bool) {
	if err := topics.ValidateSubject(msg.Topic); err != nil {
		return "", err, true
	}
	remote := b.cluster.n.Subscribed(msg.Topic, topics.Match)
	if len(remote) == 0 {
		return "", nil, false
	}
	accepted := false
	if len(b.subs.Match(msg.Topic, nil)) > 0 {
		if id, err := b.publish(ctx, msg, self); id == "" {
			return "", err, true
		}
		accepted = true
	}
	wait := b.patience(self)
	var last error
	for _, member := range remote {
		err := b.cluster.n.Send(ctx, member, msg, wait, remotePatience(wait))
		switch {
		case err == nil && !accepted:
			accepted = true
			b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
		case err != nil && accepted:
			b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: msg, Reason: reasonOf(err), Err: err.Error(),
				Agent: "topic " + msg.Topic}, Err: err})
		case err != nil:
			last = err
		}
	}
	if !accepted {
		return "", last, true
	}
	return msg.ID, nil, true
}

// clusterBroadcast delivers a copy of msg to every local agent but its
// sender, and hands one to every other alive node, whose agents get theirs
// there; without waiting, as a local broadcast.
func (b *Bus) clusterBroadcast(ctx context.Context, msg *Message, self *actors.Agent) (string, error) {
	b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
	reached := b.broadcastLocal(msg)
	for _, m := range b.cluster.n.Members() {
		if m.Self || m.State != cluster.StateAlive {
			continue
		}
		if err := b.cluster.n.Send(ctx, m.ID, msg, 0, 0); err != nil {
			b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: msg.Clone(), Reason: reasonOf(err),
				Err: err.Error(), Agent: "node " + m.Name}, Err: err})
			continue
		}
		if m.Agents > 0 {
			reached++
		}
	}
	if reached == 0 {
		err := errors.New("agentbus: broadcast reached no agent")
		b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: msg, Reason: deadletter.NoRecipient, Err: err.Error()},
			Err: err})
	}
	return msg.ID, nil
}

// clusterHost is the bus as its cluster node sees it.
type clusterHost struct{ b *Bus }

var _ cluster.Host = clusterHost{}

// Deliver takes on a message from another node, as Send would take it from
// a sender outside any handler, but waiting at most wait for room.
func (h clusterHost) Deliver(ctx context.Context, m *actors.Message, _ string, wait time.Duration) error {
	b := h.b
	switch {
	case b.closed.Load() && m.Type != TypeResponse:
		h.refuse(m, deadletter.Shutdown, ErrShutdown)
		return nil
	case m.TTL > 0 && m.Expired(time.Now()):
		h.refuse(m, deadletter.Expired, fmt.Errorf("%w: ttl %v ran out on the way", ErrExpired, m.TTL))
		return nil
	}
	switch {
	case wait <= 0:
		ctx = h.b.cluster.expired // try once: a full destination says so at once
	case wait >= b.cfg.Backpressure.Timeout:
		// Send's own patience bounds the wait: no deadline to set.
	default:
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	var err error
	switch m.Type {
	case TypeBroadcast:
		if b.broadcastLocal(m) > 0 {
			b.report(Outcome{Kind: OutcomeAccepted, Message: m})
		}
		return nil
	case TypePublish:
		_, err = b.publish(ctx, m, nil)
	case TypeResponse:
		if _, pending := b.calls.Load(m.RequestID); pending || m.Recipient == "" || b.agent(m.Recipient) == nil {
			_, err = b.respond(ctx, m, nil)
			break
		}
		fallthrough
	default:
		if m.Type == TypeAck && m.Recipient == "" {
			_, err = b.ack(m)
			if err != nil {
				err = nil // an ack for nothing pending is dropped, as Send refuses it
			}
			break
		}
		a := b.agent(m.Recipient)
		if a == nil {
			h.refuse(m, deadletter.NoRecipient, fmt.Errorf("%w: %q is not on this node", ErrNoRecipient, m.Recipient))
			return nil
		}
		_, err = b.post(ctx, a, m, nil)
	}
	switch {
	case err == nil:
		return nil
	case wait <= 0 && (errors.Is(err, ErrBackpressureTimeout) || errors.Is(err, ErrMailboxFull)):
		return fmt.Errorf("%w: %w", cluster.ErrWouldBlock, err)
	}
	reason := reasonOf(err)
	switch {
	case errors.Is(err, ErrBackpressureTimeout):
		reason = deadletter.MailboxFull
	case errors.Is(err, ErrNoRecipient):
		reason = deadletter.NoRecipient
	case errors.Is(err, ErrClosed):
		reason = deadletter.Shutdown
	}
	h.refuse(m, reason, err)
	return nil
}

// refuse records that this node took m on and dead-lettered it at once.
func (h clusterHost) refuse(m *Message, reason deadletter.Reason, err error) {
	h.b.report(Outcome{Kind: OutcomeAccepted, Message: m})
	h.b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: m, Reason: reason, Err: err.Error(), Agent: destOf(m)},
		Err: err})
}

func (h clusterHost) Undelivered(m *actors.Message, member, dest string, cause error) {
	err := fmt.Errorf("agentbus: %s did not confirm %s: %w", member, m.ID, cause)
	h.b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: m, Reason: reasonOf(cause), Err: err.Error(),
		Agent: dest}, Err: err, Queued: true}) // the link counted it
}

func (h clusterHost) Confirmed(m *actors.Message, member string) {
	if h.b.reportHandled {
		h.b.report(Outcome{Kind: OutcomeHandled, Message: m, Dest: "node " + member, Queued: true})
	}
}

func (h clusterHost) RequestFailed(id, member, reason, text string) {
	h.b.fail(id, fmt.Errorf("%w: request %s on node %s (%s): %w", ErrDeadLettered, id, member, reason, errors.New(text)))
}

func (h clusterHost) Agents() []string { return h.b.Agents() }

func (h clusterHost) Topics() []string { return h.b.subs.Topics() }

func (h clusterHost) Generation() (agents, topics uint64) {
	return h.b.agentsGen.Load(), h.b.subs.Generation()
}

func (h clusterHost) HasAgent(name string) bool { return h.b.agent(name) != nil }

func (h clusterHost) StopAgent(name string, cause error) {
	if a := h.b.agent(name); a != nil {
		a.Mailbox().Close(cause)
		h.b.system.Root.Stop(a.PID())
	}
}

func (h clusterHost) Stats() ([]byte, error) { return json.Marshal(h.b.cluster.nodeStats()) }

func (h clusterHost) Event(e cluster.Event) {
	kind := EventNodeJoined
	if e.Kind == cluster.EventLeft {
		kind = EventNodeLeft
	}
	m := e.Member
	h.b.events.emit(Event{Kind: kind, Node: &m, Err: e.Err})
}

// clusterObserver tells the node a request came from that the request was
// dead-lettered here, so that its Request fails at once.
type clusterObserver struct{ b *Bus }

func (o clusterObserver) Observe(out Outcome) {
	m := out.Message
	if o.b.cluster == nil || m == nil || m.Type != TypeRequest || out.Tap || out.Foreign {
		return
	}
	origin, ok := o.b.cluster.n.RequestOrigin(m.RequestID)
	if !ok {
		return
	}
	text := out.Letter.Err
	if out.Err != nil {
		text = out.Err.Error()
	}
	o.b.cluster.n.FailRequest(origin, m.RequestID, string(out.Letter.Reason), text)
}
