package agentbus

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/backoff"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/store"
	"github.com/descartes/agentbus/topics"
)

// Defaults of DurabilityConfig.
const (
	DefaultDedupWindow = 2 * time.Minute
	DefaultMaxDedup    = 100_000
)

// DurabilityConfig says where durable agents keep their messages (see
// WithDurable and docs/durability.md).
type DurabilityConfig struct {
	// Store keeps the records of durable agents: their queued messages
	// with attempts and due times, the agents and their subscriptions,
	// the message IDs of the dedup window and, when Store is set, the
	// dead-letter queue. New recovers what it holds (see New). Nil: an
	// in-memory store, so durable agents outlive their connection and a
	// detach, not the process. The bus never closes a Store it was given:
	// close it after Shutdown.
	Store store.Store
	// DedupWindow is how long the ID of a message sent to a durable agent
	// is remembered: a message with the same ID sent to the same agent
	// within it is accepted once (idempotent publish). Default 2 min.
	DedupWindow time.Duration
	// MaxDedup caps the IDs remembered; past it the oldest are forgotten
	// early. Default 100,000.
	MaxDedup int
}

// Store record buckets.
const (
	bucketMessages = "messages" // agent NUL id -> seq, due, message JSON
	bucketAgents   = "agents"   // agent -> nothing
	bucketSubs     = "subscriptions"
	bucketDedup    = "dedup"   // agent NUL id -> expiry (Unix ns)
	bucketLetters  = "letters" // seq (8 bytes) -> letter JSON
)

var (
	// ErrStoreFull: the durable store reached its bound (or the disk is
	// full); the message was not accepted. It comes wrapped with
	// ErrBackpressureTimeout once the sender's patience runs out.
	ErrStoreFull = store.ErrFull
	// ErrNotDurable: Detach or Settle named an agent that is not durable.
	ErrNotDurable = errors.New("agentbus: agent is not durable")
)

// WithDurable makes the agent durable: every message posted to it is
// committed to Config.Durability.Store before Send returns, and leaves the
// store only once it is handled, acknowledged or dead-lettered; its
// subscriptions are kept too. If the bus has a durable agent of that name
// that is detached (recovered at New, or after Detach), Spawn attaches h to
// it instead of starting a new one: it gets its backlog, in priority order,
// each message marked Redelivered when it may have been delivered before.
// See docs/durability.md for the guarantee.
func WithDurable() SpawnOption {
	return func(o *spawnOptions) error { o.durable = true; return nil }
}

// WithHandOff says that the agent's handler hands each message on (to
// another process) rather than finishing it: a durable agent's delivery then
// stays in the store after the handler returns, until Settle. A handler
// error that wraps ErrTransportClosed detaches the agent and keeps the
// message for the next attachment. It has no effect without WithDurable.
func WithHandOff() SpawnOption {
	return func(o *spawnOptions) error { o.handOff = true; return nil }
}

// durability is the bus's durable state: its store and its durable agents.
// New always makes one, so that WithDurable works without a Config.
type durability struct {
	b        *Bus
	st       store.Store
	owned    bool // st is the bus's own (in memory)
	letters  bool // the dead-letter queue is kept in st
	window   time.Duration
	maxDedup int
	seq      atomic.Uint64
	nsubs    atomic.Int64 // durable subscriptions: publishes commit only when some exist
	wg       sync.WaitGroup

	mu      sync.Mutex
	agents  map[string]*durableAgent
	dedup   map[string]*dedupEntry
	order   []string // dedup keys, oldest first (a queue: head is order[head])
	head    int
	floor   uint64 // the lowest letter seq that may still be stored
	plan    []recovered
	closing bool
}

// dedupEntry is a remembered message ID. done is closed once the commit of
// the first send with it has finished; err is its result.
type dedupEntry struct {
	expiry int64
	done   chan struct{}
	err    error
}

// recovered is a stored message of a durable agent, to be posted at New.
type recovered struct {
	agent string
	seq   uint64
	due   int64
	msg   *Message
}

// durableAgent is the handler of a durable agent: it forwards to the
// handler attached, if any, and keeps the deliveries handed off.
type durableAgent struct {
	name string
	d    *durability
	a    *actors.Agent
	h    atomic.Pointer[attachment] // nil while detached
	// Guarded by d.mu.
	held map[string]*Message // handed off (or taken while detached), not settled
	subs map[string]struct{}
}

