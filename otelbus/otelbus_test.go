package otelbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/otelbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// traced is a bus traced by a Tracer into the SDK's in-memory exporter; a
// span recorder beside it sees every span start and end.
type traced struct {
	bus *agentbus.Bus
	tr  *otelbus.Tracer
	tp  *sdktrace.TracerProvider
	exp *tracetest.InMemoryExporter
	rec *tracetest.SpanRecorder
}

// newTraced returns a traced bus. When the test ends it shuts the bus down
// and checks that every span started was ended and none is held open.
func newTraced(t *testing.T, cfg agentbus.Config, opts ...otelbus.Option) *traced {
	t.Helper()
	x := &traced{exp: tracetest.NewInMemoryExporter(), rec: tracetest.NewSpanRecorder()}
	x.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(x.exp), sdktrace.WithSpanProcessor(x.rec))
	var err error
	x.tr, err = otelbus.New(x.tp, opts...)
	require.NoError(t, err)
	x.bus, err = agentbus.New(x.tr.Config(cfg))
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, x.bus.Shutdown(ctx))
		assert.Zero(t, x.tr.OpenSpans(), "spans held open after shutdown")
		x.assertAllEnded(t)
		require.NoError(t, x.tp.Shutdown(ctx))
	})
	return x
}

// assertAllEnded checks that every span started has ended.
func (x *traced) assertAllEnded(t *testing.T) {
	t.Helper()
	assert.Empty(t, x.unended(), "spans never ended")
}

// unended returns the names of the spans started and not ended.
func (x *traced) unended() []string {
	ended := map[trace.SpanID]bool{}
	for _, s := range x.rec.Ended() {
		ended[s.SpanContext().SpanID()] = true
	}
	var open []string
	for _, s := range x.rec.Started() {
		if !ended[s.SpanContext().SpanID()] {
			open = append(open, s.Name())
		}
	}
	return open
}

// spawn spawns a wrapped handler.
func (x *traced) spawn(t *testing.T, name string, h agentbus.HandlerFunc, opts ...agentbus.SpawnOption) {
	t.Helper()
	_, err := x.bus.Spawn(name, x.tr.Handler(h), opts...)
	require.NoError(t, err)
}

// settle waits until the bus is idle, no span is held open, and n spans
// have been exported, and returns them.
func (x *traced) settle(t *testing.T, n int) tracetest.SpanStubs {
	t.Helper()
	require.Eventually(t, func() bool {
		return x.bus.Accounting().Idle() && x.tr.OpenSpans() == 0 && len(x.exp.GetSpans()) >= n
	}, 10*time.Second, time.Millisecond, "spans: %s", names(x.exp.GetSpans()))
	spans := x.exp.GetSpans()
	require.Len(t, spans, n, "spans: %s", names(spans))
	return spans
}

func names(spans tracetest.SpanStubs) string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return strings.Join(out, ", ")
}

// tree renders spans as an indented tree, one span a line ("name kind",
// with the consuming agent of a consumer span in brackets), siblings sorted
// by their rendering. A span whose parent is not among spans is a root,
// marked "(remote parent)" if its parent came from a message's trace
// context.
func tree(spans tracetest.SpanStubs) string {
	children := map[trace.SpanID][]tracetest.SpanStub{}
	ids := map[trace.SpanID]bool{}
	for _, s := range spans {
		ids[s.SpanContext.SpanID()] = true
	}
	var roots []tracetest.SpanStub
	for _, s := range spans {
		if p := s.Parent.SpanID(); s.Parent.IsValid() && ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	var render func(s tracetest.SpanStub, depth int) string
	level := func(spans []tracetest.SpanStub, depth int) string {
		var out []string
		for _, s := range spans {
			out = append(out, render(s, depth))
		}
		slices.Sort(out)
		return strings.Join(out, "")
	}
	render = func(s tracetest.SpanStub, depth int) string {
		l := strings.Repeat("  ", depth) + s.Name + " " + s.SpanKind.String()
		if a, ok := attr(s, otelbus.AgentKey); ok && s.SpanKind == trace.SpanKindConsumer {
			l += " [" + a.AsString() + "]"
		}
		if depth == 0 && s.Parent.IsRemote() {
			l += " (remote parent)"
		}
		return l + "\n" + level(children[s.SpanContext.SpanID()], depth+1)
	}
	return level(roots, 0)
}

func attr(s tracetest.SpanStub, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func attrs(s tracetest.SpanStub) map[attribute.Key]string { return kvs(s.Attributes) }

func kvs(list []attribute.KeyValue) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range list {
		m[kv.Key] = kv.Value.String()
	}
	return m
}

func find(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no span %q in %s", name, names(spans))
	return tracetest.SpanStub{}
}

func event(s tracetest.SpanStub, name string) (sdktrace.Event, bool) {
	for _, e := range s.Events {
		if e.Name == name {
			return e, true
		}
	}
	return sdktrace.Event{}, false
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received within 10s")
		var zero T
		return zero
	}
}

