package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/memberlist"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/cluster/wire"
)

// State is a member's state as this node sees it.
type State uint8

// The member states.
const (
	StateAlive State = iota + 1 // answering probes
	StateDead                   // stopped answering and was declared dead
	StateLeft                   // left the cluster (a graceful shutdown)
)

// String returns the state's name, such as "alive".
func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Member is one node of the cluster.
type Member struct {
	ID         string    `json:"id"`          // node name and boot id: unique per run of a node
	Name       string    `json:"name"`        // Config.NodeName
	Addr       string    `json:"addr"`        // membership address (host:port)
	RemoteAddr string    `json:"remote_addr"` // data link address (host:port)
	State      State     `json:"state"`
	Self       bool      `json:"self"`
	Agents     int       `json:"agents"` // agent names it holds, as this node knows them
	Since      time.Time `json:"since"`  // when it entered State
}

// EventKind says what a membership event reports.
type EventKind uint8

// The membership events.
const (
	EventJoined EventKind = iota + 1 // a member joined (or rejoined)
	EventLeft                        // a member left or was declared dead; Err says which
)

// Event is a membership change.
type Event struct {
	Kind   EventKind
	Member Member
	// Err is ErrNodeLeft for a member that left, ErrNodeUnreachable for
	// one declared dead.
	Err error
}

// ErrWouldBlock is what Host.Deliver returns when it was asked not to wait
// and the destination has no room: nothing was reported, and the node
// delivers the message again, waiting, in order behind it.
var ErrWouldBlock = errors.New("agentbus: delivery would block")

// Host is the bus a node serves: the node calls it to deliver what peers send
// and to learn what the bus holds. Its methods must be safe for concurrent
// use.
type Host interface {
	// Deliver takes on m, sent by member from. With wait 0 it must not
	// block: if the destination has no room it returns an error wrapping
	// ErrWouldBlock and reports nothing. Otherwise it waits up to wait for
	// room. It returns nil once the bus has taken responsibility for m:
	// queued, completed, or dead-lettered on this node.
	Deliver(ctx context.Context, m *actors.Message, from string, wait time.Duration) error
	// Undelivered dead-letters m, which this node sent to dest on member
	// and which was never confirmed; cause is ErrNodeUnreachable,
	// ErrNodeLeft or ErrClosed.
	Undelivered(m *actors.Message, member, dest string, cause error)
	// Confirmed reports that member took m on.
	Confirmed(m *actors.Message, member string)
	// RequestFailed fails the pending request id: member dead-lettered it
	// with reason and error text.
	RequestFailed(id, member, reason, text string)
	// Agents returns the names of the local agents.
	Agents() []string
	// Topics returns the local subscription patterns.
	Topics() []string
	// Generation returns numbers that change whenever the local agents,
	// and the local subscriptions, change. It must be cheap.
	Generation() (agents, topics uint64)
	// HasAgent reports whether a local agent has name.
	HasAgent(name string) bool
	// StopAgent stops the local agent name, dead-lettering what it holds
	// with cause. It must not block.
	StopAgent(name string, cause error)
	// Stats returns the bus's statistics, encoded as JSON.
	Stats() ([]byte, error)
	// Event reports a membership change.
	Event(e Event)
}

