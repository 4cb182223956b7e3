package agentbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/bustest"
	"github.com/descartes/agentbus/routing"
	"github.com/descartes/agentbus/supervisor"
)

// quiet waits until every delivery the bus accepted is handled or
// dead-lettered, so that counters read afterwards are final.
func quiet(t testing.TB, bus *agentbus.Bus) {
	t.Helper()
	bustest.Quiet(t, bus)
}

// sink is a handler that takes every message.
func sink(ctx context.Context, m *agentbus.Message) error { return bustest.Sink(ctx, m) }

func from(sender, to, payload string) *agentbus.Message {
	return agentbus.NewMessage(agentbus.TypeDirect, sender, []byte(payload)).WithRecipient(to)
}

// TestStats drives every kind of traffic through a bus and checks each part
// of the snapshot once the bus is quiet.
func TestStats(t *testing.T) {
	ctx := t.Context()
	bus := newBus(t, agentbus.Config{})
	_, err := bus.Spawn("worker", agentbus.HandlerFunc(sink), agentbus.WithMailboxSize(16))
	require.NoError(t, err)
	_, err = bus.Spawn("monitor", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	_, err = bus.Spawn("flaky", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		return errors.New("quota exceeded")
	}))
	require.NoError(t, err)
	_, err = bus.Spawn("crasher", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		panic("out of memory")
	}), agentbus.WithSupervisor(supervisor.Restarting(3, time.Minute)))
	require.NoError(t, err)
	_, err = bus.Spawn("echo", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Reply(ctx, m, m.Payload)
		return err
	}))
	require.NoError(t, err)
	require.NoError(t, bus.Subscribe("jobs.*", "monitor"))

	for i := range 3 {
		_, err := bus.Send(ctx, from("planner", "worker", fmt.Sprint(i)))
		require.NoError(t, err)
	}
	_, err = bus.Send(ctx, from("planner", "flaky", "1"))
	require.NoError(t, err)
	_, err = bus.Send(ctx, from("planner", "crasher", "1"))
	require.NoError(t, err)
	for _, p := range []struct{ topic, sender string }{{"jobs.a", "planner"}, {"jobs.a", "planner"}, {"jobs.b", "coder"}} {
		_, err := bus.Publish(ctx, p.topic, p.sender, []byte(`{}`))
		require.NoError(t, err)
	}
	_, err = bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "planner", []byte(`"ping"`)).WithRecipient("echo"))
	require.NoError(t, err)
	_, err = bus.Send(ctx, from("planner", "nobody", "1"))
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)
	quiet(t, bus)

	s := bus.Stats()
	assert.WithinDuration(t, time.Now(), s.Time, time.Minute)
	assert.Equal(t, agentbus.Totals{
		Sent:         10, // 5 direct, 3 publish, 1 request, 1 response
		Delivered:    7,  // worker 3, monitor 3, echo 1
		Failed:       2,
		Expired:      0,
		DeadLettered: 2,
		Rejected:     1,
	}, s.Totals)
	assert.True(t, s.Ledger.Balanced(), "%+v", s.Ledger)
	assert.Equal(t, bus.Accounting(), s.Ledger)

	assert.Equal(t, uint64(5), s.Types[agentbus.TypeDirect])
	assert.Equal(t, uint64(3), s.Types[agentbus.TypePublish])
	assert.Equal(t, uint64(1), s.Types[agentbus.TypeRequest])
	assert.Equal(t, uint64(1), s.Types[agentbus.TypeResponse])
	assert.Len(t, s.Types, 11, "every type is present")
	assert.Equal(t, agentbus.Counts{{"jobs.a", 2}, {"jobs.b", 1}}, s.Topics)
	assert.Equal(t, agentbus.Counts{{"coder", 1}, {"echo", 1}, {"planner", 8}}, s.Senders, "sorted by name")
	assert.Equal(t, uint64(8), s.Senders.Get("planner"))
	assert.Zero(t, s.Senders.Get("nobody"))

	assert.Len(t, s.Rejected, 12, "every kind is present")
	assert.Equal(t, uint64(1), s.Rejected["no_recipient"])
	assert.Len(t, s.DeadLetters.ByReason, len(deadletter.Reasons), "every reason is present")
	assert.Equal(t, uint64(1), s.DeadLetters.ByReason[deadletter.HandlerError])
	assert.Equal(t, uint64(1), s.DeadLetters.ByReason[deadletter.HandlerPanic])
	assert.Equal(t, 2, s.DeadLetters.Held)
	assert.Zero(t, s.DeadLetters.Evicted)

	names := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		names[i] = a.Name
	}
	assert.Equal(t, []string{"crasher", "echo", "flaky", "monitor", "worker"}, names, "sorted by name")
	byName := func(name string) agentbus.AgentStats {
		for _, a := range s.Agents {
			if a.Name == name {
				return a
			}
		}
		t.Fatalf("no agent %q", name)
		return agentbus.AgentStats{}
	}
	worker := byName("worker")
	assert.Equal(t, agentbus.AgentStats{Name: "worker", Capacity: 16, Received: 3, Handled: 3, LastActive: worker.LastActive}, worker)
	assert.WithinDuration(t, time.Now(), worker.LastActive, time.Minute)
	assert.Equal(t, uint64(1), byName("flaky").Failed)
	assert.Equal(t, 1, byName("crasher").Restarts)
	assert.Equal(t, uint64(1), byName("crasher").Failed)
	assert.Equal(t, uint64(3), byName("monitor").Handled)
	assert.Empty(t, s.Handlers)

	assert.Equal(t, agentbus.BackpressureStats{Pending: 0, MaxPending: agentbus.DefaultMaxPending}, s.Backpressure)
	assert.Zero(t, s.PendingRequests)
	assert.Zero(t, s.PendingRetries)

	h := s.Latency
	require.Len(t, h.Bounds, 30)
	require.Len(t, h.Counts, 31)
	assert.Equal(t, time.Microsecond, h.Bounds[0])
	var sum uint64
	for _, c := range h.Counts {
		sum += c
	}
	assert.Equal(t, h.Count, sum)
	assert.Positive(t, h.Count, "handled messages are timed")
	assert.Positive(t, h.Sum)
	assert.Positive(t, h.P50)
	assert.LessOrEqual(t, h.P50, h.P99)
	assert.Equal(t, h.Quantile(0.5), h.P50)
}

