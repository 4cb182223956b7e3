package mailbox

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLatencyBucket(t *testing.T) {
	tests := []struct {
		give time.Duration
		want int
	}{
		{give: -time.Second, want: 0}, // a clock that went backwards counts as instant
		{give: 0, want: 0},
		{give: time.Nanosecond, want: 0},
		{give: time.Microsecond, want: 0},
		{give: time.Microsecond + 1, want: 1},
		{give: 2 * time.Microsecond, want: 1},
		{give: 2*time.Microsecond + 1, want: 2},
		{give: 4 * time.Microsecond, want: 2},
		{give: 5 * time.Millisecond, want: 13}, // (4.096 ms, 8.192 ms]
		{give: LatencyBound(LatencyBuckets - 2), want: LatencyBuckets - 2},
		{give: LatencyBound(LatencyBuckets-2) + 1, want: LatencyBuckets - 1},
		{give: time.Duration(1<<63 - 1), want: LatencyBuckets - 1},
	}
	for _, tt := range tests {
		t.Run(tt.give.String(), func(t *testing.T) {
			i := latencyBucket(tt.give)
			assert.Equal(t, tt.want, i)
			if i < LatencyBuckets-1 {
				assert.LessOrEqual(t, tt.give, LatencyBound(i), "within its bound")
			}
			if i > 0 {
				assert.Greater(t, tt.give, LatencyBound(i-1), "above the bound below")
			}
		})
	}
	assert.Equal(t, time.Microsecond, LatencyBound(0))
	assert.Equal(t, time.Duration(1<<29)*time.Microsecond, LatencyBound(LatencyBuckets-2))
}

func TestLatencyObserve(t *testing.T) {
	var l Latency
	l.Observe(500*time.Nanosecond, 1)
	l.Observe(3*time.Microsecond, 8)
	l.Observe(time.Hour, 2)
	counts, sum := l.Load()
	want := [LatencyBuckets]uint64{}
	want[0], want[2], want[LatencyBuckets-1] = 1, 8, 2
	assert.Equal(t, want, counts)
	assert.Equal(t, 500*time.Nanosecond+24*time.Microsecond+2*time.Hour, sum)
}

// TestLatencyIdle times messages that find the queue (nearly) empty: each is
// stamped and counted once, from queueing to the actor's return.
func TestLatencyIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lat := &Latency{}
		inv := &invoker{onUser: func(any) { time.Sleep(5 * time.Millisecond) }}
		m, _ := newTestMailbox(Config{Capacity: 4, Latency: lat}, synchronized, inv)
		assert.True(t, m.LastActive().IsZero(), "nothing delivered yet")

		start := time.Now()
		require.NoError(t, m.TryPost(prioItem(1))) // delivered on this goroutine
		require.NoError(t, m.TryPost(prioItem(2)))
		counts, sum := lat.Load()
		assert.Equal(t, uint64(2), counts[13], "two messages of 5 ms")
		assert.Equal(t, 10*time.Millisecond, sum)
		assert.Equal(t, start.Add(10*time.Millisecond), m.LastActive())
	})
}

// TestLatencyBusy times messages that queue deep behind a busy actor: about
// one in latencySample is stamped and counted latencySample times, so the
// counts estimate every message; LastActive is exact once the queue runs
// empty.
func TestLatencyBusy(t *testing.T) {
	const n = 4000
	synctest.Test(t, func(t *testing.T) {
		lat := &Latency{}
		gate := make(chan struct{})
		first := true
		inv := &invoker{onUser: func(any) {
			if first {
				first = false
				<-gate // hold the actor while the rest queue up
			}
			time.Sleep(time.Millisecond)
		}}
		m, drops := newTestMailbox(Config{Capacity: n + 1, Latency: lat}, actor.NewDefaultDispatcher(10), inv)
		start := time.Now()
		require.NoError(t, m.TryPost(prioItem(1)))
		synctest.Wait() // the actor holds the first message: it is busy
		for range n {
			require.NoError(t, m.TryPost(prioItem(1)))
		}
		time.Sleep(time.Second)
		close(gate)
		time.Sleep((n + 2) * time.Millisecond) // the actor takes 1 ms a message
		synctest.Wait()
		require.Zero(t, m.Len())
		assert.Empty(t, drops.all())

		counts, sum := lat.Load()
		var total uint64
		for _, c := range counts {
			total += c
		}
		// The first exactDepth+1 messages found a shallow queue (the first
		// one had been taken) and count once; the others count
		// latencySample times each if sampled. Binomial(3991, 1/8): the
		// estimate is within 20% with a margin of more than six standard
		// deviations.
		const exact = exactDepth + 1
		assert.Equal(t, uint64(exact%latencySample), total%latencySample, "the first ones were timed exactly")
		assert.InDelta(t, n+1-exact, total-exact, 0.2*n)
		assert.Positive(t, sum)
		assert.Equal(t, start.Add(time.Second+(n+1)*time.Millisecond), m.LastActive())
	})
}