// Node is this process's member of a cluster: membership (hashicorp
// memberlist, SWIM), the directory of agent names and subscriptions, and the
// data links to the other members (protoactor remote). It is safe for
// concurrent use.
type Node struct {
	cfg     Config
	host    Host
	log     *slog.Logger
	hub     *hub
	ml      *memberlist.Memberlist
	self    string // member id
	name    string
	addr    string // membership address
	raddr   string // data link address
	maxSize int
	start   time.Time // monotonic origin of lastContact
	boot    uint64

	ctx    context.Context // canceled by Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup
	goMu   sync.Mutex // so that no goroutine starts once Shutdown waits
	closed atomic.Bool

	// locksordering: mu -> link.mu; in.mu is never held with mu.
	mu        sync.RWMutex
	members   map[string]*member  // by id, not self
	tombs     map[string]tomb     // members declared dead or gone: what they had announced
	index     map[string][]claim  // agent name → the members claiming it (the winner rules)
	own       entry               // what this node announced
	claiming  map[string]int64    // names being claimed by Spawn, with their claim times
	claimed   map[string]int64    // names claimed, not yet announced
	lost      map[string]struct{} // local names another node won, being stopped
	queries   map[uint64]chan *wire.Frame
	nextQuery uint64
	nextLink  uint64
	refusal   error // the last peer refused at join, for Start's error

	alive       atomic.Int32 // alive members but self
	lastContact atomic.Int64 // ns since start: last time a peer was heard from
	fenced      atomic.Bool  // reconciling after a stall or isolation
	settled     chan struct{}
	wake        chan struct{} // the announcer has work
	recon       chan struct{} // the watchdog should reconcile

	inMu    sync.Mutex
	inbound map[string]*inbound // by sender member id
	origins *origins

	confirmMu    sync.Mutex
	confirmBuf   map[linkKey][]uint64
	confirmTimer *time.Timer // armed while confirmBuf holds any: the confirmer's wake
	confirmArmed bool

	stats counters
}

// member is what this node knows of another.
type member struct {
	node    *memberlist.Node
	info    *wire.Frame // its META
	state   State
	since   time.Time
	entry   entry
	link    *link
	pid     *actor.PID
	leaving bool // it said it leaves (memberlist does not tell left from dead)
}

// entry is one member's directory entry.
type entry struct {
	epoch, version uint64
	names          map[string]int64 // agent name → claim time
	subs           map[string]struct{}
	known          bool // a STATE was applied
}

// tomb remembers the last entry version of a member that left the
// directory, so that its stale frames are not taken for new ones.
type tomb struct {
	epoch, version uint64
	at             time.Time
}

// claim is one member's claim to a name.
type claim struct {
	member string
	time   int64
}

// wins reports whether claim a keeps a name that b also claims: the earlier
// claim, or for equal times the smaller member id.
func (a claim) wins(b claim) bool {
	if a.time != b.time {
		return a.time < b.time
	}
	return a.member < b.member
}

// Bounds of the maps keyed by what peers send.
const (
	maxMembers = 1024
	maxTombs   = 1024
	tombAge    = 10 * time.Minute
)