// TestStatsJSON checks the snake_case JSON form and that it round-trips.
func TestStatsJSON(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	_, err := bus.Spawn("worker", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), from("planner", "worker", "1"))
	require.NoError(t, err)
	_, err = bus.Publish(t.Context(), "jobs.new", "planner", nil)
	require.NoError(t, err)
	quiet(t, bus)
	s := bus.Stats()

	data, err := json.Marshal(s)
	require.NoError(t, err)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(data, &raw))
	for _, key := range []string{"time", "totals", "ledger", "dead_letters", "rejected", "types", "topics",
		"senders", "agents", "handlers", "backpressure", "pending_requests", "pending_retries", "latency"} {
		assert.Contains(t, raw, key)
	}
	assert.Equal(t, map[string]any{"sent": 2.0, "delivered": 1.0, "failed": 0.0, "expired": 0.0,
		"dead_lettered": 1.0, "rejected": 0.0}, raw["totals"])
	assert.Equal(t, 1.0, raw["types"].(map[string]any)["direct"])
	assert.Equal(t, map[string]any{"planner": 2.0}, raw["senders"], "an object, as a map would be")
	assert.Equal(t, map[string]any{"jobs.new": 1.0}, raw["topics"])
	assert.Equal(t, 1.0, raw["dead_letters"].(map[string]any)["by_reason"].(map[string]any)["no_subscribers"])
	assert.Equal(t, 1.0, raw["ledger"].(map[string]any)["dead_lettered"])
	agent := raw["agents"].([]any)[0].(map[string]any)
	assert.Equal(t, "worker", agent["name"])
	assert.Contains(t, agent, "last_active")
	latency := raw["latency"].(map[string]any)
	for _, key := range []string{"bounds_ns", "counts", "count", "sum_ns", "p50_ns", "p99_ns"} {
		assert.Contains(t, latency, key)
	}

	var back agentbus.Stats
	require.NoError(t, json.Unmarshal(data, &back))
	s.Time = s.Time.Round(0).UTC() // JSON keeps no monotonic reading nor location
	for i := range s.Agents {
		s.Agents[i].LastActive = s.Agents[i].LastActive.Round(0).UTC()
	}
	assert.Equal(t, s, back)
}