// TestStampUnderLoad checks how a post decides whether traffic is heavy, and
// so whether it is sampled: the agent's word that it is busy decides if
// given; otherwise its sender's count decides when it says the queue is
// shallow; otherwise a fresh count does. The decision never looks at the
// post's place, which only picks the sampled posts that are timed.
func TestStampUnderLoad(t *testing.T) {
	const (
		exact   = "timed, counts once"
		sampled = "timed, counts latencySample times"
		skipped = "not timed"
	)
	tests := []struct {
		name     string
		busy     bool  // the agent's word
		estimate int64 // the sender's count of those ahead
		queued   int64 // those really ahead
		posted   uint64
		want     string
	}{
		{name: "light", estimate: 1, queued: 1, posted: 1, want: exact},
		{name: "light, sampled place", estimate: 1, queued: 1, posted: latencySample, want: exact},
		{name: "agent busy", busy: true, queued: 1, posted: 1, want: skipped},
		{name: "agent busy, sampled place", busy: true, queued: 1, posted: latencySample, want: sampled},
		{name: "sender's count shallow", estimate: exactDepth - 1, queued: 20, posted: 1, want: exact},
		{name: "fresh count shallow", estimate: 20, queued: exactDepth - 1, posted: 1, want: exact},
		{name: "fresh count shallow, sampled place", estimate: 20, queued: exactDepth - 1, posted: latencySample, want: exact},
		{name: "fresh count deep", estimate: 20, queued: exactDepth, posted: 1, want: skipped},
		{name: "fresh count deep, sampled place", estimate: 20, queued: exactDepth, posted: 2 * latencySample, want: sampled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Config{Capacity: 64, Latency: &Latency{}})
			m.busy.Store(tt.busy)
			m.room.in.Store(tt.queued + 1) // the post's own slot is taken
			s := m.stamp(tt.estimate, tt.posted)
			got := skipped
			switch {
			case s&1 == 1:
				got = exact
			case s != 0:
				got = sampled
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestAgentSaysBusy checks that the agent says it is busy once it has
// delivered exactDepth messages without finding its queue empty, even one
// at a time, or when it finds exactDepth queued; and that it is not once its
// queue runs empty.
func TestAgentSaysBusy(t *testing.T) {
	t.Run("a long streak of single messages", func(t *testing.T) {
		const n = 2 * exactDepth
		var m *Mailbox
		var busy []bool            // written by the agent before it says it is handling a message
		handling := make(chan int) // the agent is handling message i
		next := 0
		inv := &invoker{gate: make(chan struct{}, n), onUser: func(any) {
			busy = append(busy, m.busy.Load())
			next++
			handling <- next
		}}
		m, _ = newTestMailbox(Config{Capacity: 64, Latency: &Latency{}}, actor.NewDefaultDispatcher(100), inv)
		require.NoError(t, m.TryPost(prioItem(1)))
		for i := range n {
			require.Equal(t, i+1, <-handling)
			if i+1 < n {
				require.NoError(t, m.TryPost(prioItem(1))) // queued behind the one being handled: one at a time
			}
			inv.gate <- struct{}{}
		}
		require.Eventually(t, func() bool { return !m.busy.Load() },
			10*time.Second, time.Millisecond, "not busy once the queue runs empty")
		want := make([]bool, n)
		for i := exactDepth; i < n; i++ {
			want[i] = true // taken when exactDepth had been delivered before it
		}
		assert.Equal(t, want, busy)
	})
	t.Run("a deep queue", func(t *testing.T) {
		const n = exactDepth + 2
		var m *Mailbox
		var busy []bool
		handling := make(chan struct{}, n)
		inv := &invoker{gate: make(chan struct{}, n), onUser: func(any) {
			busy = append(busy, m.busy.Load())
			handling <- struct{}{}
		}}
		m, _ = newTestMailbox(Config{Capacity: 64, Latency: &Latency{}}, actor.NewDefaultDispatcher(100), inv)
		require.NoError(t, m.TryPost(prioItem(1)))
		<-handling // taken alone
		for range n - 1 {
			require.NoError(t, m.TryPost(prioItem(1)))
		}
		for range n {
			inv.gate <- struct{}{}
		}
		for range n - 1 {
			<-handling // busy is complete once the last one is handled
		}
		require.Eventually(t, func() bool { return !m.busy.Load() },
			10*time.Second, time.Millisecond, "not busy once the queue runs empty")
		want := make([]bool, n)
		for i := 1; i < n; i++ {
			want[i] = true // taken in one batch, with n-1 queued
		}
		assert.Equal(t, want, busy)
	})
}

// TestLatencyOff checks that a mailbox without Latency stamps nothing.
func TestLatencyOff(t *testing.T) {
	inv := &invoker{}
	m, _ := newTestMailbox(Config{Capacity: 4}, synchronized, inv)
	require.NoError(t, m.TryPost(prioItem(1)))
	assert.Len(t, inv.delivered(), 1)
	assert.True(t, m.LastActive().IsZero())
	assert.Zero(t, m.stamp(0, 1))
}
