package prom

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/descartes/agentbus"
)

// NewCollector returns a prometheus.Collector that exposes b's statistics
// (see agentbus.Bus.Stats) under the agentbus_ prefix. Every scrape takes one snapshot
// (Bus.ReadStats into a Stats the collector keeps, so a scrape allocates little
// beyond the metrics themselves; concurrent scrapes take turns); it counts
// nothing itself, so it stays correct however often it is scraped, and after
// Shutdown it reports the final totals. Register it on your own registry, or
// use Register; neither the bus nor this package touches prometheus.DefaultRegisterer.
// Two buses on one registry need distinct labels
// (prometheus.WrapRegistererWith). It is safe for concurrent use and does not
// block beyond the short locks of Stats.
//
// The metrics, with their labels:
//
//	agentbus_messages_sent_total{type}          counter  messages accepted, by message type
//	agentbus_messages_delivered_total           counter  deliveries whose handler returned nil
//	agentbus_messages_failed_total              counter  deliveries whose handler failed or panicked
//	agentbus_messages_expired_total             counter  deliveries that expired in a queue
//	agentbus_messages_rejected_total{error}     counter  messages refused, by kind of error
//	agentbus_dead_letters_total{reason}         counter  dead letters, by reason
//	agentbus_dead_letters_held                  gauge    letters in the dead-letter queue
//	agentbus_dead_letters_evicted_total         counter  letters evicted from it
//	agentbus_deliveries_{accepted,handled,dead_lettered,retried}_total, agentbus_deliveries_in_flight
//	                                                     the Accounting ledger
//	agentbus_mailbox_depth{agent}               gauge    messages queued for the agent
//	agentbus_mailbox_capacity{agent}            gauge    its mailbox's capacity
//	agentbus_agent_{received,handled,failed,restarts}_total{agent}
//	                                            counter  per agent (reset when an agent is spawned again)
//	agentbus_agent_last_active_timestamp_seconds{agent}  gauge  when its handler last returned
//	agentbus_handler_{handled,failed}_total{handler}, agentbus_handler_mailbox_depth{handler}
//	                                                     the router's handlers
//	agentbus_topic_messages_total{topic}        counter  messages published, by topic
//	agentbus_sender_messages_total{sender}      counter  messages sent, by sender
//	agentbus_backpressure_pending               gauge    messages queued in all mailboxes
//	agentbus_backpressure_max_pending           gauge    the bound on them
//	agentbus_pending_requests                   gauge    Request calls waiting for a response
//	agentbus_pending_retries                    gauge    redeliveries waiting for their timer
//	agentbus_delivery_latency_seconds           histogram  queued to handled (see Histogram)
//
// Topic and sender labels are bounded by agentbus.Config.StatsMaxKeys, with
// the rest under agentbus.OtherKey. A nil b gets ErrNilBus from Register and
// a collector that reports the error on every scrape.
func NewCollector(b *agentbus.Bus) prometheus.Collector { return newCollector(b) }

// ErrNilBus is returned by Register for a nil bus.
var ErrNilBus = errors.New("prom: nil bus")

// ErrNilRegisterer is returned by Register for a nil registerer.
var ErrNilRegisterer = errors.New("prom: nil prometheus registerer")

// Register registers NewCollector(b) with reg. It returns ErrNilBus or
// ErrNilRegisterer for a nil argument, and reg's own error otherwise (a
// prometheus.AlreadyRegisteredError if b's metrics are registered already).
// It does not block.
func Register(reg prometheus.Registerer, b *agentbus.Bus) error {
	if r, ok := reg.(*prometheus.Registry); reg == nil || ok && r == nil {
		return ErrNilRegisterer
	}
	if b == nil {
		return ErrNilBus
	}
	if err := reg.Register(NewCollector(b)); err != nil {
		return fmt.Errorf("prom: register agentbus metrics: %w", err)
	}
	return nil
}

// collector implements prometheus.Collector over Bus.ReadStats.
type collector struct {
	b *agentbus.Bus

	mu sync.Mutex     // serializes scrapes, which share s
	s  agentbus.Stats // reused from scrape to scrape

	sent, delivered, failed, expired, rejected    *prometheus.Desc
	deadLetters, dlHeld, dlEvicted                *prometheus.Desc
	accepted, handled, deadLettered, retried      *prometheus.Desc
	inFlight                                      *prometheus.Desc
	depth, capacity                               *prometheus.Desc
	agentReceived, agentHandled, agentFailed      *prometheus.Desc
	agentRestarts, agentLastActive                *prometheus.Desc
	handlerHandled, handlerFailed, handlerDepth   *prometheus.Desc
	topicMessages, senderMessages                 *prometheus.Desc
	bpPending, bpMax, pendingRequests, pendingRet *prometheus.Desc
	latency                                       *prometheus.Desc
}

func newCollector(b *agentbus.Bus) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("agentbus_"+name, help, labels, nil)
	}
	return &collector{
		b:         b,
		sent:      d("messages_sent_total", "Messages the bus accepted (Send, Publish, Request, Reply), by message type.", "type"),
		delivered: d("messages_delivered_total", "Deliveries to agents and routing handlers whose handler returned nil."),
		failed:    d("messages_failed_total", "Deliveries whose handler returned an error or panicked."),
		expired:   d("messages_expired_total", "Deliveries whose TTL ran out in a queue."),
		rejected:  d("messages_rejected_total", "Messages the bus refused, by kind of error.", "error"),

		deadLetters: d("dead_letters_total", "Dead letters, by reason, evicted ones included.", "reason"),
		dlHeld:      d("dead_letters_held", "Letters held in the dead-letter queue."),
		dlEvicted:   d("dead_letters_evicted_total", "Letters evicted from the dead-letter queue to respect its bounds."),

		accepted:     d("deliveries_accepted_total", "Deliveries (one message to one destination) the bus accepted."),
		handled:      d("deliveries_handled_total", "Accepted deliveries that completed."),
		deadLettered: d("deliveries_dead_lettered_total", "Accepted deliveries that were dead-lettered."),
		retried:      d("deliveries_retried_total", "Failed deliveries of messages requiring an ack that were scheduled again."),
		inFlight:     d("deliveries_in_flight", "Deliveries queued in a mailbox or being handled (redeliveries waiting for their timer are agentbus_pending_retries)."),

		depth:           d("mailbox_depth", "Messages queued in the agent's mailbox.", "agent"),
		capacity:        d("mailbox_capacity", "Capacity of the agent's mailbox.", "agent"),
		agentReceived:   d("agent_received_total", "Messages queued for the agent.", "agent"),
		agentHandled:    d("agent_handled_total", "Messages the agent's handler completed without error.", "agent"),
		agentFailed:     d("agent_failed_total", "Messages the agent's handler failed (error or panic).", "agent"),
		agentRestarts:   d("agent_restarts_total", "Restarts of the agent by its supervisor.", "agent"),
		agentLastActive: d("agent_last_active_timestamp_seconds", "When the agent's handler last returned, in Unix seconds.", "agent"),

		handlerHandled: d("handler_handled_total", "Messages the routing handler completed without error.", "handler"),
		handlerFailed:  d("handler_failed_total", "Messages the routing handler failed (error or panic).", "handler"),
		handlerDepth:   d("handler_mailbox_depth", "Messages queued for the routing handler.", "handler"),

		topicMessages:  d("topic_messages_total", "Messages published, by topic ("+agentbus.OtherKey+": topics beyond the cap).", "topic"),
		senderMessages: d("sender_messages_total", "Messages sent, by sender ("+agentbus.OtherKey+": senders beyond the cap).", "sender"),

		bpPending:       d("backpressure_pending", "Messages queued in all mailboxes together."),
		bpMax:           d("backpressure_max_pending", "The bound on messages queued in all mailboxes together."),
		pendingRequests: d("pending_requests", "Request calls waiting for a response."),
		pendingRet:      d("pending_retries", "Redeliveries waiting for their timer."),

		latency: d("delivery_latency_seconds", "Time from a message being queued for an agent to its handler returning."),
	}
}

