package otelbus_test

import (
	"context"
	"fmt"
	"log"
	"slices"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/otelbus"
)

// A traced request to an agent that replies: the request's producer span,
// the handler's consumer span, and the reply it sends, in the caller's trace.
func Example() {
	exp := tracetest.NewInMemoryExporter() // in production: an OTLP exporter, batched
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	tr, err := otelbus.New(tp)
	if err != nil {
		log.Fatal(err)
	}
	bus, err := agentbus.New(tr.Config(agentbus.Config{}))
	if err != nil {
		log.Fatal(err)
	}
	_, err = bus.Spawn("echo", tr.Handler(agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Reply(ctx, m, m.Payload) // with the handler's ctx: a child of its span
		return err
	})))
	if err != nil {
		log.Fatal(err)
	}

	ctx, span := tp.Tracer("example").Start(context.Background(), "ask")
	resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "client", []byte(`"hi"`)).WithRecipient("echo"))
	if err != nil {
		log.Fatal(err)
	}
	span.End()
	if err := bus.Shutdown(context.Background()); err != nil { // waits for the handler, so its span has ended
		log.Fatal(err)
	}
	fmt.Println("response:", string(resp.Payload))

	spans := exp.GetSpans()
	name := map[trace.SpanID]string{}
	for _, s := range spans {
		name[s.SpanContext.SpanID()] = s.Name
	}
	var lines []string
	for _, s := range spans {
		parent, ok := name[s.Parent.SpanID()]
		if !ok {
			parent = "no parent"
		}
		lines = append(lines, fmt.Sprintf("%s (%s) <- %s", s.Name, s.SpanKind, parent))
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// response: "hi"
	// ask (internal) <- no parent
	// process echo (consumer) <- request echo
	// reply client (producer) <- process echo
	// request echo (producer) <- ask
}
