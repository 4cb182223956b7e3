package prom_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/bustest"
	"github.com/descartes/agentbus/prom"
	"github.com/descartes/agentbus/routing"
	"github.com/descartes/agentbus/supervisor"
)

// scrape fetches url and parses the text exposition format.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/plain") // the text format, not protobuf
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body strings.Builder
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(teeReader{resp.Body, &body})
	require.NoError(t, err)
	return families, body.String()
}

type teeReader struct {
	r interface{ Read([]byte) (int, error) }
	w *strings.Builder
}

func (t teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.w.Write(p[:n])
	return n, err
}

// value returns the value of the series of family name whose labels
// include want, failing the test if there is none.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	f, ok := families[name]
	require.True(t, ok, "no metric family %s", name)
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	require.Failf(t, "no series", "%s%v", name, want)
	return 0
}

// TestMetricsScrape registers the collector on a fresh registry, sends real
// traffic and scrapes it over HTTP.
func TestMetricsScrape(t *testing.T) {
	ctx := t.Context()
	bus := newBus(t, agentbus.Config{})
	reg := prometheus.NewRegistry()
	require.NoError(t, prom.Register(reg, bus))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	_, err := bus.Spawn("worker", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	_, err = bus.Spawn("monitor", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	_, err = bus.Spawn("flaky", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		return errors.New("quota exceeded")
	}))
	require.NoError(t, err)
	_, err = bus.Spawn("crasher", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		panic("boom")
	}), agentbus.WithSupervisor(supervisor.Restarting(3, time.Minute)))
	require.NoError(t, err)
	g := newGate(agentbus.HandlerFunc(sink))
	_, err = bus.Spawn("blocked", g)
	require.NoError(t, err)
	t.Cleanup(func() { close(g.Open) }) // before the bus shuts down
	require.NoError(t, bus.Subscribe("jobs.*", "monitor"))

	for range 5 {
		_, err := bus.Send(ctx, from("planner", "worker", "1"))
		require.NoError(t, err)
	}
	for range 2 {
		_, err := bus.Publish(ctx, "jobs.a", "planner", nil)
		require.NoError(t, err)
	}
	_, err = bus.Send(ctx, from("planner", "flaky", "1"))
	require.NoError(t, err)
	_, err = bus.Send(ctx, from("planner", "crasher", "1"))
	require.NoError(t, err)
	_, err = bus.Send(ctx, from("planner", "nobody", "1"))
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)
	for range 3 { // the first is held in the handler, two wait
		_, err := bus.Send(ctx, from("planner", "blocked", "1"))
		require.NoError(t, err)
	}
	<-g.Entered
	asking, stopAsking := context.WithCancel(ctx)
	defer stopAsking()
	asked := make(chan error, 1)
	go func() {
		_, err := bus.Request(asking, agentbus.NewMessage(agentbus.TypeRequest, "planner", nil).WithRecipient("blocked"))
		asked <- err
	}()
	require.Eventually(t, func() bool {
		return bus.PendingRequests() == 1 && bus.Backpressure().Pending() == 3 &&
			bus.Stats().Totals.Delivered == 5+2 && bus.Stats().Totals.Failed == 2
	}, 10*time.Second, time.Millisecond)

	families, text := scrape(t, srv.URL)
	assert.Equal(t, 10.0, value(t, families, "agentbus_messages_sent_total", "type", "direct"))
	assert.Equal(t, 2.0, value(t, families, "agentbus_messages_sent_total", "type", "publish"))
	assert.Equal(t, 1.0, value(t, families, "agentbus_messages_sent_total", "type", "request"))
	assert.Equal(t, 0.0, value(t, families, "agentbus_messages_sent_total", "type", "heartbeat"))
	assert.Equal(t, 7.0, value(t, families, "agentbus_messages_delivered_total"))
	assert.Equal(t, 2.0, value(t, families, "agentbus_messages_failed_total"))
	assert.Equal(t, 1.0, value(t, families, "agentbus_messages_rejected_total", "error", "no_recipient"))
	assert.Equal(t, 0.0, value(t, families, "agentbus_messages_rejected_total", "error", "too_large"))
	assert.Equal(t, 1.0, value(t, families, "agentbus_dead_letters_total", "reason", "handler_error"))
	assert.Equal(t, 1.0, value(t, families, "agentbus_dead_letters_total", "reason", "handler_panic"))
	assert.Equal(t, 2.0, value(t, families, "agentbus_dead_letters_held"))
	assert.Equal(t, 3.0, value(t, families, "agentbus_mailbox_depth", "agent", "blocked"))
	assert.Equal(t, 1024.0, value(t, families, "agentbus_mailbox_capacity", "agent", "blocked"))
	assert.Equal(t, 5.0, value(t, families, "agentbus_agent_handled_total", "agent", "worker"))
	assert.Equal(t, 1.0, value(t, families, "agentbus_agent_failed_total", "agent", "flaky"))
	assert.Equal(t, 1.0, value(t, families, "agentbus_agent_restarts_total", "agent", "crasher"))
	assert.Equal(t, 2.0, value(t, families, "agentbus_topic_messages_total", "topic", "jobs.a"))
	assert.Equal(t, 13.0, value(t, families, "agentbus_sender_messages_total", "sender", "planner"))
	assert.Equal(t, 3.0, value(t, families, "agentbus_backpressure_pending"))
	assert.Equal(t, float64(agentbus.DefaultMaxPending), value(t, families, "agentbus_backpressure_max_pending"))
	assert.Equal(t, 1.0, value(t, families, "agentbus_pending_requests"))
	assert.Equal(t, 0.0, value(t, families, "agentbus_pending_retries"))
	assert.Equal(t, 4.0, value(t, families, "agentbus_deliveries_in_flight"), "3 queued, 1 being handled")
	assert.Greater(t, value(t, families, "agentbus_agent_last_active_timestamp_seconds", "agent", "worker"),
		float64(time.Now().Add(-time.Minute).Unix()))

	latency := families["agentbus_delivery_latency_seconds"]
	require.NotNil(t, latency)
	assert.Equal(t, dto.MetricType_HISTOGRAM, latency.GetType())
	h := latency.GetMetric()[0].GetHistogram()
	assert.Positive(t, h.GetSampleCount())
	assert.Positive(t, h.GetSampleSum())
	require.Len(t, h.GetBucket(), 31, "30 bounds and +Inf")
	assert.Equal(t, 1e-6, h.GetBucket()[0].GetUpperBound())
	assert.Equal(t, 536.870912, h.GetBucket()[29].GetUpperBound())
	assert.Equal(t, h.GetSampleCount(), h.GetBucket()[29].GetCumulativeCount(), "nothing took 9 minutes")
	assert.Contains(t, text, "# TYPE agentbus_delivery_latency_seconds histogram")
	assert.Contains(t, text, `agentbus_mailbox_depth{agent="blocked"} 3`)

	stopAsking()
	require.ErrorIs(t, <-asked, context.Canceled)
}