// A request chain across three agents (A requests B, whose handler requests
// C; C replies, B replies) is one trace with the right parent-child links.
func TestRequestChainIsOneTrace(t *testing.T) {
	x := newTraced(t, agentbus.Config{})
	done := make(chan string, 1)
	x.spawn(t, "C", func(ctx context.Context, m *agentbus.Message) error {
		_, err := x.bus.Reply(ctx, m, []byte(`"from C"`))
		return err
	})
	x.spawn(t, "B", func(ctx context.Context, m *agentbus.Message) error {
		resp, err := x.bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`"to C"`)).WithRecipient("C"))
		if err != nil {
			return err
		}
		_, err = x.bus.Reply(ctx, m, resp.Payload)
		return err
	})
	x.spawn(t, "A", func(ctx context.Context, m *agentbus.Message) error {
		resp, err := x.bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`"to B"`)).WithRecipient("B"))
		if err != nil {
			return err
		}
		done <- string(resp.Payload)
		return nil
	})

	ctx, root := x.tp.Tracer("test").Start(t.Context(), "test")
	in := agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(`"go"`)).WithRecipient("A").WithCorrelationID("job-1")
	id, err := x.bus.Send(ctx, in)
	require.NoError(t, err)
	assert.Equal(t, `"from C"`, recv(t, done))
	root.End()

	spans := x.settle(t, 9)
	assert.Equal(t, `test internal
  send A producer
    process A consumer [A]
      request B producer
        process B consumer [B]
          reply A producer
          request C producer
            process C consumer [C]
              reply B producer
`, tree(spans))
	for _, s := range spans {
		assert.Equal(t, root.SpanContext().TraceID(), s.SpanContext.TraceID(), "%s is in the trace", s.Name)
		assert.Equal(t, codes.Unset, s.Status.Code, "%s", s.Name)
	}

	send := find(t, spans, "send A")
	assert.Equal(t, map[attribute.Key]string{
		semconv.MessagingSystemKey:                "agentbus",
		semconv.MessagingOperationTypeKey:         "send",
		semconv.MessagingOperationNameKey:         "send",
		semconv.MessagingDestinationNameKey:       "A",
		semconv.MessagingMessageIDKey:             id,
		semconv.MessagingMessageBodySizeKey:       "4",
		semconv.MessagingMessageConversationIDKey: "job-1",
		otelbus.MessageTypeKey:                    "direct",
		otelbus.PriorityKey:                       "50",
		otelbus.SenderKey:                         "tester",
	}, attrs(send))
	process := attrs(find(t, spans, "process A"))
	assert.Equal(t, "process", process[semconv.MessagingOperationTypeKey])
	assert.Equal(t, "A", process[semconv.MessagingDestinationNameKey])
	assert.Equal(t, id, process[semconv.MessagingMessageIDKey])
	assert.Equal(t, "agentbus", process[semconv.MessagingSystemKey])
	req := attrs(find(t, spans, "request B"))
	assert.Equal(t, "request", req[semconv.MessagingOperationNameKey])
	assert.Equal(t, "A", req[otelbus.SenderKey])
	reply := attrs(find(t, spans, "reply A"))
	assert.Equal(t, req[otelbus.RequestIDKey], reply[otelbus.RequestIDKey], "the reply names its request")
	assert.Equal(t, "reply", reply[semconv.MessagingOperationNameKey])
}

