package agentbus

import (
	"encoding/json"
	"errors"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/topics"
)

// OtherKey is the key under which Stats counts the topics and senders beyond
// Config.StatsMaxKeys, and names that cannot be keys: longer than 256 bytes,
// not valid UTF-8, or OtherKey itself. No agent can be named so ('$' is
// reserved).
const OtherKey = "$other"

// maxStatsKeyLen is the longest name Stats keeps as a key, in bytes: the
// longest agent name and the longest subject.
const maxStatsKeyLen = max(actors.MaxNameLen, topics.MaxSubjectLen)

// Stats is a snapshot of the bus's statistics, from Bus.Stats. It marshals to
// JSON with snake_case keys (durations in nanoseconds, times in RFC 3339), so a
// daemon can send it as is.
type Stats struct {
	// Time is when the snapshot was taken.
	Time time.Time `json:"time"`
	// Totals are the bus-wide message counts.
	Totals Totals `json:"totals"`
	// Ledger is Accounting: deliveries accepted, handled, dead-lettered,
	// retried and in flight.
	Ledger Accounting `json:"ledger"`
	// DeadLetters counts dead letters by reason (every reason is present)
	// and what the bounded queue holds.
	DeadLetters DeadLetterStats `json:"dead_letters"`
	// Rejected counts the messages Send, Publish, Request and Reply refused,
	// by the kind of error (every kind is present): invalid (also a bad
	// subject), too_large, expired, no_recipient, backpressure_timeout,
	// mailbox_full, closed, request_cycle, not_pending, not_subscribed,
	// too_many_subscriptions, other.
	Rejected map[string]uint64 `json:"rejected"`
	// Types counts the messages sent, per message type (every type is
	// present).
	Types map[MessageType]uint64 `json:"types"`
	// Topics counts the messages published, per topic; beyond
	// Config.StatsMaxKeys topics, under OtherKey.
	Topics Counts `json:"topics"`
	// Senders counts the messages sent, per Sender (empty for anonymous
	// messages); beyond Config.StatsMaxKeys senders, under OtherKey.
	Senders Counts `json:"senders"`
	// Agents describes the running agents, sorted by name.
	Agents []AgentStats `json:"agents"`
	// Handlers describes the router's handlers (see Router), sorted by
	// name.
	Handlers []AgentStats `json:"handlers"`
	// Backpressure is how much is queued in all mailboxes together, and the
	// bound (Config.Backpressure.MaxPending).
	Backpressure BackpressureStats `json:"backpressure"`
	// PendingRequests is how many Request calls wait for a response.
	PendingRequests int `json:"pending_requests"`
	// PendingRetries is how many redeliveries wait for their timer.
	PendingRetries int `json:"pending_retries"`
	// Latency is the delivery latency: from the moment a message is queued
	// for an agent (or routing handler) to the moment its handler returns.
	Latency Histogram `json:"latency"`
}

// Counts are counts by name (of topics or senders), sorted by name (byte-wise,
// as strings.Compare orders them). They marshal to JSON as an object,
// {"name": count, ...}, as a map[string]uint64 does. A sorted list rather
// than a map, because a snapshot then costs no hashing and an allocation of
// 24 bytes a name, and prints in order.
type Counts []NameCount

// NameCount is one entry of Counts.
type NameCount struct {
	Name  string
	Count uint64
}

// Get returns the count of name, or 0 if it has none. It is a binary search.
func (c Counts) Get(name string) uint64 {
	if i, ok := slices.BinarySearchFunc(c, name, func(e NameCount, name string) int {
		return strings.Compare(e.Name, name)
	}); ok {
		return c[i].Count
	}
	return 0
}

// Map returns the counts as a map.
func (c Counts) Map() map[string]uint64 {
	m := make(map[string]uint64, len(c))
	for _, e := range c {
		m[e.Name] = e.Count
	}
	return m
}

// MarshalJSON encodes c as a JSON object of names to counts (null if c is
// nil, as for a nil map). It returns an error only if encoding/json does.
func (c Counts) MarshalJSON() ([]byte, error) {
	if c == nil {
		return []byte("null"), nil
	}
	return json.Marshal(c.Map())
}

