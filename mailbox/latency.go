package mailbox

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// LatencyBuckets is the number of buckets of a Latency histogram. Bucket i <
// LatencyBuckets-1 counts latencies above LatencyBound(i-1) (or 0) and up to
// LatencyBound(i); the last bucket counts everything longer.
const LatencyBuckets = 31

// latencyBase is the upper bound of the first bucket; each further bound
// doubles it, so the finite bounds run from 1 µs to about 9 minutes (2^29 µs).
const latencyBase = time.Microsecond

// LatencyBound returns the upper bound of bucket i: 1 µs << i, for i in [0,
// LatencyBuckets-1). The last bucket has no bound.
func LatencyBound(i int) time.Duration { return latencyBase << i }

// A mailbox times every message while traffic is light: its agent has not
// delivered exactDepth messages without a break, and fewer than exactDepth
// are queued (see stamp). Under load, one in latencySample (a power of two)
// is timed and counted latencySample times.
const (
	exactDepth    = 8
	latencySample = 8
)

// Latency is a histogram of how long user messages took from being queued to
// the actor returning from them, with fixed exponential buckets (see
// LatencyBound). Mailboxes configured with it record into it; several
// mailboxes may share one. A mailbox times every message while its traffic
// is light, and under load one in 8, observed with a weight of 8 (see
// exactDepth). It is safe for concurrent use and never blocks: each
// observation is two atomic additions. The zero value is empty and ready.
type Latency struct {
	counts [LatencyBuckets]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// Observe records weight observations of d. It never blocks.
func (l *Latency) Observe(d time.Duration, weight uint64) {
	l.counts[latencyBucket(d)].Add(weight)
	l.sum.Add(int64(d) * int64(weight))
}

// latencyBucket returns the bucket of d.
func latencyBucket(d time.Duration) int {
	if d <= latencyBase {
		return 0
	}
	// Whole microseconds, rounded up: d in (2^(i-1), 2^i] µs lands in i.
	us := (uint64(d) + uint64(latencyBase) - 1) / uint64(latencyBase)
	return min(bits.Len64(us-1), LatencyBuckets-1)
}

// Load returns the counts per bucket (not cumulative) and the sum of the
// observed latencies. Each value is read atomically, but not all of them at
// once: under load the sum may be a little ahead of or behind the counts. It
// never blocks.
func (l *Latency) Load() (counts [LatencyBuckets]uint64, sum time.Duration) {
	for i := range counts {
		counts[i] = l.counts[i].Load()
	}
	return counts, time.Duration(l.sum.Load())
}

// stamp returns the time stamp of a message about to be queued as the
// posted-th post, behind depth others as far as its sender knows (never
// fewer than there are), or 0 if it is not timed.
//
// Reading the clock costs about as much as the rest of a post, so only while
// traffic is light is every message timed: its stamp is odd, and it counts
// once. Under load, when the agent is busy or its queue deep, a message is
// timed one time in latencySample (every latencySample-th post), with an
// even stamp: it counts latencySample times. Which posts under load are
// timed depends only on their place among the posts, and whether traffic is
// light never depends on that place (nor on how long a post will wait), so
// the weighted counts estimate all of them fairly. The clock reading is the
// stamp shifted right by one.
//
// Traffic is light unless the agent said it was busy when it last took a
// batch (busy: it had delivered exactDepth messages or more without a break,
// or found that many queued), or exactDepth messages or more are queued
// ahead. The agent's word costs a sender nothing while it stays the same.
// The queue's depth is read from the agent's line only when the sender's
// own count, which is never below it, says it may be deep: so a queue that
// grows behind an agent stuck on one message is found deep.
func (m *Mailbox) stamp(depth int64, posted uint64) int64 {
	if m.latency == nil {
		return 0
	}
	heavy := m.busy.Load() || depth >= exactDepth && m.room.depth() >= exactDepth
	switch {
	case !heavy:
		return m.clock()<<1 | 1
	case posted&(latencySample-1) != 0:
		return 0
	}
	return max(m.clock(), 1) << 1
}

// clock returns the time since the mailbox was created, in nanoseconds, from
// the monotonic clock.
func (m *Mailbox) clock() int64 { return int64(time.Since(m.born)) }

// timed records the latency of the user message the actor just returned
// from, if it was stamped, and when the actor was last active. Only the
// goroutine running the mailbox calls it.
func (m *Mailbox) timed() {
	s := m.curStamp
	if s == 0 {
		m.untimed = true // settle updates LastActive
		return
	}
	m.curStamp = 0
	now := m.clock()
	weight := uint64(latencySample)
	if s&1 == 1 {
		weight = 1
	}
	m.latency.Observe(time.Duration(now-s>>1), weight)
	m.lastActive.Store(now)
	m.untimed = false
}

// settle stamps LastActive when the actor runs out of messages after some
// that were not timed. Only the goroutine running the mailbox calls it.
func (m *Mailbox) settle() {
	if m.untimed {
		m.untimed = false
		m.lastActive.Store(m.clock())
	}
}

// LastActive returns when the actor last returned from a user message, as
// far as the mailbox has read the clock: exactly when the message was timed
// or was the last before the queue ran empty, otherwise a few messages
// earlier. It is the zero time if the mailbox is not timed (Config.Latency)
// or has delivered nothing. It does not block.
func (m *Mailbox) LastActive() time.Time {
	v := m.lastActive.Load()
	if v == 0 {
		return time.Time{}
	}
	return m.born.Add(time.Duration(v))
}