// A publish to two subscribers has one consumer span per subscriber, both
// children of the publish's producer span.
func TestPublishToTwoSubscribers(t *testing.T) {
	x := newTraced(t, agentbus.Config{})
	got := make(chan string, 2)
	for _, name := range []string{"s1", "s2"} {
		x.spawn(t, name, func(ctx context.Context, m *agentbus.Message) error {
			got <- name
			return nil
		})
		require.NoError(t, x.bus.Subscribe("news.>", name))
	}
	ctx, root := x.tp.Tracer("test").Start(t.Context(), "test")
	_, err := x.bus.Publish(ctx, "news.today", "editor", []byte(`"extra"`))
	require.NoError(t, err)
	recv(t, got)
	recv(t, got)
	root.End()
	spans := x.settle(t, 4)
	assert.Equal(t, `test internal
  publish news.today producer
    process news.today consumer [s1]
    process news.today consumer [s2]
`, tree(spans))
	pub := attrs(find(t, spans, "publish news.today"))
	assert.Equal(t, "news.today", pub[semconv.MessagingDestinationNameKey])
	assert.Equal(t, "publish", pub[semconv.MessagingOperationNameKey])
}

// Failures of a delivery are on its consumer span: status error, the error
// recorded, and its outcome (a retry, a dead letter with its reason) as an
// event. A delivery dead-lettered without a handler has a span of its own.
func TestDeadLettersAndFailures(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		handler agentbus.HandlerFunc
		send    func(x *traced, ctx context.Context) error
		cfg     agentbus.Config
		want    string // the tree
		spans   int
		// checks of the span named failed: its status, its dead-letter
		// reason and how many retry events it has
		failed      string
		wantReason  string
		wantErr     string // in the status description
		wantRetries int
	}{
		{
			name:    "handler error",
			handler: func(context.Context, *agentbus.Message) error { return boom },
			send:    sendTo("worker"),
			want: `test internal
  send worker producer
    process worker consumer [worker]
`,
			spans: 3, failed: "process worker", wantReason: "handler_error", wantErr: "boom",
		},
		{
			name:    "handler panic",
			handler: func(context.Context, *agentbus.Message) error { panic("kaboom") },
			send:    sendTo("worker"),
			want: `test internal
  send worker producer
    process worker consumer [worker]
`,
			spans: 3, failed: "process worker", wantReason: "handler_panic", wantErr: "kaboom",
		},
		{
			name:    "retried until exhausted",
			handler: func(context.Context, *agentbus.Message) error { return boom },
			cfg:     agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 2, Backoff: time.Millisecond}},
			send: func(x *traced, ctx context.Context) error {
				_, err := x.bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient("worker").RequireAck())
				return err
			},
			want: `test internal
  send worker producer
    process worker consumer [worker]
    process worker consumer [worker]
`,
			spans: 4, failed: "process worker", wantReason: "retries_exhausted", wantErr: "boom", wantRetries: 1,
		},
		{
			name:    "no subscribers",
			handler: func(context.Context, *agentbus.Message) error { return nil },
			send: func(x *traced, ctx context.Context) error {
				_, err := x.bus.Publish(ctx, "nobody.home", "tester", []byte(`1`))
				return err
			},
			want: `test internal
  publish nobody.home producer
    dead_letter nobody.home internal
`,
			spans: 3, failed: "dead_letter nobody.home", wantReason: "no_subscribers", wantErr: "subscri",
		},
		{
			name:    "agent stopped with a message queued",
			handler: func(context.Context, *agentbus.Message) error { return nil },
			send: func(x *traced, ctx context.Context) error {
				entered, gate := make(chan struct{}), make(chan struct{})
				defer close(gate)
				_, err := x.bus.Spawn("gated", x.tr.Handler(agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
					close(entered)
					<-gate
					return nil
				})))
				if err != nil {
					return err
				}
				if err := sendTo("gated")(x, ctx); err != nil {
					return err
				}
				<-entered
				if err := sendTo("gated")(x, ctx); err != nil { // queued behind the first
					return err
				}
				stopped, cancel := context.WithCancel(ctx)
				cancel() // the stop takes effect at once; do not wait for the handler
				if err := x.bus.Stop(stopped, "gated"); !errors.Is(err, agentbus.ErrStopping) {
					return fmt.Errorf("stop: %w", err)
				}
				return nil
			},
			want: `test internal
  send gated producer
    dead_letter gated internal
  send gated producer
    process gated consumer [gated]
`,
			spans: 5, failed: "dead_letter gated", wantReason: "agent_stopped", wantErr: "stopped",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newTraced(t, tt.cfg)
			x.spawn(t, "worker", tt.handler)
			ctx, root := x.tp.Tracer("test").Start(t.Context(), "test")
			require.NoError(t, tt.send(x, ctx))
			root.End()
			spans := x.settle(t, tt.spans)
			assert.Equal(t, tt.want, tree(spans))

			var failed []tracetest.SpanStub
			for _, s := range spans {
				if s.Name == tt.failed {
					failed = append(failed, s)
				}
			}
			require.NotEmpty(t, failed)
			slices.SortFunc(failed, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
			retries := 0
			for _, s := range failed {
				assert.Equal(t, codes.Error, s.Status.Code, "%s has status error", s.Name)
				assert.Contains(t, s.Status.Description, tt.wantErr)
				if _, ok := event(s, otelbus.EventRetry); ok {
					retries++
					_, dl := event(s, otelbus.EventDeadLetter)
					assert.False(t, dl, "a retried attempt is not dead-lettered")
				}
			}
			assert.Equal(t, tt.wantRetries, retries)
			last := failed[len(failed)-1]
			e, ok := event(last, otelbus.EventDeadLetter)
			require.True(t, ok, "the dead letter is an event of %s: %v", last.Name, last.Events)
			ea := kvs(e.Attributes)
			assert.Equal(t, tt.wantReason, ea[otelbus.ReasonKey])
			assert.Contains(t, ea[otelbus.ErrorKey], tt.wantErr)
			assert.NotEmpty(t, ea[otelbus.SeqKey], "the letter's seq, to replay it by")
			assert.Equal(t, tt.wantReason, attrs(last)[semconv.ErrorTypeKey])
			if last.SpanKind == trace.SpanKindConsumer {
				_, ok := event(last, "exception")
				assert.True(t, ok, "the handler's error is recorded")
			} else {
				assert.Equal(t, "settle", attrs(last)[semconv.MessagingOperationTypeKey])
			}
		})
	}
}