// UnmarshalJSON decodes a JSON object of names to counts (or null) into c,
// sorted. It returns encoding/json's error for anything else.
func (c *Counts) UnmarshalJSON(data []byte) error {
	var m map[string]uint64
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	if m == nil {
		*c = nil
		return nil
	}
	out := make(Counts, 0, len(m))
	for name, n := range m {
		out = append(out, NameCount{Name: name, Count: n})
	}
	slices.SortFunc(out, func(x, y NameCount) int { return strings.Compare(x.Name, y.Name) })
	*c = out
	return nil
}

// Totals are the bus-wide message counts of Stats. Sent counts messages,
// whatever their fan-out; Delivered and Failed count deliveries to handlers
// (one publish reaches each subscriber).
type Totals struct {
	// Sent counts the messages the bus accepted (Send, Publish, Request,
	// Reply, Replay).
	Sent uint64 `json:"sent"`
	// Delivered counts the deliveries whose handler returned nil, in
	// agents and routing handlers, stopped ones included.
	Delivered uint64 `json:"delivered"`
	// Failed counts the deliveries whose handler returned an error or
	// panicked.
	Failed uint64 `json:"failed"`
	// Expired counts the deliveries whose TTL ran out in a queue (dead
	// letters with reason expired); a message already expired when sent is
	// rejected instead (Rejected["expired"]).
	Expired uint64 `json:"expired"`
	// DeadLettered counts every dead letter, evicted ones included: the sum
	// of DeadLetterStats.ByReason.
	DeadLettered uint64 `json:"dead_lettered"`
	// Rejected counts the messages refused: the sum of Stats.Rejected.
	Rejected uint64 `json:"rejected"`
}

// DeadLetterStats describes the dead-letter queue (see DeadLetters).
type DeadLetterStats struct {
	// ByReason counts every dead letter ever added, per reason, evicted
	// ones included.
	ByReason map[deadletter.Reason]uint64 `json:"by_reason"`
	// Held is how many letters the queue holds now.
	Held int `json:"held"`
	// Evicted is how many letters were evicted to respect its bounds.
	Evicted uint64 `json:"evicted"`
}

// AgentStats describes one agent (or routing handler) in Stats.
type AgentStats struct {
	Name     string `json:"name"`
	Queued   int    `json:"queued"`   // messages in its mailbox now
	Capacity int    `json:"capacity"` // its mailbox's capacity
	Received uint64 `json:"received"` // messages ever queued for it
	Handled  uint64 `json:"handled"`  // its handler returned nil
	Failed   uint64 `json:"failed"`   // its handler returned an error or panicked
	Restarts int    `json:"restarts"` // restarts by its supervisor
	// LastActive is when its handler last returned (within a few messages
	// under load); zero if it has handled nothing.
	LastActive time.Time `json:"last_active,omitzero"`
}

// BackpressureStats is the bus-wide backpressure gauge in Stats.
type BackpressureStats struct {
	Pending    int `json:"pending"`     // messages queued in all mailboxes together
	MaxPending int `json:"max_pending"` // Config.Backpressure.MaxPending
}

// Histogram is a latency histogram with fixed exponential buckets: the upper
// bounds double from 1 µs to about 9 minutes, and a last bucket counts what is
// longer. It maps directly onto a Prometheus histogram.
//
// Every message is timed while traffic is light. Under load, when its agent
// has delivered 8 messages or more without finding its queue empty, or 8 or
// more are queued ahead of it (where a clock read per message would slow its
// senders), one in 8 (every 8th post) is timed and counted 8 times. Counts,
// Count and Sum are therefore exact for sparse traffic and short bursts, and
// fair estimates for sustained streams: which posts are timed never depends
// on how long they wait.
type Histogram struct {
	// Bounds are the upper bounds of every bucket but the last, ascending.
	Bounds []time.Duration `json:"bounds_ns"`
	// Counts are the observations per bucket (not cumulative); there is one
	// more than there are Bounds.
	Counts []uint64 `json:"counts"`
	// Count is the sum of Counts.
	Count uint64 `json:"count"`
	// Sum is the sum of the observed latencies.
	Sum time.Duration `json:"sum_ns"`
	// P50 and P99 are Quantile(0.5) and Quantile(0.99).
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
}

