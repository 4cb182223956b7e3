package otelbus

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/descartes/agentbus"
)

// Stamper returns the agentbus.Stamper that starts a producer span for every
// message the bus is about to accept, and writes the span's context into a
// new Metadata map of the message. The span's parent is the span in the
// sender's ctx (a handler's consumer span, when the handler is wrapped by
// Handler) or else the trace context the message already carries (inherited
// by the bus from the message being handled, or set by the sender). The
// Tracer's Observer ends the span when the bus accepts or refuses the
// message: put both in the bus's Config (Config does). The Stamper is safe
// for concurrent use and does not block.
func (t *Tracer) Stamper() agentbus.Stamper { return stamper{t} }

type stamper struct{ t *Tracer }

func (s stamper) Stamp(ctx context.Context, msg *agentbus.Message) {
	t := s.t
	parent := ctx
	if !trace.SpanContextFromContext(ctx).IsValid() {
		parent = t.prop.Extract(ctx, propagation.MapCarrier(msg.Metadata))
	}
	op, dest := operation(msg)
	ctx, span := t.start(parent, trace.SpanKindProducer, semconv.MessagingOperationTypeSend, op, dest, msg)

	// A new map: the message's may be shared with the one it was cloned
	// from. The propagator's keys are replaced, never merged (a stale
	// tracestate must not outlive its traceparent).
	md := make(map[string]string, len(msg.Metadata)+len(t.fields))
	for k, v := range msg.Metadata {
		md[k] = v
	}
	for _, f := range t.fields {
		delete(md, f)
	}
	t.prop.Inject(ctx, propagation.MapCarrier(md))
	msg.Metadata = md
	hold(t, &t.producers, msg.ID, span)
}

// operation returns the messaging.operation.name of a send of msg, and its
// destination (messaging.destination.name): the topic of a publish or a
// subscription change, else the recipient, if any.
func operation(msg *agentbus.Message) (op, dest string) {
	dest = msg.Recipient
	switch msg.Type {
	case agentbus.TypePublish:
		return "publish", msg.Topic
	case agentbus.TypeSubscribe, agentbus.TypeUnsubscribe:
		return msg.Type.String(), msg.Topic
	case agentbus.TypeBroadcast:
		return "broadcast", ""
	case agentbus.TypeRequest:
		return "request", dest
	case agentbus.TypeResponse:
		return "reply", dest
	case agentbus.TypeAck:
		return "ack", dest
	}
	return "send", dest
}

// start starts a span of msg of kind, named "OP DEST" (or "OP" without a
// destination). It starts with the attributes that the messaging
// conventions call relevant to sampling (system, operation, destination);
// a span that records then gets the others, and extra: an unsampled span is
// spared building them.
func (t *Tracer) start(ctx context.Context, kind trace.SpanKind, opType attribute.KeyValue, op, dest string,
	msg *agentbus.Message, extra ...attribute.KeyValue) (context.Context, trace.Span) {
	name := op
	var buf [4]attribute.KeyValue
	attrs := append(buf[:0], systemAttr, opType, semconv.MessagingOperationName(op))
	if dest != "" {
		name = op + " " + dest
		attrs = append(attrs, semconv.MessagingDestinationName(dest))
	}
	ctx, span := t.tracer.Start(ctx, name, t.kinds[kind], trace.WithAttributes(attrs...))
	if !span.IsRecording() {
		return ctx, span
	}
	more := make([]attribute.KeyValue, 0, 8+len(extra))
	more = append(more, semconv.MessagingMessageID(msg.ID), semconv.MessagingMessageBodySize(len(msg.Payload)),
		MessageTypeKey.String(msg.Type.String()), PriorityKey.Int(int(msg.Priority)))
	if msg.CorrelationID != "" {
		more = append(more, semconv.MessagingMessageConversationID(msg.CorrelationID))
	}
	if msg.Sender != "" {
		more = append(more, SenderKey.String(msg.Sender))
	}
	if msg.RequestID != "" {
		more = append(more, RequestIDKey.String(msg.RequestID))
	}
	span.SetAttributes(append(more, extra...)...)
	return ctx, span
}