func sendTo(agent string) func(x *traced, ctx context.Context) error {
	return func(x *traced, ctx context.Context) error {
		_, err := x.bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient(agent))
		return err
	}
}

// A message the bus refuses ends its producer span with status error and
// the error's code as error.type.
func TestRefusedSend(t *testing.T) {
	x := newTraced(t, agentbus.Config{MaxMessageSize: 1024})
	tests := []struct {
		name     string
		msg      *agentbus.Message
		wantErr  error
		wantType string
	}{
		{"no recipient", agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient("nobody"),
			agentbus.ErrNoRecipient, "no_recipient"},
		{"too large", agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(`"`+strings.Repeat("x", 2000)+`"`)).
			WithRecipient("nobody"), agentbus.ErrMessageTooLarge, "message_too_large"},
		{"bad subject", agentbus.NewMessage(agentbus.TypePublish, "tester", nil).WithTopic("a..b"),
			agentbus.ErrInvalidSubject, "invalid_subject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x.exp.Reset()
			_, err := x.bus.Send(t.Context(), tt.msg)
			require.ErrorIs(t, err, tt.wantErr)
			spans := x.settle(t, 1)
			s := spans[0]
			assert.Equal(t, trace.SpanKindProducer, s.SpanKind)
			assert.Equal(t, codes.Error, s.Status.Code)
			assert.Equal(t, err.Error(), s.Status.Description)
			assert.Equal(t, tt.wantType, attrs(s)[semconv.ErrorTypeKey])
			_, ok := event(s, "exception")
			assert.True(t, ok, "the error is recorded")
		})
	}
}