// TestMetricsLint checks the names, help and types against Prometheus's
// conventions.
func TestMetricsLint(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	_, err := bus.Spawn("worker", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	require.NoError(t, bus.Router().RegisterHandler("audit", agentbus.HandlerFunc(sink)))
	require.NoError(t, bus.Router().AddRule(routing.Rule{ID: "all", Handler: "audit", Enabled: true}))
	_, err = bus.Publish(t.Context(), "jobs.a", "planner", nil)
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), from("planner", "worker", "1"))
	require.NoError(t, err)
	quiet(t, bus)

	problems, err := testutil.CollectAndLint(prom.NewCollector(bus))
	require.NoError(t, err)
	assert.Empty(t, problems)
	// Once an agent and a routing handler have handled a message, every
	// family is present, and a pedantic registry accepts them.
	assert.Len(t, familyNames(t, prom.NewCollector(bus)), 30)
}

func familyNames(t *testing.T, c prometheus.Collector) map[string]bool {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	families, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	return names
}

func TestRegisterMetrics(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	tests := []struct {
		name    string
		give    prometheus.Registerer
		wantErr error
	}{
		{name: "nil", give: nil, wantErr: prom.ErrNilRegisterer},
		{name: "nil registry", give: (*prometheus.Registry)(nil), wantErr: prom.ErrNilRegisterer},
		{name: "fresh registry", give: prometheus.NewRegistry()},
		{name: "pedantic registry", give: prometheus.NewPedanticRegistry()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := prom.Register(tt.give, bus)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			err = prom.Register(tt.give, bus)
			var already prometheus.AlreadyRegisteredError
			require.ErrorAs(t, err, &already, "registered twice")
		})
	}

	// Two buses on one registry, told apart by a label.
	other := newBus(t, agentbus.Config{})
	reg := prometheus.NewRegistry()
	require.NoError(t, prom.Register(prometheus.WrapRegistererWith(prometheus.Labels{"bus": "a"}, reg), bus))
	require.NoError(t, prom.Register(prometheus.WrapRegistererWith(prometheus.Labels{"bus": "b"}, reg), other))
	require.ErrorIs(t, prom.Register(prometheus.NewRegistry(), nil), prom.ErrNilBus)
	_, err := reg.Gather()
	require.NoError(t, err)
}

