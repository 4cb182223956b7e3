// Package deadletter holds what the bus could not deliver. Every message that
// the bus accepted and then could not hand to a handler ends here with a
// Reason, so nothing the bus accepted is lost without a trace.
//
// The Queue is bounded twice: by entries and by payload bytes. When either
// bound is reached the oldest letters are evicted and counted, so a flood of
// failures cannot grow memory; the per-reason totals keep counting what was
// evicted.
package deadletter

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/descartes/agentbus/actors"
)

// Reason says why a message was dead-lettered.
type Reason string

// The reasons.
const (
	NoRecipient        Reason = "no_recipient"        // the recipient agent does not exist (any more)
	NoSubscribers      Reason = "no_subscribers"      // a published topic had no subscriber
	Expired            Reason = "expired"             // the TTL ran out before delivery
	MailboxFull        Reason = "mailbox_full"        // the recipient's mailbox had no room
	HandlerError       Reason = "handler_error"       // the handler returned an error
	HandlerPanic       Reason = "handler_panic"       // the handler panicked on this message
	AgentStopped       Reason = "agent_stopped"       // queued when the agent stopped
	RestartLimit       Reason = "restart_limit"       // queued when the agent hit its restart limit
	RetriesExhausted   Reason = "retries_exhausted"   // never acknowledged within its attempts
	LateResponse       Reason = "late_response"       // a response after its request timed out
	OrphanResponse     Reason = "orphan_response"     // a response to no known request
	Shutdown           Reason = "shutdown"            // still queued when the bus shut down
	TransportClosed    Reason = "transport_closed"    // queued for a connection that closed
	UnsupportedMessage Reason = "unsupported_message" // a protoactor message of a type agents cannot handle
	NodeUnreachable    Reason = "node_unreachable"    // bound for a node that failed before confirming it
	NodeLeft           Reason = "node_left"           // bound for a node that left before confirming it
	NameConflict       Reason = "name_conflict"       // queued for an agent that lost its name to another node's
)

// Reasons lists every reason, in a stable order.
var Reasons = []Reason{
	NoRecipient, NoSubscribers, Expired, MailboxFull, HandlerError, HandlerPanic,
	AgentStopped, RestartLimit, RetriesExhausted, LateResponse, OrphanResponse,
	Shutdown, TransportClosed, UnsupportedMessage, NodeUnreachable, NodeLeft, NameConflict,
}

// ErrUnknownLetter means no held letter has the given sequence number (it
// never existed, or it was evicted or purged).
var ErrUnknownLetter = errors.New("agentbus: unknown dead letter")

// Letter is one dead-lettered delivery.
type Letter struct {
	Seq      uint64          // position in the queue's history, from 1; unique per Queue
	Message  *actors.Message // the message, or nil for a foreign (non-agentbus) value
	Value    any             // the foreign value, when Message is nil
	Reason   Reason          // why it was not delivered
	Err      string          // the error text, if any
	Agent    string          // the agent it was meant for, if known
	Time     time.Time       // when it was dead-lettered
	Attempts int             // delivery attempts the message had had

	Replays    int       // how often it was replayed
	ReplayedTo string    // where the last replay went (an agent or "#topic")
	ReplayedAt time.Time // when
}

func (l *Letter) size() int {
	if l.Message != nil {
		return l.Message.Size()
	}
	return 0
}

// Defaults for New.
const (
	DefaultMaxLetters = 1000
	DefaultMaxBytes   = 64 << 20
)

// Queue is a bounded store of letters, oldest first. It is safe for
// concurrent use; every method takes a short lock and never blocks otherwise.
type Queue struct {
	maxLetters int
	maxBytes   int

	mu      sync.Mutex
	ring    []Letter // ring buffer, len = maxLetters once full
	head    int      // index of the oldest letter
	n       int
	bytes   int
	seq     uint64
	evicted uint64
	counts  map[Reason]uint64
}

// New returns a Queue holding at most maxLetters letters and maxBytes bytes of
// messages (see actors.Message.Size). Values below 1 take the defaults.
func New(maxLetters, maxBytes int) *Queue {
	if maxLetters < 1 {
		maxLetters = DefaultMaxLetters
	}
	if maxBytes < 1 {
		maxBytes = DefaultMaxBytes
	}
	return &Queue{maxLetters: maxLetters, maxBytes: maxBytes, counts: make(map[Reason]uint64)}
}

// Add stores l, stamping its Seq and, if zero, its Time, and returns the
// stored letter. If the queue is full the oldest letters are evicted. A
// single letter larger than the byte bound is still stored, alone.
func (q *Queue) Add(l Letter) Letter {
	if l.Time.IsZero() {
		l.Time = time.Now()
	}
	if l.Message != nil && l.Attempts == 0 {
		l.Attempts = l.Message.Attempts
	}
	size := l.size()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.seq++
	l.Seq = q.seq
	q.put(l, size)
	return l
}

