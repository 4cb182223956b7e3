package otelbus_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/otelbus"
)

// sink counts the messages it handles and signals when it has seen want.
type sink struct {
	n, want atomic.Int64
	done    chan struct{}
}

func (s *sink) Handle(context.Context, *agentbus.Message) error {
	if s.n.Add(1) == s.want.Load() {
		s.done <- struct{}{}
	}
	return nil
}

// BenchmarkSend is Send to one agent, timed until every message is handled:
// traced (a producer and a consumer span per message, sampled, batched to an
// exporter that discards them) and unsampled (a sampler that records
// nothing: the trace context is still propagated), each beside its floor,
// the same bus without otelbus. Compare with internal/benchratio:
//
//	go test -run '^$' -bench . -count 8 ./otelbus | go run ./internal/benchratio
func BenchmarkSend(b *testing.B) {
	run := func(sampler sdktrace.Sampler) func(*testing.B) {
		return func(b *testing.B) {
			cfg := agentbus.Config{}
			wrap := func(h agentbus.Handler) agentbus.Handler { return h }
			if sampler != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler),
					sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				tr, err := otelbus.New(tp)
				if err != nil {
					b.Fatal(err)
				}
				cfg, wrap = tr.Config(cfg), tr.Handler
			}
			bus, err := agentbus.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
			s := &sink{done: make(chan struct{}, 1)}
			if _, err := bus.Spawn("sink", wrap(s)); err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"task":"summarize","doc":"reports/q3.md"}`)
			ctx := context.Background()
			b.ReportAllocs()
			runtime.GC()
			n := 0
			for b.Loop() {
				m := agentbus.NewMessage(agentbus.TypeDirect, "bench", payload).WithRecipient("sink")
				if _, err := bus.Send(ctx, m); err != nil {
					b.Fatal(err)
				}
				n++
			}
			s.want.Store(int64(n))
			if s.n.Load() < int64(n) {
				select {
				case <-s.done:
				case <-time.After(time.Minute):
					b.Fatalf("only %d of %d messages handled", s.n.Load(), n)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		}
	}
	b.Run("traced", run(sdktrace.AlwaysSample()))
	b.Run("traced-floor", run(nil))
	b.Run("unsampled", run(sdktrace.NeverSample()))
	b.Run("unsampled-floor", run(nil))
}

// BenchmarkSpans is the Tracer's own work per message, without a bus: a
// producer span (Stamp, then the Observer's Accepted) and a consumer span
// (the Handler around a handler that does nothing), sampled (batched to an
// exporter that discards them) or not; each beside its floor, a bare span of
// the same provider started and ended (what any OpenTelemetry instrumentation
// pays at least).
func BenchmarkSpans(b *testing.B) {
	for _, sampled := range []bool{true, false} {
		sampler, label := sdktrace.AlwaysSample(), "sampled"
		if !sampled {
			sampler, label = sdktrace.NeverSample(), "unsampled"
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		tr, err := otelbus.New(tp)
		if err != nil {
			b.Fatal(err)
		}
		stamper, observer := tr.Stamper(), tr.Observer()
		payload := []byte(`{"task":"summarize","doc":"reports/q3.md"}`)
		b.Run("producer/"+label, func(b *testing.B) {
			ctx := context.Background()
			m := agentbus.NewMessage(agentbus.TypeDirect, "bench", payload).WithRecipient("sink")
			b.ReportAllocs()
			for b.Loop() {
				stamper.Stamp(ctx, m) // a new Metadata map each time, as for a fresh message
				observer.Observe(agentbus.Outcome{Kind: agentbus.OutcomeAccepted, Message: m})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		bare := func(b *testing.B) {
			tracer := tp.Tracer("bench")
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				_, span := tracer.Start(ctx, "span")
				span.End()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		}
		b.Run("producer/"+label+"-floor", bare)
		b.Run("consumer/"+label, func(b *testing.B) {
			h := tr.Handler(agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil }))
			m := agentbus.NewMessage(agentbus.TypeDirect, "bench", payload).WithRecipient("sink")
			stamper.Stamp(context.Background(), m)
			observer.Observe(agentbus.Outcome{Kind: agentbus.OutcomeAccepted, Message: m})
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Handle(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run("consumer/"+label+"-floor", bare)
	}
}