// A message that arrives with a trace context (from another process, say)
// continues that trace: its producer span's parent is remote.
func TestInheritedTraceParent(t *testing.T) {
	x := newTraced(t, agentbus.Config{})
	got := make(chan *agentbus.Message, 1)
	x.spawn(t, "worker", func(ctx context.Context, m *agentbus.Message) error {
		got <- m
		return nil
	})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	in := agentbus.NewMessage(agentbus.TypeDirect, "remote", nil).WithRecipient("worker").
		WithMetadata(agentbus.TraceParent, tp).WithMetadata(agentbus.TraceState, "vendor=1").
		WithMetadata("other", "kept")
	shared := in.Metadata
	_, err := x.bus.Send(context.Background(), in)
	require.NoError(t, err)
	m := recv(t, got)
	spans := x.settle(t, 2)
	assert.Equal(t, `send worker producer (remote parent)
  process worker consumer [worker]
`, tree(spans))
	send := find(t, spans, "send worker")
	assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", send.SpanContext.TraceID().String())
	assert.Equal(t, "00f067aa0ba902b7", send.Parent.SpanID().String())
	assert.Equal(t, "vendor=1", send.SpanContext.TraceState().String())
	assert.Equal(t, fmt.Sprintf("00-%s-%s-01", send.SpanContext.TraceID(), send.SpanContext.SpanID()),
		m.Metadata[agentbus.TraceParent], "the delivery carries its producer span")
	assert.Equal(t, "vendor=1", m.Metadata[agentbus.TraceState])
	assert.Equal(t, "kept", m.Metadata["other"])
	assert.Equal(t, tp, shared[agentbus.TraceParent], "the sender's map is not written")
}

// The propagator is the one given: with baggage beside trace context, the
// sender's baggage reaches the handler.
func TestPropagatorOption(t *testing.T) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	x := newTraced(t, agentbus.Config{}, otelbus.WithPropagator(prop))
	got := make(chan string, 1)
	x.spawn(t, "worker", func(ctx context.Context, m *agentbus.Message) error {
		got <- baggage.FromContext(ctx).Member("tenant").Value()
		return nil
	})
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	_, err = x.bus.Send(baggage.ContextWithBaggage(t.Context(), bag),
		agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient("worker"))
	require.NoError(t, err)
	assert.Equal(t, "acme", recv(t, got))
	x.settle(t, 2)
}

// Without the Tracer's Observer in the bus, a failed delivery's span still
// ends, with status error.
func TestHandlerWithoutObserver(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	tr, err := otelbus.New(tp)
	require.NoError(t, err)
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, bus.Shutdown(context.Background())) })
	_, err = bus.Spawn("err", tr.Handler(agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		return errors.New("boom")
	})))
	require.NoError(t, err)
	_, err = bus.Spawn("panic", tr.Handler(agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		panic("kaboom")
	})))
	require.NoError(t, err)
	for _, to := range []string{"err", "panic"} {
		_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient(to))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return len(exp.GetSpans()) == 2 }, 10*time.Second, time.Millisecond)
	for _, s := range exp.GetSpans() {
		assert.Equal(t, codes.Error, s.Status.Code, s.Name)
	}
	assert.Zero(t, tr.OpenSpans())
}