// TestMetricsTouchNoGlobals checks that the library leaves the default
// registry and http.DefaultServeMux alone.
func TestMetricsTouchNoGlobals(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	require.NoError(t, prom.Register(prometheus.NewRegistry(), bus))
	_, err := bus.Spawn("worker", agentbus.HandlerFunc(sink))
	require.NoError(t, err)

	families, err := prometheus.DefaultGatherer.Gather()
	require.NoError(t, err)
	for _, f := range families {
		assert.False(t, strings.HasPrefix(f.GetName(), "agentbus_"), f.GetName())
	}
	_, pattern := http.DefaultServeMux.Handler(httptest.NewRequest(http.MethodGet, "/metrics", nil))
	assert.Empty(t, pattern)
}

// TestMetricsAfterShutdown scrapes a bus that has shut down: the totals
// remain.
func TestMetricsAfterShutdown(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	_, err = bus.Spawn("worker", agentbus.HandlerFunc(sink))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), from("planner", "worker", "1"))
	require.NoError(t, err)
	require.NoError(t, bus.Shutdown(t.Context()))

	c := prom.NewCollector(bus)
	assert.Equal(t, 1.0, testutil.ToFloat64(filter{c, "agentbus_messages_delivered_total"}))
	assert.Zero(t, testutil.CollectAndCount(c, "agentbus_mailbox_depth"), "no agents left")
}

// filter collects only the metrics of one family from c.
type filter struct {
	c    prometheus.Collector
	name string
}

func (f filter) Describe(ch chan<- *prometheus.Desc) { f.c.Describe(ch) }

func (f filter) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+f.name+`"`) {
			ch <- m
		}
	}
}

// TestNilBusCollector checks that a collector made for a nil bus reports an
// error on scrape instead of panicking.
func TestNilBusCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(prom.NewCollector(nil)))
	_, err := reg.Gather()
	require.ErrorContains(t, err, prom.ErrNilBus.Error())
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newBus(t testing.TB, cfg agentbus.Config) *agentbus.Bus { return bustest.New(t, cfg) }

func quiet(t testing.TB, bus *agentbus.Bus) { bustest.Quiet(t, bus) }

var sink = bustest.Sink

func from(sender, to, payload string) *agentbus.Message {
	return agentbus.NewMessage(agentbus.TypeDirect, sender, []byte(payload)).WithRecipient(to)
}

// newGate returns a handler that holds its first message until its Open is
// closed, so a test can queue messages behind it.
func newGate(inner agentbus.Handler) *bustest.Gate { return bustest.NewGate(inner) }
