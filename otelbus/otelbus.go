package otelbus

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/descartes/agentbus"
)

// ScopeName is the instrumentation scope of the Tracer's spans: the name it
// asks the TracerProvider for a tracer under.
const ScopeName = "github.com/descartes/agentbus/otelbus"

// DefaultMaxOpenSpans is how many spans a Tracer holds open at most in each
// of its two tables (see WithMaxOpenSpans).
const DefaultMaxOpenSpans = 10_000

// ErrInvalidOption is returned by New for a nil TracerProvider or an unusable
// option.
var ErrInvalidOption = errors.New("otelbus: invalid option")

// Attribute keys of the bus's own, beside the messaging semantic conventions.
const (
	// AgentKey is the agent that handles a delivery (consumer spans).
	AgentKey = attribute.Key("agentbus.agent")
	// SenderKey is the message's sender.
	SenderKey = attribute.Key("agentbus.sender")
	// MessageTypeKey is the message's type ("direct", "request", …).
	MessageTypeKey = attribute.Key("agentbus.message.type")
	// PriorityKey is the message's priority, 0 to 100.
	PriorityKey = attribute.Key("agentbus.priority")
	// RequestIDKey is the message's request ID, for requests and responses.
	RequestIDKey = attribute.Key("agentbus.request_id")
	// AttemptsKey is how often the message was tried, for messages that
	// require an ack (and on retry and dead-letter events).
	AttemptsKey = attribute.Key("agentbus.attempts")
	// ReasonKey is a dead letter's reason ("handler_error", "expired", …).
	ReasonKey = attribute.Key("agentbus.dead_letter.reason")
	// ErrorKey is the error text of a dead letter or a retry.
	ErrorKey = attribute.Key("agentbus.error")
	// SeqKey is a dead letter's sequence number in the dead-letter queue
	// (what `agentbus dlq` and Bus.Replay name it by).
	SeqKey = attribute.Key("agentbus.dead_letter.seq")
	// OverflowKey marks a span that was ended at once, without its
	// outcome, because the Tracer's table of open spans was full.
	OverflowKey = attribute.Key("agentbus.span.overflow")
)

// Span event names.
const (
	// EventDeadLetter is added to the span of a delivery that went to the
	// dead-letter queue, with ReasonKey, ErrorKey, SeqKey and AttemptsKey.
	EventDeadLetter = "agentbus.dead_letter"
	// EventRetry is added to the span of a failed delivery that the bus
	// will deliver again, with AttemptsKey and ErrorKey.
	EventRetry = "agentbus.retry"
)

// systemAttr is messaging.system on every span.
var systemAttr = semconv.MessagingSystemKey.String("agentbus")

// Tracer traces a bus with OpenTelemetry: a producer span per message sent
// (its Stamper starts it, its Observer ends it when the bus accepts or
// refuses the message), a consumer span per delivery its Handler wraps, and
// a span for each delivery dead-lettered without a handler. Spans are linked
// through the W3C trace context the bus carries in Message.Metadata. Make one
// with New; its methods are safe for concurrent use and never block beyond a
// short lock.
type Tracer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	fields []string // the propagator's Metadata keys, replaced on every stamp
	max    int
	kinds  [trace.SpanKindConsumer + 1]trace.SpanStartOption // made once: an option costs an allocation

	producers table[string]            // open producer spans, by message ID
	failing   table[*agentbus.Message] // consumer spans of failed deliveries, until their outcome

	observed atomic.Bool   // Observer or Config was called: failed deliveries await their outcome
	overflow atomic.Uint64 // spans ended early because a table was full
}

// Option configures a Tracer at New.
type Option func(*Tracer) error

// WithPropagator sets the propagator that writes span contexts into, and
// reads them from, Message.Metadata. Default: W3C Trace Context
// (propagation.TraceContext), whose keys (traceparent, tracestate) the bus
// itself carries from a message to what its handler sends. The global
// propagator is never used.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(t *Tracer) error {
		if p == nil {
			return fmt.Errorf("%w: nil propagator", ErrInvalidOption)
		}
		t.prop = p
		return nil
	}
}

// WithMaxOpenSpans caps each of the Tracer's two tables of open spans: the
// producer spans of messages being sent (a send waiting for room in a full
// mailbox holds its span open), and the consumer spans of failed deliveries
// awaiting their outcome. When a table is full, a new span is ended at once,
// marked with OverflowKey and counted by Overflows: it still links its
// children, but carries no outcome. Default DefaultMaxOpenSpans.
func WithMaxOpenSpans(n int) Option {
	return func(t *Tracer) error {
		if n <= 0 {
			return fmt.Errorf("%w: max open spans is %d, must be positive", ErrInvalidOption, n)
		}
		t.max = n
		return nil
	}
}

// New returns a Tracer that starts its spans with tp's tracer for ScopeName.
// It touches no OpenTelemetry global. It returns an error wrapping
// ErrInvalidOption for a nil tp or a bad option.
//
// Put it in the bus's Config (Tracer.Config), and wrap the handlers whose
// deliveries should have consumer spans (Tracer.Handler).
func New(tp trace.TracerProvider, opts ...Option) (*Tracer, error) {
	if tp == nil {
		return nil, fmt.Errorf("%w: nil TracerProvider", ErrInvalidOption)
	}
	t := &Tracer{
		tracer: tp.Tracer(ScopeName),
		prop:   propagation.TraceContext{},
		max:    DefaultMaxOpenSpans,
	}
	for _, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := o(t); err != nil {
			return nil, err
		}
	}
	t.fields = t.prop.Fields()
	for k := range t.kinds {
		t.kinds[k] = trace.WithSpanKind(trace.SpanKind(k))
	}
	t.producers.init(t.max)
	t.failing.init(t.max)
	return t, nil
}

// Config returns cfg with the Tracer's Stamper and Observer appended to its
// Stampers and Observers (cfg's own slices are not modified). Call it once
// per bus: twice would trace every message twice.
func (t *Tracer) Config(cfg agentbus.Config) agentbus.Config {
	cfg.Stampers = append(slices.Clip(cfg.Stampers), t.Stamper())
	cfg.Observers = append(slices.Clip(cfg.Observers), t.Observer())
	return cfg
}

// OpenSpans returns how many spans the Tracer holds open: producer spans of
// messages not yet accepted or refused, and consumer spans of failed
// deliveries whose outcome is not yet reported. On a quiet bus it is 0. It
// does not block beyond a short lock.
func (t *Tracer) OpenSpans() int { return t.producers.len() + t.failing.len() }

// Overflows returns how many spans were ended early, without their outcome,
// because a table of open spans was full (see WithMaxOpenSpans).
func (t *Tracer) Overflows() uint64 { return t.overflow.Load() }

// hold keeps span open in tb under k until its outcome. A span that does not
// record is not kept (ending it does nothing); one that finds tb full is
// ended now; one that displaces a span held under the same key (a message
// ID sent twice at once) ends that one.
func hold[K comparable](t *Tracer, tb *table[K], k K, span trace.Span) {
	if !span.IsRecording() {
		return
	}
	prev, ok := tb.put(k, span)
	if prev != nil {
		prev.End()
	}
	if !ok {
		t.overflow.Add(1)
		span.SetAttributes(OverflowKey.Bool(true))
		span.End()
	}
}