// Quantile returns an estimate of the q-quantile (0 <= q <= 1) of the
// observations: the bucket that holds it is found from the counts and the
// value is interpolated linearly within it, as Prometheus's
// histogram_quantile does. A quantile in the last, unbounded bucket is given
// as the highest bound. It returns 0 for an empty histogram or a q that is
// not a number; q is clamped to [0, 1]. It only reads h.
func (h Histogram) Quantile(q float64) time.Duration {
	if h.Count == 0 || math.IsNaN(q) || len(h.Counts) == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(h.Count)
	var below uint64
	for i, c := range h.Counts {
		if c == 0 || float64(below+c) < rank {
			below += c
			continue
		}
		if i >= len(h.Bounds) {
			break // the unbounded bucket
		}
		lower := time.Duration(0)
		if i > 0 {
			lower = h.Bounds[i-1]
		}
		frac := (rank - float64(below)) / float64(c)
		return lower + time.Duration(frac*float64(h.Bounds[i]-lower))
	}
	if len(h.Bounds) == 0 {
		return 0
	}
	return h.Bounds[len(h.Bounds)-1]
}

// Stats returns a snapshot of the bus's statistics. A send takes no lock for
// statistics: message counters are atomics (per message type, per kind of
// rejection, and in lock-free tables for topics and senders), agent counters
// are per agent and per mailbox. Stats takes only short locks: the registry
// of topic actors (which a publish takes too) while it copies the list, that
// of routing handlers, the dead-letter queue's. The counters are read one
// after another, so
// while messages flow the totals are only approximately consistent with each
// other; once the bus is quiet they are exact. Its cost grows with the number
// of agents, topics and senders (the README gives figures); ReadStats does
// the same without allocating a new snapshot each time. It is safe for
// concurrent use, does not block, returns no error, and works after Shutdown
// (the agents are gone; the totals remain).
func (b *Bus) Stats() Stats {
	var s Stats
	b.ReadStats(&s)
	return s
}

// ReadStats overwrites *s with a snapshot of the bus's statistics, as Stats
// does, reusing s's maps and slices (as runtime.ReadMemStats does), so that
// a monitor that polls keeps one Stats and allocates almost nothing. The
// previous contents are lost: do not keep references to s's maps or slices
// across calls, nor share s between goroutines that call it. It does not
// block.
func (b *Bus) ReadStats(s *Stats) {
	st := &b.stats
	s.Time = time.Now()
	s.Totals = Totals{}
	s.Rejected = clearedMap(s.Rejected, int(numRejections))
	s.Types = clearedMap(s.Types, int(typeCount))
	s.Topics = st.topics.load(s.Topics)
	s.Senders = st.senders.load(s.Senders)
	s.Backpressure = BackpressureStats{Pending: b.shared.Used(), MaxPending: b.shared.Max()}
	s.PendingRequests = b.PendingRequests()
	s.PendingRetries = b.PendingRetries()
	st.histogram(&s.Latency)
	for t := TypeDirect; t.Valid(); t++ {
		n := st.types[t].Load()
		s.Types[t] = n
		s.Totals.Sent += n
	}
	for k := range numRejections {
		n := st.rejected[k].Load()
		s.Rejected[k.String()] = n
		s.Totals.Rejected += n
	}

	agents := b.sortedAgents()
	s.Agents = slices.Grow(s.Agents[:0], len(agents))
	s.Handlers = s.Handlers[:0]
	if s.Agents == nil { // [] rather than null in JSON
		s.Agents = []AgentStats{}
	}
	if s.Handlers == nil {
		s.Handlers = []AgentStats{}
	}
	s.Totals.Delivered, s.Totals.Failed = st.retiredHandled.Load(), st.retiredFailed.Load()
	s.Ledger = b.accounting(agents, func(a *actors.Agent, handler bool, c agentCounts) {
		mb := a.Mailbox()
		as := AgentStats{
			Name:       a.Name(),
			Queued:     c.queued,
			Capacity:   mb.Cap(),
			Received:   c.posted,
			Handled:    c.handled,
			Failed:     a.Failed(),
			Restarts:   a.Restarts(),
			LastActive: mb.LastActive(),
		}
		s.Totals.Delivered += as.Handled
		s.Totals.Failed += as.Failed
		if handler {
			s.Handlers = append(s.Handlers, as)
		} else {
			s.Agents = append(s.Agents, as)
		}
	})
	slices.SortFunc(s.Handlers, func(x, y AgentStats) int { return strings.Compare(x.Name, y.Name) })

	counts := b.dlq.Counts()
	s.DeadLetters.ByReason = clearedMap(s.DeadLetters.ByReason, len(deadletter.Reasons))
	s.DeadLetters.Held = b.dlq.Len()
	s.DeadLetters.Evicted = b.dlq.Evicted()
	for _, r := range deadletter.Reasons {
		s.DeadLetters.ByReason[r] = counts[r]
	}
	for r, n := range counts {
		s.DeadLetters.ByReason[r] = n // a reason from outside the list, too
		s.Totals.DeadLettered += n
	}
	s.Totals.Expired = counts[deadletter.Expired]
}