// TestStatsRejected refuses one message of each kind and checks that
// exactly that kind is counted.
func TestStatsRejected(t *testing.T) {
	bus := newBus(t, agentbus.Config{MaxMessageSize: 1024, MaxSubscriptions: 1})
	g := newGate(agentbus.HandlerFunc(sink))
	_, err := bus.Spawn("busy", g, agentbus.WithMailboxSize(1))
	require.NoError(t, err)
	_, err = bus.Spawn("worker", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), from("tester", "busy", "1")) // held in the handler
	require.NoError(t, err)
	<-g.Entered
	_, err = bus.Send(t.Context(), from("tester", "busy", "2")) // fills the mailbox
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeSubscribe, "worker", nil).WithTopic("jobs.a"))
	require.NoError(t, err) // the one subscription allowed
	defer close(g.Open)

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	stale := from("tester", "worker", "1").WithTTL(time.Second)
	stale.Timestamp = time.Now().Add(-time.Hour)

	tests := []struct {
		kind    string
		send    func(ctx context.Context) error
		wantErr error
	}{
		{"invalid", func(ctx context.Context) error { _, err := bus.Send(ctx, nil); return err }, agentbus.ErrInvalidMessage},
		{"invalid", func(ctx context.Context) error { _, err := bus.Request(ctx, nil); return err }, agentbus.ErrInvalidMessage},
		{"invalid", func(ctx context.Context) error {
			_, err := bus.Publish(ctx, "jobs..bad", "tester", nil)
			return err
		}, agentbus.ErrInvalidSubject},
		{"too_large", func(ctx context.Context) error {
			_, err := bus.Send(ctx, from("tester", "worker", `"`+strings.Repeat("x", 2000)+`"`))
			return err
		}, agentbus.ErrMessageTooLarge},
		{"expired", func(ctx context.Context) error { _, err := bus.Send(ctx, stale); return err }, agentbus.ErrExpired},
		{"no_recipient", func(ctx context.Context) error {
			_, err := bus.Send(ctx, from("tester", "nobody", "1"))
			return err
		}, agentbus.ErrNoRecipient},
		{"backpressure_timeout", func(context.Context) error {
			_, err := bus.Send(canceled, from("tester", "busy", "3"))
			return err
		}, agentbus.ErrBackpressureTimeout},
		{"not_pending", func(ctx context.Context) error {
			_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeAck, "worker", nil).WithRequestID("unknown"))
			return err
		}, agentbus.ErrNotPending},
		{"not_subscribed", func(ctx context.Context) error {
			_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeUnsubscribe, "worker", nil).WithTopic("jobs.b"))
			return err
		}, agentbus.ErrNotSubscribed},
		{"too_many_subscriptions", func(ctx context.Context) error {
			_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeSubscribe, "worker", nil).WithTopic("jobs.b"))
			return err
		}, agentbus.ErrTooManySubscriptions},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			before := bus.Stats()
			require.ErrorIs(t, tt.send(t.Context()), tt.wantErr)
			after := bus.Stats()
			for kind, n := range after.Rejected {
				want := before.Rejected[kind]
				if kind == tt.kind {
					want++
				}
				assert.Equal(t, want, n, kind)
			}
			assert.Equal(t, before.Totals.Rejected+1, after.Totals.Rejected)
			assert.Equal(t, before.Totals.Sent, after.Totals.Sent, "a refused message is not sent")
		})
	}
}

