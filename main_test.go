package agentbus_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/bustest"
)

func TestMain(m *testing.M) {
	// A process that ran a cluster node keeps its data link's gRPC listener
	// until it exits (see cluster's hub: protoactor's remote cannot be
	// started twice in one process without a data race).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("google.golang.org/grpc.(*Server).Serve"))
}

// newBus returns a bus that is shut down (and checked) when the test ends.
func newBus(t testing.TB, cfg agentbus.Config) *agentbus.Bus {
	t.Helper()
	return bustest.New(t, cfg)
}

// recorder is a handler that passes every message it handles to a channel.
type recorder struct{ got chan *agentbus.Message }

func newRecorder(n int) *recorder { return &recorder{got: make(chan *agentbus.Message, n)} }

func (r *recorder) Handle(_ context.Context, m *agentbus.Message) error {
	r.got <- m
	return nil
}

// next returns the next handled message or fails the test after a while.
func (r *recorder) next(t testing.TB) *agentbus.Message {
	t.Helper()
	select {
	case m := <-r.got:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message handled within 10s")
		return nil
	}
}

// newGate returns a handler that holds its first message until its Open is
// closed, so a test can queue messages behind it.
func newGate(inner agentbus.Handler) *bustest.Gate { return bustest.NewGate(inner) }

func direct(to string, payload string) *agentbus.Message {
	return agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(payload)).WithRecipient(to)
}

// recv returns the next value from ch or fails the test after a while.
func recv[T any](t testing.TB, ch <-chan T) T {
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

func discardLogger(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }
