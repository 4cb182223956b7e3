package otelbus

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
)

// Handler wraps h so that each delivery it handles runs in a consumer span:
// a child of the trace context the message carries (its producer span), in
// the handler's ctx, so that what the handler sends with that ctx is traced
// as the span's children. The span ends when h returns nil. When h fails
// (returns an error or panics) and the Tracer's Observer is in the bus's
// Config, the span stays open until the bus reports the delivery's outcome:
// the failure sets its status to error and records the error, and a retry
// or a dead letter adds its event (EventRetry, EventDeadLetter) and ends it.
// Without the Observer (neither Config nor Observer was called), a failed
// delivery's span ends when h returns, with status error. A nil h is
// returned as is, so that Spawn reports it. The wrapper is safe for
// concurrent use if h is.
func (t *Tracer) Handler(h agentbus.Handler) agentbus.Handler {
	if actors.NilHandler(h) {
		return h
	}
	return handler{t: t, h: h}
}

type handler struct {
	t *Tracer
	h agentbus.Handler
}

func (x handler) Handle(ctx context.Context, msg *agentbus.Message) (err error) {
	t := x.t
	agent := msg.Recipient // outside a bus's agent (a client's handler, say), the message says
	if a := actors.FromContext(ctx); a != nil {
		agent = a.Name()
	}
	dest := agent
	if msg.Type == agentbus.TypePublish {
		dest = msg.Topic
	}
	ctx = t.prop.Extract(ctx, propagation.MapCarrier(msg.Metadata))
	var extra []attribute.KeyValue
	if agent != "" {
		extra = append(extra, AgentKey.String(agent))
	}
	if msg.RequiresAck {
		extra = append(extra, AttemptsKey.Int(msg.Attempts))
	}
	ctx, span := t.start(ctx, trace.SpanKindConsumer, semconv.MessagingOperationTypeProcess, "process", dest, msg, extra...)

	panicked := true
	defer func() {
		switch {
		case !panicked && err == nil:
			span.End()
		case t.observed.Load():
			hold(t, &t.failing, msg, span) // the Observer ends it with the outcome
		default:
			if panicked {
				span.SetStatus(codes.Error, "handler panicked")
				span.SetAttributes(semconv.ErrorTypeKey.String("handler_panic"))
			} else {
				failed(span, err)
			}
			span.End()
		}
	}()
	err = x.h.Handle(ctx, msg)
	panicked = false
	return err
}

// failed marks span as failed with err (a handler's error or panic).
func failed(span trace.Span, err error) {
	kind := "handler_error"
	if errors.Is(err, agentbus.ErrHandlerPanic) {
		kind = "handler_panic"
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	span.SetAttributes(semconv.ErrorTypeKey.String(kind))
}