// TestStatsRejectedCycleAndClosed covers the refusals that need a chain of
// handlers or a closed bus.
func TestStatsRejectedCycleAndClosed(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	cycle := make(chan error, 1)
	_, err = bus.Spawn("ping", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", nil).WithRecipient("pong"))
		if err != nil {
			return err
		}
		_, err = bus.Reply(ctx, m, resp.Payload)
		return err
	}))
	require.NoError(t, err)
	_, err = bus.Spawn("pong", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", nil).WithRecipient("ping"))
		cycle <- err
		_, err = bus.Reply(ctx, m, []byte(`"done"`))
		return err
	}))
	require.NoError(t, err)
	_, err = bus.Request(t.Context(), agentbus.NewMessage(agentbus.TypeRequest, "main", nil).WithRecipient("ping"))
	require.NoError(t, err)
	require.ErrorIs(t, recv(t, cycle), agentbus.ErrRequestCycle)
	assert.Equal(t, uint64(1), bus.Stats().Rejected["request_cycle"])

	require.NoError(t, bus.Shutdown(t.Context()))
	_, err = bus.Send(t.Context(), from("main", "ping", "1"))
	require.ErrorIs(t, err, agentbus.ErrClosed)
	s := bus.Stats() // still answers after Shutdown
	assert.Equal(t, uint64(1), s.Rejected["closed"])
	assert.Empty(t, s.Agents, "the agents are gone")
	assert.Equal(t, uint64(2), s.Totals.Delivered, "their counts are not")
	assert.Equal(t, uint64(4), s.Types[agentbus.TypeRequest]+s.Types[agentbus.TypeResponse])
}

// TestStatsAgentsAndHandlers checks queue depth, routing handlers and the
// counts of agents that stopped.
func TestStatsAgentsAndHandlers(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	g := newGate(agentbus.HandlerFunc(sink))
	_, err := bus.Spawn("busy", g, agentbus.WithMailboxSize(8))
	require.NoError(t, err)
	_, err = bus.Spawn("short-lived", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	audited := make(chan struct{}, 8)
	require.NoError(t, bus.Router().RegisterHandler("audit", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		audited <- struct{}{}
		return nil
	})))
	require.NoError(t, bus.Router().AddRule(routing.Rule{ID: "all-direct", Type: agentbus.TypeDirect,
		Handler: "audit", Enabled: true}))

	for range 4 {
		_, err := bus.Send(t.Context(), from("tester", "busy", "1"))
		require.NoError(t, err)
	}
	<-g.Entered
	_, err = bus.Send(t.Context(), from("tester", "short-lived", "1"))
	require.NoError(t, err)
	for range 5 {
		recv(t, audited)
	}
	require.Eventually(t, func() bool { return bus.Backpressure().Pending() == 3 }, 10*time.Second, time.Millisecond)

	s := bus.Stats()
	require.Len(t, s.Agents, 2)
	busy := s.Agents[0]
	assert.Equal(t, "busy", busy.Name)
	assert.Equal(t, 3, busy.Queued, "one in the handler, three queued")
	assert.Equal(t, 8, busy.Capacity)
	assert.Equal(t, uint64(4), busy.Received)
	assert.Zero(t, busy.Handled)
	assert.True(t, busy.LastActive.IsZero(), "nothing handled yet")
	assert.Equal(t, 3, s.Backpressure.Pending)
	require.Len(t, s.Handlers, 1)
	assert.Equal(t, "audit", s.Handlers[0].Name)
	require.Eventually(t, func() bool { return bus.Stats().Handlers[0].Handled == 5 }, 10*time.Second, time.Millisecond)

	require.NoError(t, bus.Stop(t.Context(), "short-lived"))
	close(g.Open)
	quiet(t, bus)
	s = bus.Stats()
	require.Len(t, s.Agents, 1)
	assert.Equal(t, uint64(4+1+5), s.Totals.Delivered, "busy, short-lived (stopped) and the handler")
	assert.Equal(t, uint64(4), s.Agents[0].Handled)
}