// clearedMap returns m emptied, or a new map for n entries if m is nil.
func clearedMap[K comparable, V any](m map[K]V, n int) map[K]V {
	if m == nil {
		return make(map[K]V, n)
	}
	clear(m)
	return m
}

// agentList is the running agents sorted by name, as of one generation of
// the registry.
type agentList struct {
	gen    uint64
	agents []*actors.Agent
}

// sortedAgents returns the running agents sorted by name. The list is
// sorted once per change of the registry and shared: do not modify it.
func (b *Bus) sortedAgents() []*actors.Agent {
	// The registry is stored before its generation is bumped, so a list
	// stored under the generation read here is at least that new.
	gen := b.agentsGen.Load()
	if l := b.stats.agents.Load(); l != nil && l.gen == gen {
		return l.agents
	}
	all := b.snapshot()
	slices.SortFunc(all, func(x, y *actors.Agent) int { return strings.Compare(x.Name(), y.Name()) })
	b.stats.agents.Store(&agentList{gen: gen, agents: all})
	return all
}

// typeCount bounds the message types counted (MessageType is a uint8 below
// it).
const typeCount = 16

// latencyShards is the number of latency histograms agents record into, in
// turn, so that agents running at once seldom share one.
const latencyShards = 16

// counter is an atomic counter alone on its cache line.
type counter struct {
	atomic.Uint64
	_ [56]byte
}

// statsState holds the bus's statistics counters. Everything on the send path
// is an atomic addition: per message type and kind of rejection in fixed
// arrays, per topic and sender in keyCounts tables.
type statsState struct {
	types    [typeCount]counter
	rejected [numRejections]counter
	topics   *keyCounts
	senders  *keyCounts

	latency   [latencyShards]mailbox.Latency
	nextShard atomic.Uint32

	// The counters of stopped agents and handlers.
	retiredHandled atomic.Uint64
	retiredFailed  atomic.Uint64

	agents atomic.Pointer[agentList] // see sortedAgents
}

func (st *statsState) init(maxKeys int) {
	st.topics = newKeyCounts(maxKeys)
	st.senders = newKeyCounts(maxKeys)
}

// Observe counts accepted messages and refusals.
func (st *statsState) Observe(o Outcome) {
	if o.Kind == OutcomeAccepted {
		st.sent(o.Message)
	} else {
		st.reject(o.Err)
	}
}

// sent counts a message the bus accepted.
func (st *statsState) sent(msg *Message) {
	if msg.Type < typeCount {
		st.types[msg.Type].Add(1)
	}
	st.senders.add(msg.Sender)
	if msg.Type == TypePublish {
		st.topics.add(msg.Topic)
	}
}

// reject counts a message the bus refused with err.
func (st *statsState) reject(err error) { st.rejected[rejectionOf(err)].Add(1) }

// retire folds the counters of a stopped agent into the totals.
func (st *statsState) retire(a *actors.Agent) {
	st.retiredHandled.Add(a.Handled())
	st.retiredFailed.Add(a.Failed())
}

// latencyShard returns the histogram the next agent records into.
func (st *statsState) latencyShard() *mailbox.Latency {
	return &st.latency[st.nextShard.Add(1)%latencyShards]
}