type attachment struct {
	h       Handler
	handOff bool
}

func (x *durableAgent) Handle(ctx context.Context, m *Message) error {
	at := x.h.Load()
	if at == nil || at.handOff {
		x.d.hold(x, m) // before the handler: its settlement may come at once
	}
	if at == nil { // taken while detaching: it waits for the next attachment
		x.a.Mailbox().PostSystemMessage(&actor.SuspendMailbox{})
		return nil
	}
	err := at.h.Handle(ctx, m)
	if err != nil && at.handOff && errors.Is(err, ErrTransportClosed) {
		if x.h.CompareAndSwap(at, nil) {
			x.a.Mailbox().PostSystemMessage(&actor.SuspendMailbox{})
		}
		return nil // held, for the next attachment
	}
	return err
}

// newDurability opens the durable state of cfg and reads what its store
// holds. It raises cfg's MaxPending, if needed, so that every recovered
// message fits.
func newDurability(cfg *Config) (*durability, error) {
	dc := &cfg.Durability
	switch {
	case dc.DedupWindow < 0:
		return nil, fmt.Errorf("%w: Durability.DedupWindow is %v, must not be negative", ErrInvalidConfig, dc.DedupWindow)
	case dc.MaxDedup < 0:
		return nil, fmt.Errorf("%w: Durability.MaxDedup is %d, must not be negative", ErrInvalidConfig, dc.MaxDedup)
	}
	d := &durability{st: dc.Store, window: dc.DedupWindow, maxDedup: dc.MaxDedup,
		agents: map[string]*durableAgent{}, dedup: map[string]*dedupEntry{}}
	if d.window == 0 {
		d.window = DefaultDedupWindow
	}
	if d.maxDedup == 0 {
		d.maxDedup = DefaultMaxDedup
	}
	if d.st == nil {
		d.st, d.owned = store.NewMemory(0), true
		return d, nil
	}
	d.letters = true
	if err := d.read(); err != nil {
		if p, ok := d.st.(interface{ Path() string }); ok && errors.Is(err, store.ErrCorrupt) {
			err = fmt.Errorf("%w (in %s; move it aside to start empty, or restore a backup)", err, p.Path())
		}
		return nil, err
	}
	if n := len(d.plan); n > cfg.Backpressure.MaxPending {
		cfg.Backpressure.MaxPending = n
	}
	return d, nil
}