// With its table full, a producer span is ended at once, marked, and
// counted; nothing is held beyond the bound.
func TestMaxOpenSpans(t *testing.T) {
	x := newTraced(t, agentbus.Config{MailboxSize: 1}, otelbus.WithMaxOpenSpans(1))
	entered, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	x.spawn(t, "slow", func(ctx context.Context, m *agentbus.Message) error {
		once.Do(func() { close(entered) })
		<-gate
		return nil
	})
	send := func() error {
		_, err := x.bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient("slow"))
		return err
	}
	require.NoError(t, send()) // handled, held at the gate
	<-entered
	require.NoError(t, send()) // queued: the mailbox is full
	errs := make(chan error, 2)
	go func() { errs <- send() }() // waits for room, its span held open
	require.Eventually(t, func() bool { return x.tr.OpenSpans() == 1 }, 10*time.Second, time.Millisecond)
	go func() { errs <- send() }() // waits too; no room for its span
	require.Eventually(t, func() bool { return x.tr.Overflows() == 1 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, 1, x.tr.OpenSpans())
	close(gate)
	require.NoError(t, recv(t, errs))
	require.NoError(t, recv(t, errs))
	spans := x.settle(t, 8)
	overflowed := 0
	for _, s := range spans {
		if v, ok := attr(s, otelbus.OverflowKey); ok && v.AsBool() {
			overflowed++
			assert.Equal(t, trace.SpanKindProducer, s.SpanKind)
		}
	}
	assert.Equal(t, 1, overflowed)
}

// Many senders and failing handlers at once: every span started is ended
// (checked by newTraced's cleanup, under -race), and the counts add up.
func TestNoSpanLeaks(t *testing.T) {
	x := newTraced(t, agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 2, Backoff: time.Millisecond}})
	x.spawn(t, "ok", func(context.Context, *agentbus.Message) error { return nil })
	x.spawn(t, "fails", func(context.Context, *agentbus.Message) error { return errors.New("no") })
	x.spawn(t, "panics", func(context.Context, *agentbus.Message) error { panic("no") })
	x.spawn(t, "relay", func(ctx context.Context, m *agentbus.Message) error {
		_, err := x.bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "", nil).WithRecipient("ok"))
		return err
	})
	const senders, each = 4, 25
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			for j := range each {
				to := []string{"ok", "fails", "panics", "relay", "nobody"}[(i+j)%5]
				m := agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient(to)
				if j%3 == 0 {
					m.RequireAck()
				}
				_, _ = x.bus.Send(context.Background(), m)
			}
		})
	}
	wg.Wait()
	// The ledger counts a dead letter before the Tracer observes it: wait
	// for the spans too.
	require.Eventually(t, func() bool {
		return x.bus.Accounting().Idle() && x.tr.OpenSpans() == 0 && len(x.unended()) == 0
	}, 10*time.Second, time.Millisecond, "open: %v", x.unended())
	assert.Zero(t, x.tr.Overflows())
	assert.Greater(t, len(x.exp.GetSpans()), senders*each, "a producer span per send, and more")
}

func TestNewErrors(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { require.NoError(t, tp.Shutdown(context.Background())) })
	tests := []struct {
		name string
		tp   trace.TracerProvider
		opts []otelbus.Option
	}{
		{"nil provider", nil, nil},
		{"nil propagator", tp, []otelbus.Option{otelbus.WithPropagator(nil)}},
		{"zero max", tp, []otelbus.Option{otelbus.WithMaxOpenSpans(0)}},
		{"negative max", tp, []otelbus.Option{otelbus.WithMaxOpenSpans(-1)}},
		{"nil option", tp, []otelbus.Option{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := otelbus.New(tt.tp, tt.opts...)
			require.ErrorIs(t, err, otelbus.ErrInvalidOption)
			assert.Nil(t, tr)
		})
	}
	tr, err := otelbus.New(tp)
	require.NoError(t, err)
	assert.Nil(t, tr.Handler(nil), "a nil handler stays nil, for Spawn to refuse")
	var nilFunc agentbus.HandlerFunc
	assert.Nil(t, tr.Handler(nilFunc))

	mine := agentbus.ObserverFunc(func(agentbus.Outcome) {})
	cfg := agentbus.Config{Observers: append(make([]agentbus.Observer, 0, 4), mine)}
	got := tr.Config(cfg)
	assert.Len(t, got.Observers, 2, "the Tracer's Observer after the caller's")
	assert.Len(t, got.Stampers, 1)
	assert.Nil(t, cfg.Observers[:2][1], "the caller's backing array is not written")
}