// histogram merges the latency shards into h, reusing its slices.
func (st *statsState) histogram(h *Histogram) {
	h.Bounds = slices.Grow(h.Bounds[:0], mailbox.LatencyBuckets-1)[:mailbox.LatencyBuckets-1]
	h.Counts = slices.Grow(h.Counts[:0], mailbox.LatencyBuckets)[:mailbox.LatencyBuckets]
	clear(h.Counts)
	h.Count, h.Sum = 0, 0
	for i := range h.Bounds {
		h.Bounds[i] = mailbox.LatencyBound(i)
	}
	for i := range st.latency {
		counts, sum := st.latency[i].Load()
		for j, c := range counts {
			h.Counts[j] += c
			h.Count += c
		}
		h.Sum += sum
	}
	h.P50, h.P99 = h.Quantile(0.5), h.Quantile(0.99)
}

// rejection is a kind of error that made the bus refuse a message.
type rejection uint8

const (
	rejectInvalid rejection = iota
	rejectTooLarge
	rejectExpired
	rejectNoRecipient
	rejectBackpressure
	rejectMailboxFull
	rejectClosed
	rejectCycle
	rejectNotPending
	rejectNotSubscribed
	rejectTooManySubs
	rejectOther
	numRejections
)

// String returns the kind's key in Stats.Rejected.
func (k rejection) String() string {
	switch k {
	case rejectInvalid:
		return "invalid"
	case rejectTooLarge:
		return "too_large"
	case rejectExpired:
		return "expired"
	case rejectNoRecipient:
		return "no_recipient"
	case rejectBackpressure:
		return "backpressure_timeout"
	case rejectMailboxFull:
		return "mailbox_full"
	case rejectClosed:
		return "closed"
	case rejectCycle:
		return "request_cycle"
	case rejectNotPending:
		return "not_pending"
	case rejectNotSubscribed:
		return "not_subscribed"
	case rejectTooManySubs:
		return "too_many_subscriptions"
	}
	return "other"
}

// rejectionOf classifies an error Send returned without accepting the
// message. Backpressure comes before mailbox_full: a timed-out wait wraps
// both.
func rejectionOf(err error) rejection {
	switch {
	case errors.Is(err, ErrBackpressureTimeout):
		return rejectBackpressure
	case errors.Is(err, ErrMailboxFull):
		return rejectMailboxFull
	case errors.Is(err, ErrMessageTooLarge):
		return rejectTooLarge
	case errors.Is(err, ErrInvalidMessage), errors.Is(err, ErrInvalidSubject):
		return rejectInvalid
	case errors.Is(err, ErrExpired):
		return rejectExpired
	case errors.Is(err, ErrNoRecipient):
		return rejectNoRecipient
	case errors.Is(err, ErrClosed):
		return rejectClosed
	case errors.Is(err, ErrRequestCycle):
		return rejectCycle
	case errors.Is(err, ErrNotPending):
		return rejectNotPending
	case errors.Is(err, ErrNotSubscribed):
		return rejectNotSubscribed
	case errors.Is(err, ErrTooManySubscriptions):
		return rejectTooManySubs
	}
	return rejectOther
}

// keyCounts counts occurrences of names (topics, senders) for at most max
// distinct names; the rest are counted together as OtherKey, so hostile names
// cannot grow memory.
//
// It is an open-addressing hash table of a fixed size, at least twice max, so
// it is never resized and a probe always ends: counting a known name is a
// hash, a probe and an atomic addition, with no lock; a new name claims a
// slot with a compare-and-swap. Names are never removed. It costs 8 bytes per
// slot up front and 64 per name held.
//
// In front of the table, a small cache indexed by a name's length and first
// and last bytes holds the busiest name of each such class, which then costs
// no hash: a sender that sends most of the traffic is counted in a few
// nanoseconds. A name takes over a cache line only once it has been counted
// more than twice as often as the name there, so names of one class that are
// equally busy do not keep overwriting each other.
//
// Snapshots read the names in order from a sorted list of the entries, which
// is sorted again only when names have been added since.
type keyCounts struct {
	hot    [hotKeys]atomic.Pointer[keyCount]
	seed   maphash.Seed
	slots  []atomic.Pointer[keyCount]
	max    int64
	n      atomic.Int64 // names held, or claimed by an insert under way
	other  counter
	sorted atomic.Pointer[[]*keyCount] // every name held when it was made, sorted
}