// read loads the store's durable agents, messages and dedup window.
func (d *durability) read() error {
	if err := d.st.Scan(bucketAgents, func(k, _ []byte) error {
		d.agents[string(k)] = nil // spawned by recover
		return nil
	}); err != nil {
		return fmt.Errorf("agentbus: recover durable agents: %w", err)
	}
	var maxSeq uint64
	err := d.st.Scan(bucketMessages, func(k, v []byte) error {
		agent, _, ok := strings.Cut(string(k), "\x00")
		if !ok || len(v) < 16 {
			return fmt.Errorf("%w: message record %q is malformed", store.ErrCorrupt, k)
		}
		m := new(Message)
		if err := m.UnmarshalJSON(v[16:]); err != nil {
			return fmt.Errorf("%w: message record %q: %w", store.ErrCorrupt, k, err)
		}
		r := recovered{agent: agent, seq: binary.BigEndian.Uint64(v), due: int64(binary.BigEndian.Uint64(v[8:])), msg: m}
		d.plan = append(d.plan, r)
		maxSeq = max(maxSeq, r.seq)
		if _, ok := d.agents[agent]; !ok {
			d.agents[agent] = nil
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("agentbus: recover durable messages: %w", err)
	}
	slices.SortFunc(d.plan, func(a, b recovered) int { return cmp.Compare(a.seq, b.seq) })
	d.seq.Store(maxSeq)
	now := time.Now().UnixNano()
	var expired []store.Op
	err = d.st.Scan(bucketDedup, func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: dedup record %q is malformed", store.ErrCorrupt, k)
		}
		if exp := int64(binary.BigEndian.Uint64(v)); exp > now {
			d.remember(string(k), &dedupEntry{expiry: exp})
		} else {
			expired = append(expired, store.Delete(bucketDedup, slices.Clone(k)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("agentbus: recover the dedup window: %w", err)
	}
	if len(expired) > 0 {
		return d.st.Submit(expired...)
	}
	return nil
}

// recoverDurable brings back, detached, the durable agents the store holds, their
// subscriptions, their messages (marked Redelivered, in the order they were
// accepted; redeliveries not yet due are scheduled for their due time) and
// the dead-letter queue. It runs in New, before the bus is returned.
func (b *Bus) recoverDurable() error {
	d := b.durable
	d.b = b
	if !d.letters {
		return nil
	}
	counts := map[string]int{}
	for _, r := range d.plan {
		counts[r.agent]++
	}
	names := make([]string, 0, len(d.agents))
	for name := range d.agents {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		o := spawnOptions{mailboxSize: max(b.cfg.MailboxSize, counts[name]), durable: true, detached: true}
		if _, err := b.spawn(name, nil, o); err != nil {
			return fmt.Errorf("agentbus: recover durable agent %q: %w", name, err)
		}
	}
	if err := d.st.Scan(bucketSubs, func(k, _ []byte) error {
		agent, topic, _ := strings.Cut(string(k), "\x00")
		if err := b.Subscribe(topic, agent); err != nil {
			return fmt.Errorf("agentbus: recover subscription of %q to %q: %w", agent, topic, err)
		}
		return nil
	}); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for _, r := range d.plan {
		r.msg.Redelivered = true
		a := b.agent(r.agent)
		if r.due > now {
			b.scheduleRecovered(r.msg, r.agent, time.Duration(r.due-now))
			continue
		}
		if err := a.Mailbox().TryPost(r.msg); err != nil {
			return fmt.Errorf("agentbus: recover message %s of %q: %w", r.msg.ID, r.agent, err)
		}
	}
	b.log.Info("durable state recovered", "agents", len(names), "messages", len(d.plan))
	d.plan = nil
	return b.recoverLetters()
}

// scheduleRecovered schedules the redelivery of a recovered message that
// was waiting for its backoff.
func (b *Bus) scheduleRecovered(m *Message, agent string, delay time.Duration) {
	r := &b.retries
	k := retryKey{m.ID, agent}
	e := &retry{msg: m, agent: agent, err: errors.New("agentbus: recovered with its redelivery pending")}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending[k] = e
	r.timers.Add(1)
	e.timer = time.AfterFunc(delay, func() {
		defer r.timers.Done()
		b.redeliver(k, e)
	})
}

// spawnDurable prepares a durable agent's Spawn: it attaches h to the
// detached durable agent of that name, if there is one (attached reports
// it), or returns the handler that the new agent runs.
func (b *Bus) spawnDurable(name string, h Handler, o spawnOptions) (pid *actor.PID, attached bool, wrapped Handler, err error) {
	d := b.durable
	d.mu.Lock()
	x := d.agents[name]
	if x != nil {
		defer d.mu.Unlock()
		if !x.h.CompareAndSwap(nil, &attachment{h: h, handOff: o.handOff}) {
			return nil, true, nil, fmt.Errorf("%w: %q is attached", ErrAgentExists, name)
		}
		again := make([]*Message, 0, len(x.held))
		for id, m := range x.held {
			cp := m.Clone()
			cp.Redelivered = true
			again = append(again, cp)
			delete(x.held, id)
		}
		x.a.Mailbox().PostSystemMessage(&actor.ResumeMailbox{})
		if len(again) > 0 {
			slices.SortFunc(again, func(a, b *Message) int { return strings.Compare(a.ID, b.ID) })
			d.wg.Go(func() { b.repost(x, again) })
		}
		b.log.Info("durable agent attached", "agent", name, "redelivered", len(again))
		return x.a.PID(), true, nil, nil
	}
	d.mu.Unlock()
	x = &durableAgent{name: name, d: d, held: map[string]*Message{}, subs: map[string]struct{}{}}
	if !o.detached {
		x.h.Store(&attachment{h: h, handOff: o.handOff})
	}
	return nil, false, x, nil
}

// spawned records the durable agent a, just spawned with handler x.
func (b *Bus) spawned(a *actors.Agent, x Handler, o spawnOptions) error {
	d := b.durable
	da := x.(*durableAgent)
	da.a = a
	d.mu.Lock()
	d.agents[a.Name()] = da
	d.mu.Unlock()
	if o.detached {
		return nil
	}
	return d.st.Commit(store.Put(bucketAgents, []byte(a.Name()), nil))
}

// repost queues again, waiting for room, what a durable agent had been
// handed and had not settled when it was detached. What still finds no
// room is held for the next attachment.
func (b *Bus) repost(x *durableAgent, msgs []*Message) {
	p := mailbox.Patience{Wait: b.cfg.Backpressure.Timeout, Backoff: b.cfg.Backpressure.WaitDuration}
	for i, m := range msgs {
		if err := x.a.Mailbox().Post(b.ctx, m, p); err != nil {
			b.durable.mu.Lock()
			for _, m := range msgs[i:] {
				x.held[m.ID] = m
			}
			b.durable.mu.Unlock()
			b.log.Warn("durable messages held for the next attachment", "agent", x.name, "messages", len(msgs)-i,
				"error", err)
			return
		}
	}
}

// Detach detaches h, the handler attached to the durable agent named name
// (nil: whatever handler is attached; a different one stays attached): the
// agent stays, messages keep queueing for it (bounded by its mailbox and
// the store, then backpressure), and what it had been handed and had not
// settled is handed again, marked Redelivered, to the handler that the next
// Spawn with WithDurable attaches. h is compared with ==, so it must be of a
// comparable type (a pointer, not a HandlerFunc). It does not block. It
// returns ErrNoRecipient if there is no such agent, ErrNotDurable if it is
// not durable, ErrInvalidAgent for an h that cannot be compared.
func (b *Bus) Detach(name string, h Handler) error {
	if h != nil && !reflect.TypeOf(h).Comparable() {
		return fmt.Errorf("%w: Detach needs a comparable handler, not a %T", ErrInvalidAgent, h)
	}
	x, err := b.durableAgent(name)
	if err != nil {
		return err
	}
	for {
		at := x.h.Load()
		if at == nil || h != nil && at.h != h {
			return nil
		}
		if x.h.CompareAndSwap(at, nil) {
			x.a.Mailbox().PostSystemMessage(&actor.SuspendMailbox{})
			b.log.Info("durable agent detached", "agent", name)
			return nil
		}
	}
}

// Settle tells the bus that the durable agent named agent, spawned
// WithHandOff, is done with message id: it leaves the store. It does not
// block. It returns ErrNoRecipient or ErrNotDurable for the agent, and
// ErrNotPending if no delivery of id to it awaits settlement.
func (b *Bus) Settle(agent, id string) error {
	x, err := b.durableAgent(agent)
	if err != nil {
		return err
	}
	d := b.durable
	d.mu.Lock()
	_, ok := x.held[id]
	delete(x.held, id)
	d.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s for %q", ErrNotPending, id, agent)
	}
	d.submit(store.Delete(bucketMessages, recordKey(agent, id)))
	return nil
}

// Durable reports whether the agent named name is durable, and whether a
// handler is attached to it. It does not block.
func (b *Bus) Durable(name string) (durable, attached bool) {
	x, err := b.durableAgent(name)
	if err != nil {
		return false, false
	}
	return true, x.h.Load() != nil
}

func (b *Bus) durableAgent(name string) (*durableAgent, error) {
	a := b.agent(name)
	if a == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoRecipient, name)
	}
	b.durable.mu.Lock()
	x := b.durable.agents[name]
	b.durable.mu.Unlock()
	if x == nil || x.a != a {
		return nil, fmt.Errorf("%w: %q", ErrNotDurable, name)
	}
	return x, nil
}

// hold records m as handed to x and not settled.
func (d *durability) hold(x *durableAgent, m *Message) {
	d.mu.Lock()
	x.held[m.ID] = m
	d.mu.Unlock()
}

// unhold forgets that id was handed to agent.
func (d *durability) unhold(agent, id string) { d.held(agent, id, true) }

// isHeld reports whether id was handed to agent and not settled.
func (d *durability) isHeld(agent, id string) bool { return d.held(agent, id, false) }

// held reports whether id was handed to agent and not settled, and forgets
// it if forget is set.
func (d *durability) held(agent, id string, forget bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	x := d.agents[agent]
	if x == nil {
		return false
	}
	_, ok := x.held[id]
	if forget {
		delete(x.held, id)
	}
	return ok
}

// recordKey is the store key of id's record for agent.
func recordKey(agent, id string) []byte {
	k := make([]byte, 0, len(agent)+1+len(id))
	k = append(k, agent...)
	k = append(k, 0)
	return append(k, id...)
}

// record encodes a message record: its sequence number, when its
// redelivery is due (0: now), and the message.
func record(seq uint64, due int64, m *Message) ([]byte, error) {
	b := make([]byte, 16, 16+192+len(m.Payload))
	binary.BigEndian.PutUint64(b, seq)
	binary.BigEndian.PutUint64(b[8:], uint64(due))
	return m.AppendJSON(b)
}

// noDedupKey marks the ctx of a Send that must not be taken for a
// duplicate (a replay sends a message again with its ID).
type noDedupKey struct{}

func withoutDedup(ctx context.Context) context.Context {
	return context.WithValue(ctx, noDedupKey{}, true)
}

// postDurable is post for a durable agent: the message is committed to the
// store before it is queued (and deleted again if it is refused). A message
// whose ID was sent to a (within the dedup window) is accepted once: the
// repeat returns its ID and no error, and is not queued.
func (b *Bus) postDurable(ctx context.Context, a *actors.Agent, msg *Message, self *actors.Agent) (string, error) {
	d := b.durable
	key := recordKey(a.Name(), msg.ID)
	dedup := ctx.Value(noDedupKey{}) == nil
	var entry *dedupEntry
	if dedup {
		var dup bool
		if entry, dup = d.claim(string(key)); dup {
			return msg.ID, nil
		}
	}
	rec, err := record(d.seq.Add(1), 0, msg)
	if err == nil {
		ops := []store.Op{store.Put(bucketMessages, key, rec)}
		if entry != nil {
			var exp [8]byte
			binary.BigEndian.PutUint64(exp[:], uint64(entry.expiry))
			ops = append(ops, store.Put(bucketDedup, key, exp[:]))
		}
		err = b.commitPatiently(ctx, self, ops)
	}
	if entry != nil {
		d.settleClaim(string(key), entry, err)
	}
	if err != nil {
		return "", err
	}
	id, err := b.postTo(ctx, a.Mailbox(), a.Name(), msg, self)
	if err != nil && id == "" { // refused: it was never accepted
		ops := []store.Op{store.Delete(bucketMessages, key)}
		if entry != nil {
			ops = append(ops, store.Delete(bucketDedup, key))
			d.forget(string(key), entry)
		}
		d.submit(ops...)
	}
	return id, err
}

// commitPatiently commits ops, waiting with backoff while the store is
// full, as a sender waits for room in a mailbox: outside handlers up to
// Backpressure.Timeout, inside at most Backpressure.WaitDuration. It returns
// an error wrapping ErrBackpressureTimeout and ErrStoreFull when the store
// stayed full, or the store's error.
func (b *Bus) commitPatiently(ctx context.Context, self *actors.Agent, ops []store.Op) error {
	err := b.durable.st.Commit(ops...)
	if !errors.Is(err, store.ErrFull) {
		return wrapStoreErr(err)
	}
	bp := b.cfg.Backpressure
	patience := bp.Timeout
	if self != nil {
		patience = bp.WaitDuration
	}
	wait := backoff.Policy{Initial: min(time.Millisecond, bp.WaitDuration), Max: bp.WaitDuration}
	until, delay := time.Now().Add(patience), wait.Initial
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		left := time.Until(until)
		if left <= 0 {
			return fmt.Errorf("%w after %v: %w", ErrBackpressureTimeout, patience, err)
		}
		timer.Reset(min(delay, left))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w: %w", ErrBackpressureTimeout, err, context.Cause(ctx))
		}
		if err = b.durable.st.Commit(ops...); !errors.Is(err, store.ErrFull) {
			return wrapStoreErr(err)
		}
		delay = wait.Next(delay)
	}
}