func (c *collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.sent, c.delivered, c.failed, c.expired, c.rejected,
		c.deadLetters, c.dlHeld, c.dlEvicted,
		c.accepted, c.handled, c.deadLettered, c.retried, c.inFlight,
		c.depth, c.capacity, c.agentReceived, c.agentHandled, c.agentFailed, c.agentRestarts, c.agentLastActive,
		c.handlerHandled, c.handlerFailed, c.handlerDepth,
		c.topicMessages, c.senderMessages,
		c.bpPending, c.bpMax, c.pendingRequests, c.pendingRet,
		c.latency,
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats snapshot per call.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.b == nil {
		ch <- prometheus.NewInvalidMetric(c.sent, ErrNilBus)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.ReadStats(&c.s)
	s := &c.s
	// Label values are valid UTF-8 (agent names and subjects are checked,
	// and stats keep no other name), so these never fail; if one did, the
	// scrape reports it instead of panicking.
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, t, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		emit(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { emit(d, prometheus.GaugeValue, v, labels...) }

	for t, n := range s.Types {
		counter(c.sent, n, t.String())
	}
	counter(c.delivered, s.Totals.Delivered)
	counter(c.failed, s.Totals.Failed)
	counter(c.expired, s.Totals.Expired)
	for kind, n := range s.Rejected {
		counter(c.rejected, n, kind)
	}
	for r, n := range s.DeadLetters.ByReason {
		counter(c.deadLetters, n, string(r))
	}
	gauge(c.dlHeld, float64(s.DeadLetters.Held))
	counter(c.dlEvicted, s.DeadLetters.Evicted)

	counter(c.accepted, s.Ledger.Accepted)
	counter(c.handled, s.Ledger.Handled)
	counter(c.deadLettered, s.Ledger.DeadLettered)
	counter(c.retried, s.Ledger.Retried)
	gauge(c.inFlight, float64(s.Ledger.InFlight))

	for _, a := range s.Agents {
		gauge(c.depth, float64(a.Queued), a.Name)
		gauge(c.capacity, float64(a.Capacity), a.Name)
		counter(c.agentReceived, a.Received, a.Name)
		counter(c.agentHandled, a.Handled, a.Name)
		counter(c.agentFailed, a.Failed, a.Name)
		counter(c.agentRestarts, uint64(a.Restarts), a.Name)
		if !a.LastActive.IsZero() {
			gauge(c.agentLastActive, float64(a.LastActive.UnixNano())/1e9, a.Name)
		}
	}
	for _, h := range s.Handlers {
		counter(c.handlerHandled, h.Handled, h.Name)
		counter(c.handlerFailed, h.Failed, h.Name)
		gauge(c.handlerDepth, float64(h.Queued), h.Name)
	}
	for _, t := range s.Topics {
		counter(c.topicMessages, t.Count, t.Name)
	}
	for _, sn := range s.Senders {
		counter(c.senderMessages, sn.Count, sn.Name)
	}

	gauge(c.bpPending, float64(s.Backpressure.Pending))
	gauge(c.bpMax, float64(s.Backpressure.MaxPending))
	gauge(c.pendingRequests, float64(s.PendingRequests))
	gauge(c.pendingRet, float64(s.PendingRetries))

	h := s.Latency
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, bound := range h.Bounds {
		cum += h.Counts[i]
		buckets[bound.Seconds()] = cum
	}
	m, err := prometheus.NewConstHistogram(c.latency, h.Count, h.Sum.Seconds(), buckets)
	if err != nil {
		m = prometheus.NewInvalidMetric(c.latency, err)
	}
	ch <- m
}