// put appends l, evicting the oldest letters to make room. q.mu is held.
func (q *Queue) put(l Letter, size int) {
	q.counts[l.Reason]++
	for q.n > 0 && (q.n == q.maxLetters || q.bytes+size > q.maxBytes) {
		q.evictOldest()
	}
	if q.n == len(q.ring) {
		q.grow()
	}
	q.ring[(q.head+q.n)%len(q.ring)] = l
	q.n++
	q.bytes += size
}

func (q *Queue) evictOldest() {
	old := &q.ring[q.head]
	q.bytes -= old.size()
	*old = Letter{}
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	q.evicted++
}

func (q *Queue) grow() {
	size := min(max(2*len(q.ring), 16), q.maxLetters)
	ring := make([]Letter, size)
	for i := range q.n {
		ring[i] = q.ring[(q.head+i)%len(q.ring)]
	}
	q.ring, q.head = ring, 0
}

// Len returns the number of letters held.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Evicted returns how many letters were evicted to respect the bounds.
func (q *Queue) Evicted() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.evicted
}

// Total returns how many letters were ever added, evicted ones included.
func (q *Queue) Total() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.seq
}

// Counts returns how many letters were ever added per reason, evicted ones
// included.
func (q *Queue) Counts() map[Reason]uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[Reason]uint64, len(q.counts))
	for r, n := range q.counts {
		out[r] = n
	}
	return out
}

// Filter selects letters. Zero fields match everything.
type Filter struct {
	Reason Reason    // only this reason
	Agent  string    // only letters for this agent
	Topic  string    // only messages on this topic
	Since  time.Time // only letters dead-lettered at or after this time
	Limit  int       // at most this many, newest kept; 0 means all
}

func (f *Filter) match(l *Letter) bool {
	if f.Reason != "" && l.Reason != f.Reason {
		return false
	}
	if f.Agent != "" && l.Agent != f.Agent {
		return false
	}
	if f.Topic != "" && (l.Message == nil || l.Message.Topic != f.Topic) {
		return false
	}
	return f.Since.IsZero() || !l.Time.Before(f.Since)
}

// List returns the letters that match f, oldest first.
func (q *Queue) List(f Filter) []Letter {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Letter
	for i := range q.n {
		l := &q.ring[(q.head+i)%len(q.ring)]
		if f.match(l) {
			out = append(out, *l)
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = slices.Clone(out[len(out)-f.Limit:])
	}
	return out
}

// Get returns the letter with sequence number seq, if it is still held.
func (q *Queue) Get(seq uint64) (Letter, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if l := q.find(seq); l != nil {
		return *l, true
	}
	return Letter{}, false
}

// MarkReplayed records a replay of letter seq to dest at time at. It returns
// an error wrapping ErrUnknownLetter if the letter is no longer held.
func (q *Queue) MarkReplayed(seq uint64, dest string, at time.Time) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.find(seq)
	if l == nil {
		return fmt.Errorf("%w: %d", ErrUnknownLetter, seq)
	}
	l.Replays++
	l.ReplayedTo, l.ReplayedAt = dest, at
	return nil
}

// find returns the held letter seq, or nil. q.mu must be held.
func (q *Queue) find(seq uint64) *Letter {
	if q.n == 0 {
		return nil
	}
	first := q.ring[q.head].Seq
	if seq < first || seq >= first+uint64(q.n) {
		return nil
	}
	// Seqs are consecutive within the ring: every Add takes the next one.
	return &q.ring[(q.head+int(seq-first))%len(q.ring)]
}

// Purge removes every letter and returns how many there were. Counts and
// Total are kept.
func (q *Queue) Purge() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.n
	clear(q.ring)
	q.head, q.n, q.bytes = 0, 0, 0
	return n
}

// String describes a letter for logs.
func (l Letter) String() string {
	id := "-"
	if l.Message != nil {
		id = l.Message.ID
	} else if l.Value != nil {
		id = fmt.Sprintf("%T", l.Value)
	}
	return fmt.Sprintf("dead letter %d: %s for %q (%s) %s", l.Seq, id, l.Agent, l.Reason, l.Err)
}

// Restore replaces the queue's letters with ls, oldest first, as a durable
// store kept them: each keeps its Time, Attempts and replay record. Their
// Seqs are made consecutive from the first one's (the queue numbers letters
// consecutively), and later letters continue after the last. Beyond the
// queue's bounds the oldest are left out. It returns the letters held, with
// their Seqs.
func (q *Queue) Restore(ls []Letter) []Letter {
	q.mu.Lock()
	defer q.mu.Unlock()
	clear(q.ring)
	q.ring, q.head, q.n, q.bytes = nil, 0, 0, 0
	if len(ls) == 0 {
		return nil
	}
	q.seq = max(ls[0].Seq, 1) - 1
	for _, l := range ls {
		q.seq++
		l.Seq = q.seq
		q.put(l, l.size())
	}
	out := make([]Letter, q.n)
	for i := range q.n {
		out[i] = q.ring[(q.head+i)%len(q.ring)]
	}
	return out
}