// TestStatsCardinality floods the per-name tables with hostile names: memory
// stays bounded and the excess is counted under OtherKey.
func TestStatsCardinality(t *testing.T) {
	const senders = 100_000
	bus := newBus(t, agentbus.Config{Backpressure: agentbus.BackpressureConfig{MaxPending: senders}})
	_, err := bus.Spawn("sink", agentbus.HandlerFunc(sink), agentbus.WithMailboxSize(senders))
	require.NoError(t, err)

	heapBefore := liveHeap()
	const workers = 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < senders; i += workers {
				if _, err := bus.Send(context.Background(), from(fmt.Sprintf("hostile-sender-%08d", i), "sink", "1")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	quiet(t, bus)
	grown := int64(liveHeap()) - int64(heapBefore)

	s := bus.Stats()
	assert.Len(t, s.Senders, agentbus.DefaultStatsMaxKeys+1, "the cap, and OtherKey")
	assert.Equal(t, uint64(senders-agentbus.DefaultStatsMaxKeys), s.Senders.Get(agentbus.OtherKey))
	assert.True(t, slices.IsSortedFunc(s.Senders, func(x, y agentbus.NameCount) int { return strings.Compare(x.Name, y.Name) }))
	var total uint64
	for _, n := range s.Senders {
		total += n.Count
	}
	assert.Equal(t, uint64(senders), total, "every message is counted once")
	// 100,000 names kept would take about 10 MB (entry, string, map).
	assert.Less(t, grown, int64(4<<20), "live heap grew by %d bytes", grown)
}

// TestStatsUnkeyableNames checks the names that are never keys.
func TestStatsUnkeyableNames(t *testing.T) {
	bus := newBus(t, agentbus.Config{StatsMaxKeys: 100, MaxTopics: 4})
	_, err := bus.Spawn("sink", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	require.NoError(t, bus.Subscribe("flood.>", "sink"))
	for _, sender := range []string{strings.Repeat("x", 300), "bad\xffutf8", agentbus.OtherKey, ""} {
		_, err := bus.Send(t.Context(), from(sender, "sink", "1"))
		require.NoError(t, err)
	}
	const topics = 300
	for i := range topics {
		_, err := bus.Publish(t.Context(), fmt.Sprintf("flood.topic-%d", i), "flooder", nil)
		require.NoError(t, err)
	}
	quiet(t, bus)
	s := bus.Stats()
	assert.Equal(t, agentbus.Counts{{"", 1}, {agentbus.OtherKey, 3}, {"flooder", topics}}, s.Senders)
	assert.Len(t, s.Topics, 101)
	assert.Equal(t, uint64(topics-100), s.Topics.Get(agentbus.OtherKey))
	assert.Equal(t, agentbus.OtherKey, s.Topics[0].Name, "'$' sorts before letters")
}

// TestStatsConcurrent reads snapshots while messages flow (for the race
// detector), then checks the final counts.
func TestStatsConcurrent(t *testing.T) {
	const senders, each = 4, 500
	bus := newBus(t, agentbus.Config{})
	for _, name := range []string{"a", "b"} {
		_, err := bus.Spawn(name, agentbus.HandlerFunc(sink))
		require.NoError(t, err)
	}
	require.NoError(t, bus.Subscribe("news.>", "b"))
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := json.Marshal(bus.Stats()); err != nil {
				t.Error(err)
			}
		}
	})
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			for j := range each {
				var err error
				if j%2 == 0 {
					_, err = bus.Send(context.Background(), from(fmt.Sprint("s", i), "a", "1"))
				} else {
					_, err = bus.Publish(context.Background(), fmt.Sprintf("news.%d", j%7), fmt.Sprint("s", i), nil)
				}
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	quiet(t, bus)
	close(stop)
	readers.Wait()

	s := bus.Stats()
	assert.Equal(t, uint64(senders*each), s.Totals.Sent)
	assert.Equal(t, uint64(senders*each), s.Totals.Delivered)
	assert.Equal(t, uint64(senders*each/2), s.Types[agentbus.TypePublish])
	for i := range senders {
		assert.Equal(t, uint64(each), s.Senders.Get(fmt.Sprint("s", i)))
	}
	var published uint64
	for _, n := range s.Topics {
		published += n.Count
	}
	assert.Equal(t, uint64(senders*each/2), published)
}

func TestHistogramQuantile(t *testing.T) {
	bounds := []time.Duration{time.Microsecond, 2 * time.Microsecond, 4 * time.Microsecond}
	tests := []struct {
		name   string
		counts []uint64
		q      float64
		want   time.Duration
	}{
		{name: "empty", counts: []uint64{0, 0, 0, 0}, q: 0.5, want: 0},
		{name: "NaN", counts: []uint64{1, 0, 0, 0}, q: math.NaN(), want: 0},
		{name: "median of the first bucket", counts: []uint64{2, 0, 0, 0}, q: 0.5, want: 500 * time.Nanosecond},
		{name: "interpolated", counts: []uint64{0, 4, 0, 0}, q: 0.25, want: 1250 * time.Nanosecond},
		{name: "p99 in the last bounded bucket", counts: []uint64{50, 0, 50, 0}, q: 0.99, want: 3960 * time.Nanosecond},
		{name: "skips empty buckets", counts: []uint64{0, 0, 1, 0}, q: 0, want: 2 * time.Microsecond},
		{name: "q above 1 is the maximum", counts: []uint64{1, 1, 0, 0}, q: 7, want: 2 * time.Microsecond},
		{name: "the unbounded bucket gives the highest bound", counts: []uint64{1, 0, 0, 9}, q: 0.5, want: 4 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := agentbus.Histogram{Bounds: bounds, Counts: tt.counts}
			for _, c := range tt.counts {
				h.Count += c
			}
			assert.Equal(t, tt.want, h.Quantile(tt.q))
		})
	}
	assert.Zero(t, agentbus.Histogram{Count: 1, Counts: []uint64{1}}.Quantile(0.5), "no bounds")
}

