package otelbus

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/protocol"
)

// Observer returns the agentbus.Observer that ends the Tracer's spans with
// their outcomes:
//
//   - Accepted ends the message's producer span.
//   - Refused ends it with status error, the error recorded, and error.type
//     set to the error's code ("no_recipient", "backpressure_timeout", …).
//   - Failed marks the consumer span of the delivery (see Handler) as
//     failed; the Retried or DeadLettered outcome that follows adds its
//     event (EventRetry, EventDeadLetter) and ends it.
//   - DeadLettered for a delivery that no wrapped handler failed on (it
//     expired in its queue, found no recipient or no subscriber, its agent
//     stopped, a mailbox was full, …) is a span of its own, "dead_letter
//     DEST", a child of the message's trace context, with status error and
//     the EventDeadLetter event.
//
// Calling it (or Config) also tells the Tracer's Handler that failed
// deliveries will get their outcome. The Observer is safe for concurrent use
// and does not block.
func (t *Tracer) Observer() agentbus.Observer {
	t.observed.Store(true)
	return observer{t}
}

type observer struct{ t *Tracer }

func (o observer) Observe(oc agentbus.Outcome) {
	t, m := o.t, oc.Message
	if m == nil {
		return
	}
	switch oc.Kind {
	case agentbus.OutcomeAccepted:
		if span, ok := t.producers.take(m.ID); ok {
			span.End()
		}
	case agentbus.OutcomeRefused:
		if span, ok := t.producers.take(m.ID); ok {
			span.RecordError(oc.Err)
			span.SetStatus(codes.Error, oc.Err.Error())
			span.SetAttributes(semconv.ErrorTypeKey.String(protocol.CodeOf(oc.Err)))
			span.End()
		}
	case agentbus.OutcomeFailed:
		if span, ok := t.failing.get(m); ok && oc.Err != nil {
			failed(span, oc.Err)
		}
	case agentbus.OutcomeRetried:
		if span, ok := t.failing.take(m); ok {
			attrs := []attribute.KeyValue{AttemptsKey.Int(m.Attempts)}
			if oc.Err != nil {
				attrs = append(attrs, ErrorKey.String(oc.Err.Error()))
			}
			span.AddEvent(EventRetry, trace.WithAttributes(attrs...))
			span.End()
		}
	case agentbus.OutcomeDeadLettered:
		if oc.Letter == nil || oc.Foreign {
			return // not a delivery of the bus
		}
		if span, ok := t.failing.take(m); ok {
			deadLettered(span, oc)
			span.End()
			return
		}
		t.deadLetterSpan(oc)
	}
}

// deadLetterSpan records a delivery dead-lettered without a handler's span:
// a span of its own, child of the message's trace context, ended at once.
func (t *Tracer) deadLetterSpan(oc agentbus.Outcome) {
	m := oc.Message
	dest := oc.Dest
	if m.Type == agentbus.TypePublish && m.Topic != "" {
		dest = m.Topic
	}
	ctx := t.prop.Extract(context.Background(), propagation.MapCarrier(m.Metadata))
	var extra []attribute.KeyValue
	if oc.Dest != "" {
		extra = append(extra, AgentKey.String(oc.Dest))
	}
	_, span := t.start(ctx, trace.SpanKindInternal, semconv.MessagingOperationTypeSettle, "dead_letter", dest, m, extra...)
	deadLettered(span, oc)
	span.End()
}

// deadLettered adds the dead letter of oc to span, as its event, its status
// and its error.type.
func deadLettered(span trace.Span, oc agentbus.Outcome) {
	l := oc.Letter
	reason := string(l.Reason)
	text := l.Err
	if text == "" && oc.Err != nil {
		text = oc.Err.Error()
	}
	attempts := l.Attempts
	if attempts == 0 && oc.Message != nil {
		attempts = oc.Message.Attempts
	}
	attrs := []attribute.KeyValue{ReasonKey.String(reason), AttemptsKey.Int(attempts)}
	if text != "" {
		attrs = append(attrs, ErrorKey.String(text))
	}
	if l.Seq != 0 {
		attrs = append(attrs, SeqKey.Int64(int64(l.Seq)))
	}
	span.AddEvent(EventDeadLetter, trace.WithAttributes(attrs...))
	if text == "" {
		text = "dead-lettered: " + reason
	}
	span.SetStatus(codes.Error, text)
	span.SetAttributes(semconv.ErrorTypeKey.String(reason), ReasonKey.String(reason))
}