// Start makes this process a member of the cluster cfg names and joins the
// seeds. Its data links run on the process's protoactor remote (see hub). It blocks until joined (up to cfg.JoinTimeout). Errors:
// ErrInvalidConfig, ErrJoin (no seed answered), ErrIncompatible (a seed
// speaks another wire version or cluster), or the error of a port that
// could not be bound.
func Start(cfg Config, host Host, maxMessageSize int, logger *slog.Logger) (*Node, error) {
	cfg, ip, port, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Logger != nil {
		logger = cfg.Logger
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	n := &Node{
		cfg:          cfg,
		host:         host,
		maxSize:      maxMessageSize,
		start:        time.Now(),
		boot:         uint64(time.Now().UnixNano()),
		members:      make(map[string]*member),
		tombs:        make(map[string]tomb),
		index:        make(map[string][]claim),
		claiming:     make(map[string]int64),
		claimed:      make(map[string]int64),
		lost:         make(map[string]struct{}),
		queries:      make(map[uint64]chan *wire.Frame),
		settled:      make(chan struct{}),
		wake:         make(chan struct{}, 1),
		recon:        make(chan struct{}, 1),
		inbound:      make(map[string]*inbound),
		origins:      newOrigins(originMemory),
		confirmBuf:   make(map[linkKey][]uint64),
		confirmTimer: time.NewTimer(time.Hour),
	}
	close(n.settled)
	n.confirmTimer.Stop()
	n.own = entry{epoch: 1, names: map[string]int64{}, subs: map[string]struct{}{}, known: true}
	n.ctx, n.cancel = context.WithCancel(context.Background())

	// The data link: the process's protoactor remote, bound to the
	// advertised host only. Peers' frames are checked before protoactor
	// reads them (see sanitize).
	n.hub, err = acquireHub(ip, cfg.RemotePort, logger)
	if err != nil {
		return nil, err
	}
	n.raddr = n.hub.addr

	// Membership: memberlist on the advertised host (UDP and TCP).
	mlog := log.New(logWriter{l: logger.With("component", "memberlist"), refuted: n.fence}, "", 0)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{ip}, BindPort: port, Logger: mlog})
	if err != nil {
		n.stopRemote()
		return nil, fmt.Errorf("agentbus: cluster: listen on %s: %w", cfg.Listen, err)
	}
	port = nt.GetAutoBindPort()
	n.addr = net.JoinHostPort(ip, strconv.Itoa(port))
	n.name = cfg.NodeName
	if n.name == "" {
		n.name = n.addr
	}
	n.self = n.name + "/" + hex.EncodeToString(b[:])
	n.log = logger.With("node", n.name)
	if !n.hub.register(n) {
		_ = nt.Shutdown()
		return nil, fmt.Errorf("agentbus: cluster: member id %q is already registered", n.self)
	}
	var transport memberlist.NodeAwareTransport = nt
	if cfg.Partition != nil {
		transport = cfg.Partition.wrap(n.addr, nt)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.self
	mc.BindAddr, mc.BindPort = ip, port
	mc.AdvertiseAddr, mc.AdvertisePort = ip, port
	mc.Transport = transport
	mc.Label = "agentbus/" + cfg.Name
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = 3
	mc.GossipInterval = 100 * time.Millisecond
	mc.GossipToTheDeadTime = 15 * time.Second
	mc.PushPullInterval = 5 * time.Second
	mc.TCPTimeout = time.Second
	mc.EnableCompression = false
	mc.Logger = mlog
	d := delegate{n}
	mc.Delegate, mc.Events, mc.Alive, mc.Merge, mc.Ping = d, d, d, d, d
	n.ml, err = memberlist.Create(mc)
	if err != nil {
		_ = transport.Shutdown()
		n.stopRemote()
		return nil, fmt.Errorf("agentbus: cluster: start membership: %w", err)
	}
	if err := n.join(); err != nil {
		_ = n.ml.Shutdown()
		n.stopRemote()
		return nil, err
	}
	n.spawn(n.announcer)
	n.spawn(n.watchdog)
	n.spawn(n.maintain)
	n.spawn(n.confirmer)
	n.log.Info("cluster node started", "cluster", cfg.Name, "id", n.self, "addr", n.addr, "remote", n.raddr,
		"members", n.ml.NumMembers())
	return n, nil
}

// join joins the seeds, retrying until one answers or JoinTimeout passes.
func (n *Node) join() error {
	seeds := slices.DeleteFunc(slices.Clone(n.cfg.Seeds), func(s string) bool { return s == n.addr })
	if len(seeds) == 0 {
		return nil
	}
	until := time.Now().Add(n.cfg.JoinTimeout)
	var last error
	for {
		joined, err := n.ml.Join(seeds)
		n.mu.RLock()
		refusal := n.refusal
		n.mu.RUnlock()
		if refusal != nil {
			return fmt.Errorf("%w: %w", ErrIncompatible, refusal)
		}
		if joined > 0 {
			return nil
		}
		last = err
		if time.Now().After(until) {
			return fmt.Errorf("%w: no seed of %v answered within %v: %w", ErrJoin, seeds, n.cfg.JoinTimeout, last)
		}
		time.Sleep(100 * time.Millisecond) // between join attempts: no result to wait for
	}
}

// Self returns this node as a member.
func (n *Node) Self() Member {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return Member{ID: n.self, Name: n.name, Addr: n.addr, RemoteAddr: n.raddr, State: StateAlive, Self: true,
		Agents: len(n.own.names), Since: n.start}
}

// Members returns every member this node knows, itself included, sorted by
// name and id. It does not block.
func (n *Node) Members() []Member {
	all := []Member{n.Self()}
	n.mu.RLock()
	for id, m := range n.members {
		if m.node == nil {
			continue // a STATE came before its join
		}
		all = append(all, Member{ID: id, Name: m.info.GetNodeName(), Addr: m.node.Address(),
			RemoteAddr: m.info.GetRemoteAddr(), State: m.state, Agents: len(m.entry.names), Since: m.since})
	}
	n.mu.RUnlock()
	slices.SortFunc(all, func(a, b Member) int {
		if c := compare(a.Name, b.Name); c != 0 {
			return c
		}
		return compare(a.ID, b.ID)
	})
	return all
}