func TestConfigBounds(t *testing.T) {
	tests := []struct {
		name string
		give agentbus.Config
	}{
		{name: "negative StatsMaxKeys", give: agentbus.Config{StatsMaxKeys: -1}},
		{name: "absurd StatsMaxKeys", give: agentbus.Config{StatsMaxKeys: math.MaxInt}},
		{name: "absurd MaxHistorySize", give: agentbus.Config{EnableHistory: true, MaxHistorySize: 1 << 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := agentbus.New(tt.give)
			require.ErrorIs(t, err, agentbus.ErrInvalidConfig)
		})
	}
}

// TestHistoryAbsurdQueries asks a full ring for absurd limits and ranges.
func TestHistoryAbsurdQueries(t *testing.T) {
	bus := newBus(t, agentbus.Config{EnableHistory: true, MaxHistorySize: 4})
	_, err := bus.Spawn("sink", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	var ids []string
	for i := range 10 { // wraps the ring twice
		id, err := bus.Send(t.Context(), from("tester", "sink", fmt.Sprint(i)))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	newest := []string{ids[9], ids[8], ids[7], ids[6]}
	now := time.Now()
	tests := []struct {
		name string
		q    agentbus.HistoryQuery
		want []string
	}{
		{"max limit", agentbus.HistoryQuery{Limit: math.MaxInt}, newest},
		{"min limit", agentbus.HistoryQuery{Limit: math.MinInt}, newest},
		{"negative limit", agentbus.HistoryQuery{Limit: -1}, newest},
		{"limit 1", agentbus.HistoryQuery{Limit: 1}, newest[:1]},
		{"since the future", agentbus.HistoryQuery{Since: now.Add(time.Hour)}, nil},
		{"until before since", agentbus.HistoryQuery{Since: now.Add(-time.Hour), Until: now.Add(-2 * time.Hour)}, nil},
		{"zero time range", agentbus.HistoryQuery{Since: time.Time{}, Until: time.Unix(0, 0)}, nil},
		{"a pattern matching nothing", agentbus.HistoryQuery{Topic: "no.>", Limit: math.MaxInt}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, m := range bus.QueryHistory(tt.q) {
				got = append(got, m.ID)
			}
			assert.Equal(t, tt.want, got)
		})
	}
	assert.Len(t, bus.History(math.MinInt), 4)
}

// liveHeap returns the live heap after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkStats takes a snapshot of a bus with 1,000 agents, each of which
// has published on a topic of its own (so 1,000 topic actors run too): 3,000
// entries (agents, topics, senders). The cost is reported per 100 entries:
// new is Stats, which allocates the snapshot (and so makes work for the GC),
// reuse is ReadStats into one Stats, as the Prometheus collector does.
func BenchmarkStats(b *testing.B) {
	const n = 1000
	bus, err := agentbus.New(agentbus.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
	ctx := context.Background()
	for i := range n {
		name := fmt.Sprintf("agent-%04d", i)
		if _, err := bus.Spawn(name, agentbus.HandlerFunc(sink)); err != nil {
			b.Fatal(err)
		}
		if err := bus.Subscribe("topic."+name, name); err != nil {
			b.Fatal(err)
		}
		if _, err := bus.Publish(ctx, "topic."+name, name, []byte(`{}`)); err != nil {
			b.Fatal(err)
		}
	}
	quiet(b, bus)
	s := bus.Stats()
	entries := len(s.Agents) + len(s.Topics) + len(s.Senders)
	if entries != 3*n {
		b.Fatalf("%d entries, want %d", entries, 3*n)
	}
	perEntries := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(entries)*100, "ns/100-entries")
	}
	b.Run("new", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s = bus.Stats()
		}
		perEntries(b)
	})
	b.Run("reuse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			bus.ReadStats(&s)
		}
		perEntries(b)
	})
	runtime.KeepAlive(s)
}

