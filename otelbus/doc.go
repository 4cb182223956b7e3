// Package otelbus traces an agentbus.Bus with OpenTelemetry: a producer span
// for every message sent, a consumer span for every delivery a wrapped
// handler handles, and the dead letters, failures and retries on them, all
// linked into one trace through the W3C trace context that the bus carries in
// Message.Metadata (traceparent, tracestate).
//
// The bus does not import this package; it is wired in through the bus's
// seams: a Stamper (Config.Stampers) starts each producer span before the
// bus accepts the message, an Observer (Config.Observers) ends it with the
// outcome and turns dead letters into span events, and a handler wrapper puts
// the consumer span in the handler's ctx.
//
//	tr, err := otelbus.New(tracerProvider) // the SDK's, or any trace.TracerProvider
//	if err != nil {
//		return err
//	}
//	bus, err := agentbus.New(tr.Config(agentbus.Config{}))
//	if err != nil {
//		return err
//	}
//	_, err = bus.Spawn("planner", tr.Handler(agentbus.HandlerFunc(plan)))
//
// The package touches no OpenTelemetry global: spans come from the given
// TracerProvider, and contexts are written and read with W3C Trace Context
// unless WithPropagator says otherwise.
//
// # Spans
//
// A request from A's handler to B, whose handler requests C, is one trace:
//
//	process A                      consumer  (A's handler, wrapped)
//	└── request B                  producer  (A's Request, from A's ctx)
//	    └── process B              consumer
//	        ├── request C          producer
//	        │   └── process C      consumer
//	        │       └── reply B    producer  (C's Reply)
//	        └── reply A            producer  (B's Reply)
//
// The producer span of a message is a child of the span in the sender's ctx
// (a consumer span, inside a wrapped handler), or else of the trace context
// the message carries: the bus copies it from the message being handled into
// what the handler sends, and a client of the daemon may set its own. It
// ends when Send accepts the message (messaging.operation.type "send") or
// refuses it (status error, error.type the error's code, such as
// "no_recipient"). A publish's producer span has one consumer span per
// subscriber that handles it.
//
// A consumer span (messaging.operation.type "process") ends when its handler
// returns. If the handler fails, the span has status error and the error
// recorded, and the delivery's outcome as an event: EventRetry when the bus
// will deliver the message again (each redelivery has its own consumer
// span), EventDeadLetter with the reason (handler_error, handler_panic,
// retries_exhausted, transport_closed) when it goes to the dead-letter queue.
// A delivery dead-lettered without a handler span (expired, no_recipient,
// no_subscribers, mailbox_full, agent_stopped, shutdown, …) gets a span of
// its own, "dead_letter DEST" (messaging.operation.type "settle"), a child of
// the message's producer span, with status error and the EventDeadLetter
// event.
//
// A span starts with the attributes relevant to sampling (messaging.system,
// messaging.operation.type and .name, messaging.destination.name); one that
// records then gets the rest. Every recorded span has messaging.system
// "agentbus", messaging.message.id,
// messaging.operation.name, messaging.message.body.size, and where they
// apply messaging.destination.name (the recipient, or the topic of a
// publish), messaging.message.conversation_id (the correlation ID) and the
// bus's own attributes (AgentKey, SenderKey, MessageTypeKey, PriorityKey,
// RequestIDKey, AttemptsKey).
//
// # Bounds
//
// Spans waiting for their outcome are held in two bounded tables (see
// WithMaxOpenSpans): a span that finds its table full is ended at once and
// counted (Overflows), so memory stays bounded and no span is left open.
// OpenSpans is 0 on a quiet bus. Spans that are not sampled are not held.
//
// # The daemon
//
// `agentbus serve --otlp-endpoint HOST:PORT` exports these spans over OTLP
// (HTTP); see docs/bridges.md.
package otelbus