func wrapStoreErr(err error) error {
	if err == nil || errors.Is(err, store.ErrFull) {
		return err
	}
	if errors.Is(err, store.ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	// A write that failed (a full disk): nothing of it was committed.
	return fmt.Errorf("%w: %w", ErrStoreFull, err)
}

// claim reserves key in the dedup window. A key already there is a
// duplicate (dup true), once the commit of its first send succeeded (a
// claim whose commit failed is taken over). Otherwise it returns the new
// entry, which settleClaim completes.
func (d *durability) claim(key string) (e *dedupEntry, dup bool) {
	for {
		d.mu.Lock()
		d.expire(time.Now().UnixNano())
		old := d.dedup[key]
		if old == nil {
			e = &dedupEntry{expiry: time.Now().Add(d.window).UnixNano(), done: make(chan struct{})}
			d.remember(key, e)
			d.mu.Unlock()
			return e, false
		}
		d.mu.Unlock()
		if old.done != nil {
			<-old.done // the first send's commit: one fsync at most
		}
		if old.err == nil {
			return nil, true
		}
		d.forget(key, old)
	}
}

func (d *durability) settleClaim(key string, e *dedupEntry, err error) {
	e.err = err
	close(e.done)
	if err != nil {
		d.forget(key, e)
	}
}

// remember adds key to the dedup window, forgetting the oldest past
// maxDedup. d.mu is held (or d is not shared yet).
func (d *durability) remember(key string, e *dedupEntry) {
	d.dedup[key] = e
	d.order = append(d.order, key)
	for len(d.dedup) > d.maxDedup && d.head < len(d.order) {
		k := d.order[d.head]
		d.order[d.head] = ""
		d.head++
		if d.dedup[k] != nil {
			delete(d.dedup, k)
			d.submit(store.Delete(bucketDedup, []byte(k)))
		}
	}
	d.compact()
}

// expire forgets the keys whose window has passed. d.mu is held.
func (d *durability) expire(now int64) {
	for d.head < len(d.order) {
		k := d.order[d.head]
		if e := d.dedup[k]; e != nil {
			if e.expiry > now {
				break
			}
			delete(d.dedup, k)
			d.submit(store.Delete(bucketDedup, []byte(k)))
		}
		d.order[d.head] = ""
		d.head++
	}
	d.compact()
}

// compact drops the forgotten head of d.order once it is half of it.
func (d *durability) compact() {
	if d.head > 1024 && d.head > len(d.order)/2 {
		d.order = append(d.order[:0], d.order[d.head:]...)
		d.head = 0
	}
}

func (d *durability) forget(key string, e *dedupEntry) {
	d.mu.Lock()
	if d.dedup[key] == e {
		delete(d.dedup, key)
	}
	d.mu.Unlock()
}

// submit queues ops for the store. A closed store (after Shutdown) takes
// nothing more: what is still stored then is recovered at the next start.
func (d *durability) submit(ops ...store.Op) {
	if err := d.st.Submit(ops...); err != nil && !errors.Is(err, store.ErrClosed) && d.b != nil {
		d.b.log.Warn("durable store", "error", err)
	}
}

// commitPublished commits the copies of a publish for the durable agents
// subscribed to its topic, before the publish is queued; it returns the
// keys committed, to be deleted if the publish is refused.
func (b *Bus) commitPublished(ctx context.Context, msg *Message, self *actors.Agent) ([][]byte, error) {
	d := b.durable
	var ops []store.Op
	var keys [][]byte
	for _, name := range b.subs.Subscribers(msg.Topic) {
		d.mu.Lock()
		x := d.agents[name]
		d.mu.Unlock()
		if x == nil {
			continue
		}
		rec, err := record(d.seq.Add(1), 0, msg)
		if err != nil {
			return nil, err
		}
		k := recordKey(name, msg.ID)
		ops = append(ops, store.Put(bucketMessages, k, rec))
		keys = append(keys, k)
	}
	if len(ops) == 0 {
		return nil, nil
	}
	return keys, b.commitPatiently(ctx, self, ops)
}

// unpublished deletes the records commitPublished wrote for a publish that
// was refused.
func (d *durability) unpublished(keys [][]byte) {
	ops := make([]store.Op, len(keys))
	for i, k := range keys {
		ops[i] = store.Delete(bucketMessages, k)
	}
	d.submit(ops...)
}

// subscribed records a durable agent's subscription (it waits for the
// commit); unsubscribed forgets one.
func (b *Bus) subscribed(topic, agent string) error {
	d := b.durable
	d.mu.Lock()
	x := d.agents[agent]
	if x == nil {
		d.mu.Unlock()
		return nil
	}
	_, had := x.subs[topic]
	x.subs[topic] = struct{}{}
	d.mu.Unlock()
	if had {
		return nil
	}
	d.nsubs.Add(1)
	if err := d.st.Commit(store.Put(bucketSubs, []byte(agent+"\x00"+topic), nil)); err != nil {
		return wrapStoreErr(err)
	}
	return nil
}

func (b *Bus) unsubscribed(topic, agent string) {
	d := b.durable
	d.mu.Lock()
	x := d.agents[agent]
	had := false
	if x != nil {
		_, had = x.subs[topic]
		delete(x.subs, topic)
	}
	d.mu.Unlock()
	if had {
		d.nsubs.Add(-1)
		d.submit(store.Delete(bucketSubs, []byte(agent+"\x00"+topic)))
	}
}

// durableStopped forgets a durable agent that stopped (by Stop, or its
// supervisor) while the bus runs: its record and subscriptions leave the
// store (its queued messages were dead-lettered). At Shutdown it stays.
func (b *Bus) durableStopped(a *actors.Agent) {
	d := b.durable
	d.mu.Lock()
	x := d.agents[a.Name()]
	if x == nil || x.a != a || d.closing {
		d.mu.Unlock()
		return
	}
	delete(d.agents, a.Name())
	ops := []store.Op{store.Delete(bucketAgents, []byte(a.Name()))}
	for topic := range x.subs {
		ops = append(ops, store.Delete(bucketSubs, []byte(a.Name()+"\x00"+topic)))
		d.nsubs.Add(-1)
	}
	held := x.held
	x.held = map[string]*Message{}
	d.mu.Unlock()
	for id := range held { // handed off and never settled: gone with the agent
		ops = append(ops, store.Delete(bucketMessages, recordKey(a.Name(), id)))
	}
	d.submit(ops...)
}

// shutdownDurable runs as Shutdown starts: the queues of durable agents
// that have no handler attached are cut at once (dead-lettered as shutdown
// in memory only: they stay in the store and come back at the next start),
// since they could only hold up the drain. Attached ones drain as any agent;
// what the drain does not reach stays stored too.
func (b *Bus) shutdownDurable() {
	d := b.durable
	d.mu.Lock()
	d.closing = true
	var detached []*durableAgent
	for _, x := range d.agents {
		if x != nil && x.h.Load() == nil {
			detached = append(detached, x)
		}
	}
	d.mu.Unlock()
	for _, x := range detached {
		x.a.Mailbox().Close(ErrShutdown)
		b.system.Root.Stop(x.a.PID())
	}
}

// closeDurable waits for the durable state's goroutines, and closes the
// store if the bus made it. It runs at the end of Shutdown.
func (b *Bus) closeDurable() {
	d := b.durable
	d.wg.Wait()
	if d.owned {
		_ = d.st.Close()
	} else {
		_ = d.st.Commit() // what was submitted is written before Shutdown returns
	}
}

// Observe keeps the store in step with the deliveries of durable agents: a
// delivery handled (unless it was handed off: see Settle) or acknowledged
// leaves it; a failed one waiting for its redelivery is written again with
// its attempts and due time; a dead-lettered one leaves it, and the letter
// is kept (when the store is the Config's).
func (d *durability) Observe(o Outcome) {
	switch o.Kind {
	case OutcomeHandled:
		m := o.Message
		if o.Tap || m == nil {
			return
		}
		if !o.Queued {
			if m.Type == TypeAck && m.RequestID != "" { // an ack cancelled a pending redelivery
				d.submit(store.Delete(bucketMessages, recordKey(o.Dest, m.RequestID)))
			}
			return
		}
		if a := d.b.agent(o.Dest); a == nil || !a.Durable() || d.isHeld(o.Dest, m.ID) {
			return
		}
		d.submit(store.Delete(bucketMessages, recordKey(o.Dest, m.ID)))
	case OutcomeRetried:
		m := o.Message
		if o.Tap || m == nil || !d.isDurable(o.Dest) {
			return
		}
		d.unhold(o.Dest, m.ID)
		due := time.Now().Add(d.b.cfg.Retry.delay(m.Attempts)).UnixNano()
		if rec, err := record(d.seq.Add(1), due, m); err == nil {
			d.submit(store.Put(bucketMessages, recordKey(o.Dest, m.ID), rec))
		}
	case OutcomeDeadLettered:
		d.deadLettered(o)
	}
}

func (d *durability) isDurable(agent string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.agents[agent]
	return ok
}

func (d *durability) deadLettered(o Outcome) {
	l := o.Letter
	d.mu.Lock()
	closing := d.closing
	d.mu.Unlock()
	if closing && l.Reason == deadletter.Shutdown {
		return // it stays stored, for the next start
	}
	var ops []store.Op
	if m := o.Message; m != nil && !o.Tap && !o.Foreign && d.isDurable(l.Agent) {
		d.unhold(l.Agent, m.ID)
		ops = append(ops, store.Delete(bucketMessages, recordKey(l.Agent, m.ID)))
	}
	if d.letters && l.Seq > 0 && l.Message != nil {
		if v, err := encodeLetter(l); err == nil {
			ops = append(ops, store.Put(bucketLetters, seqKey(l.Seq), v))
		}
		ops = append(ops, d.evicted(l.Seq)...)
	}
	if len(ops) > 0 {
		d.submit(ops...) // with the letter: atomic, so the message is either stored or a letter
	}
}

// evicted returns the deletions of stored letters that the dead-letter
// queue no longer holds, below seq.
func (d *durability) evicted(seq uint64) []store.Op {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ops []store.Op
	q := d.b.dlq
	for ; d.floor < seq; d.floor++ {
		if _, held := q.Get(d.floor); held {
			break
		}
		ops = append(ops, store.Delete(bucketLetters, seqKey(d.floor)))
	}
	return ops
}

// replayed writes dead letter seq again, with its replay record.
func (b *Bus) replayed(seq uint64) {
	d := b.durable
	if !d.letters {
		return
	}
	l, ok := b.dlq.Get(seq)
	if !ok || l.Message == nil {
		return
	}
	if v, err := encodeLetter(&l); err == nil {
		d.submit(store.Put(bucketLetters, seqKey(seq), v))
	}
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// recoverLetters restores the dead-letter queue from the store.
func (b *Bus) recoverLetters() error {
	d := b.durable
	var ls []deadletter.Letter
	err := d.st.Scan(bucketLetters, func(k, v []byte) error {
		l, err := decodeLetter(v)
		if err != nil || len(k) != 8 {
			return fmt.Errorf("%w: dead letter record %x: %v", store.ErrCorrupt, k, err)
		}
		l.Seq = binary.BigEndian.Uint64(k)
		ls = append(ls, l)
		return nil
	})
	if err != nil {
		return fmt.Errorf("agentbus: recover dead letters: %w", err)
	}
	if len(ls) == 0 {
		d.floor = 1
		return nil
	}
	kept := b.dlq.Restore(ls)
	var ops []store.Op
	for _, l := range ls {
		ops = append(ops, store.Delete(bucketLetters, seqKey(l.Seq)))
	}
	for i := range kept {
		v, err := encodeLetter(&kept[i])
		if err != nil {
			continue
		}
		ops = append(ops, store.Put(bucketLetters, seqKey(kept[i].Seq), v))
	}
	d.floor = kept[0].Seq
	b.log.Info("dead letters recovered", "letters", len(kept))
	return d.st.Commit(ops...)
}

// publishDurable commits msg's copies for its durable subscribers, then
// publishes it; a refused publish takes them back.
func (b *Bus) publishDurable(ctx context.Context, msg *Message, self *actors.Agent) (string, error) {
	if err := topics.ValidateSubject(msg.Topic); err != nil {
		return "", err
	}
	keys, err := b.commitPublished(ctx, msg, self)
	if err != nil {
		return "", err
	}
	id, err := b.publishQueue(ctx, msg, self)
	if err != nil && id == "" && len(keys) > 0 {
		b.durable.unpublished(keys)
	}
	return id, err
}

// PurgeDeadLetters removes every dead letter, from the queue and, when the
// queue is kept in Config.Durability.Store, from the store, and returns how
// many the queue held (DeadLetters().Purge() empties the queue alone). Its
// counts by reason are kept. It does not block on the store.
func (b *Bus) PurgeDeadLetters() int {
	n := b.dlq.Purge()
	d := b.durable
	if !d.letters {
		return n
	}
	var ops []store.Op
	err := d.st.Scan(bucketLetters, func(k, _ []byte) error {
		ops = append(ops, store.Delete(bucketLetters, slices.Clone(k)))
		return nil
	})
	if err != nil {
		b.log.Warn("durable store: purge dead letters", "error", err)
	}
	if len(ops) > 0 {
		d.submit(ops...)
	}
	return n
}