func TestCountsJSON(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    agentbus.Counts
		wantErr bool
	}{
		{name: "null", give: `null`, want: nil},
		{name: "empty", give: `{}`, want: agentbus.Counts{}},
		{name: "sorted on decode", give: `{"b":2,"$other":9,"a":1}`,
			want: agentbus.Counts{{agentbus.OtherKey, 9}, {"a", 1}, {"b", 2}}},
		{name: "not an object", give: `[1,2]`, wantErr: true},
		{name: "negative count", give: `{"a":-1}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got agentbus.Counts
			err := json.Unmarshal([]byte(tt.give), &got)
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			data, err := json.Marshal(got)
			require.NoError(t, err)
			if tt.want == nil {
				assert.JSONEq(t, `null`, string(data))
			} else {
				assert.JSONEq(t, tt.give, string(data))
			}
		})
	}
	assert.Zero(t, agentbus.Counts(nil).Get("a"))
	assert.Empty(t, agentbus.Counts(nil).Map())
}

// TestStatsCardinalityRace makes senders race for the same new names and for
// the last places under the cap: every message is still counted once, and no
// more than the cap is held.
func TestStatsCardinalityRace(t *testing.T) {
	const maxKeys, names, workers = 50, 200, 4
	bus := newBus(t, agentbus.Config{StatsMaxKeys: maxKeys})
	_, err := bus.Spawn("sink", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			<-start
			for i := range names { // the same names, in the same order
				if _, err := bus.Send(context.Background(), from(fmt.Sprintf("#sender-%03d", i), "sink", "1")); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	quiet(t, bus)

	s := bus.Stats()
	require.Len(t, s.Senders, maxKeys+1)
	assert.Equal(t, agentbus.OtherKey, s.Senders[maxKeys].Name, "'#' sorts before '$'")
	var total uint64
	for _, n := range s.Senders {
		if n.Name != agentbus.OtherKey {
			assert.LessOrEqual(t, n.Count, uint64(workers), n.Name)
		}
		total += n.Count
	}
	assert.Equal(t, uint64(workers*names), total)
}

// Publishers racing a topic actor that keeps retiring (no subscriber):
// each message is counted and kept in the history once. (A message that
// raced into a retiring actor's mailbox is published again without being
// recorded again; this race is rare, so the test guards the counts rather
// than forcing it.)
func TestPublishCountsUnderRetiringTopics(t *testing.T) {
	bus := newBus(t, agentbus.Config{EnableHistory: true})
	const publishers, each = 8, 1200 // under MaxHistorySize
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for range each {
				_, err := bus.Publish(t.Context(), "nobody.listens", "x", []byte(`1`))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		return bus.DeadLetters().Counts()[deadletter.NoSubscribers] == publishers*each
	}, 10*time.Second, time.Millisecond)
	st := bus.Stats()
	assert.EqualValues(t, publishers*each, st.Types[agentbus.TypePublish])
	assert.EqualValues(t, publishers*each, st.Topics.Get("nobody.listens"))
	assert.Equal(t, publishers*each, len(bus.History(0)))
}