func compare(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) }

// Where returns the member id holding the agent name, as this node's
// directory says, and whether any member other than this one holds it. A
// name two members claim is the winner's. It does not block.
func (n *Node) Where(name string) (string, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	w, ok := n.winner(name)
	return w.member, ok
}

// winner returns the winning claim to name among alive members; n.mu held.
func (n *Node) winner(name string) (claim, bool) {
	var best claim
	found := false
	for _, c := range n.index[name] {
		if m := n.members[c.member]; m == nil || m.state != StateAlive {
			continue
		}
		if !found || c.wins(best) {
			best, found = c, true
		}
	}
	return best, found
}

// Subscribed returns the alive members (not this one) with a subscription
// that matches subject. It does not block.
func (n *Node) Subscribed(subject string, match func(pattern, subject string) bool) []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var ids []string
	for id, m := range n.members {
		if m.state != StateAlive {
			continue
		}
		for p := range m.entry.subs {
			if match(p, subject) {
				ids = append(ids, id)
				break
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// Alive returns the ids of the alive members but this one, sorted.
func (n *Node) Alive() []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var ids []string
	for id, m := range n.members {
		if m.state == StateAlive {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// ID returns this node's member id.
func (n *Node) ID() string { return n.self }

// touch records that a peer was heard from. The first contact after a
// silence longer than FenceAfter fences the node before it counts, so that
// nothing (not even a packet that waited in a socket buffer while the
// process was stopped) makes it vouch for its names before it checked them.
func (n *Node) touch() {
	now := int64(time.Since(n.start))
	if n.alive.Load() > 0 && time.Duration(now-n.lastContact.Load()) > n.cfg.FenceAfter {
		n.fence()
	}
	n.lastContact.Store(now)
}

// Leave announces that this node leaves, waits (up to ctx) for its links to
// have every message confirmed, and stops the membership: peers see it as
// left, not dead. It blocks; it returns ctx's error if the links did not
// drain in time (what is unconfirmed is dead-lettered by Shutdown).
func (n *Node) Leave(ctx context.Context) error {
	if n.closed.Load() {
		return nil
	}
	err := n.drain(ctx)
	var wg sync.WaitGroup
	for _, id := range n.Alive() {
		wg.Go(func() { _ = n.send(id, &wire.Frame{Kind: wire.Kind_LEAVING}) })
	}
	wg.Wait()
	timeout := n.cfg.ProbeInterval * 5
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if lerr := n.ml.Leave(max(timeout, 10*time.Millisecond)); lerr != nil && err == nil {
		n.log.Debug("cluster leave", "error", lerr)
	}
	return err
}

// Shutdown stops the node: it leaves the membership if Leave was not called,
// dead-letters what its links still hold (cause ErrClosed), stops the data
// link and waits for its goroutines. It is safe to call more than once.
func (n *Node) Shutdown() {
	n.goMu.Lock()
	first := n.closed.CompareAndSwap(false, true)
	n.goMu.Unlock()
	if !first {
		return
	}
	n.cancel()
	_ = n.ml.Leave(n.cfg.ProbeInterval)
	_ = n.ml.Shutdown()
	n.mu.Lock()
	links := make([]*link, 0, len(n.members))
	for _, m := range n.members {
		if m.link != nil {
			links = append(links, m.link)
		}
	}
	n.mu.Unlock()
	for _, l := range links {
		l.fail(ErrClosed)
	}
	n.wg.Wait()
	n.stopRemote()
	n.log.Info("cluster node stopped")
}

// stopRemote unregisters the node's frame receiver from the data link.
func (n *Node) stopRemote() {
	if n.self != "" {
		n.hub.unregister(n)
	}
}

// logWriter passes memberlist's log lines to slog at Debug.
type logWriter struct {
	l       *slog.Logger
	refuted func()
}

func (w logWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(bytes.TrimRight(p, "\n")))
	if w.refuted != nil && bytes.Contains(p, []byte("Refuting a dead message")) {
		// memberlist says no more than this log line when a peer declared
		// this node dead and it refuted that: its names may have been
		// taken meanwhile, so it reconciles.
		w.refuted()
	}
	return len(p), nil
}
