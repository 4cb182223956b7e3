// Package bustest holds the helpers that tests of several packages need
// around an agentbus.Bus: a bus shut down when the test ends, a wait until
// it is idle, and handlers that hold or take messages.
package bustest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
)

// New returns a bus configured by cfg that is shut down, and checked to shut
// down cleanly within 10 s, when the test ends.
func New(t testing.TB, cfg agentbus.Config) *agentbus.Bus {
	t.Helper()
	b, err := agentbus.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, b.Shutdown(ctx))
	})
	return b
}

// Quiet waits, up to 10 s, until bus is idle (nothing queued, handled or
// scheduled) and its ledger balances, and fails the test otherwise.
func Quiet(t testing.TB, bus *agentbus.Bus) {
	t.Helper()
	require.Eventually(t, func() bool {
		a := bus.Accounting()
		return a.Idle() && a.Balanced()
	}, 10*time.Second, time.Millisecond, "the bus did not settle: %+v", bus.Accounting())
}

// Sink is a handler that takes every message.
func Sink(context.Context, *agentbus.Message) error { return nil }

// Gate is a handler that blocks inside its first message until Open is
// closed, so that a test can queue messages behind it; Entered is closed
// once it holds that message. Later messages go to Inner.
type Gate struct {
	Entered chan struct{}
	Open    chan struct{}
	Inner   agentbus.Handler
	first   bool
}

// NewGate returns a closed gate in front of inner.
func NewGate(inner agentbus.Handler) *Gate {
	return &Gate{Entered: make(chan struct{}), Open: make(chan struct{}), Inner: inner, first: true}
}

// Handle holds the first message until Open is closed; it passes the others
// to Inner. Only the agent's goroutine calls it.
func (g *Gate) Handle(ctx context.Context, m *agentbus.Message) error {
	if g.first {
		g.first = false
		close(g.Entered)
		<-g.Open
		return nil
	}
	return g.Inner.Handle(ctx, m)
}