// keyCount is one name's counter, on a cache line of its own with the name
// (when it fits), so that a snapshot reads one line per name.
type keyCount struct {
	n   atomic.Uint64
	key string   // in buf when it fits
	buf [40]byte // never written once the entry is published
}

// newKeyCount returns an entry for key, counted once, that refers to no
// memory of the caller's.
func newKeyCount(key string) *keyCount {
	e := &keyCount{}
	e.n.Store(1)
	if len(key) > 0 && len(key) <= len(e.buf) {
		copy(e.buf[:], key)
		e.key = unsafe.String(&e.buf[0], len(key)) // buf is immutable from here on
	} else {
		e.key = strings.Clone(key)
	}
	return e
}

func newKeyCounts(limit int) *keyCounts {
	limit = min(max(limit, 1), maxStatsKeysLimit)
	size := 1 << bits.Len(uint(2*limit-1)) // a power of two, at least 2*limit
	return &keyCounts{seed: maphash.MakeSeed(), slots: make([]atomic.Pointer[keyCount], size), max: int64(limit)}
}

// hotKeys is the size of keyCounts' cache, a power of two.
const hotKeys = 64

// add counts one occurrence of key.
func (c *keyCounts) add(key string) {
	var h int
	if len(key) > 0 {
		h = (len(key) ^ int(key[0])<<2 ^ int(key[len(key)-1])<<4) & (hotKeys - 1)
	}
	hot := c.hot[h].Load()
	if hot != nil && hot.key == key {
		hot.n.Add(1)
		return
	}
	mask := uint64(len(c.slots) - 1)
	for i := maphash.String(c.seed, key) & mask; ; i = (i + 1) & mask {
		e := c.slots[i].Load()
		if e == nil {
			if e = c.insert(i, key); e == nil {
				return // counted
			}
		}
		if e.key == key {
			if n := e.n.Add(1); hot == nil || hot.n.Load() < n/2 {
				c.hot[h].Store(e)
			}
			return
		}
	}
}

// insert counts key, which is not held, in the empty slot i, or under
// OtherKey when key cannot be held. If another name took slot i meanwhile, it
// returns that name's entry, uncounted, and the caller probes on.
func (c *keyCounts) insert(i uint64, key string) *keyCount {
	if len(key) > maxStatsKeyLen || key == OtherKey || c.n.Load() >= c.max || !utf8.ValidString(key) {
		c.other.Add(1)
		return nil
	}
	if c.n.Add(1) > c.max { // lost a race for the last places
		c.n.Add(-1)
		c.other.Add(1)
		return nil
	}
	e := newKeyCount(key)
	if c.slots[i].CompareAndSwap(nil, e) {
		return nil
	}
	c.n.Add(-1)
	return c.slots[i].Load()
}

// load returns the counts by name, sorted, with OtherKey if anything was
// counted there, reusing out's array.
func (c *keyCounts) load(out Counts) Counts {
	entries := c.sortedEntries()
	out = slices.Grow(out[:0], len(entries)+1)
	other := c.other.Load()
	for _, e := range entries {
		if other > 0 && e.key > OtherKey {
			out = append(out, NameCount{Name: OtherKey, Count: other})
			other = 0
		}
		out = append(out, NameCount{Name: e.key, Count: e.n.Load()})
	}
	if other > 0 {
		out = append(out, NameCount{Name: OtherKey, Count: other})
	}
	return out
}

// sortedEntries returns every entry, sorted by name. The list is shared and
// immutable; it is made again when the table holds names it lacks.
func (c *keyCounts) sortedEntries() []*keyCount {
	if l := c.sorted.Load(); l != nil && int64(len(*l)) == c.n.Load() {
		return *l
	}
	// n can run ahead of the published entries while an insert is under
	// way; the list is then made again next time.
	l := make([]*keyCount, 0, c.n.Load())
	for i := range c.slots {
		if e := c.slots[i].Load(); e != nil {
			l = append(l, e)
		}
	}
	slices.SortFunc(l, func(x, y *keyCount) int { return strings.Compare(x.key, y.key) })
	c.sorted.Store(&l)
	return l
}
