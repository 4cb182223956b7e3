// Package daemontest runs the daemon's core in a test's own process, on a
// real Unix socket, for the tests of packages that reach the bus through
// package client (the bridges).
package daemontest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/transport"
	"github.com/descartes/agentbus/transport/transporttest"
)

// Serve starts a bus configured by cfg and a daemon configured by scfg (its
// Bus set to that bus) on a fresh Unix socket, and returns the bus and the
// socket's path. When tb ends it stops the daemon, shuts the bus down and
// removes the socket, failing tb if any of them fails. It blocks only while
// it binds the socket.
func Serve(tb testing.TB, cfg agentbus.Config, scfg server.Config) (*agentbus.Bus, string) {
	tb.Helper()
	socket := filepath.Join(transporttest.ShortDir(tb), "bus.sock")
	l, err := transport.ListenUnix(socket, transport.UnixOptions{})
	require.NoError(tb, err)
	bus, _ := ServeListener(tb, cfg, scfg, l)
	return bus, socket
}

// ServeListener is Serve on a listener of the caller's: it starts the bus
// and the daemon serving l, and stops all three when tb ends, failing tb if
// any of them fails. It does not block.
func ServeListener(tb testing.TB, cfg agentbus.Config, scfg server.Config, l transport.Listener) (*agentbus.Bus, *server.Server) {
	tb.Helper()
	bus, err := agentbus.New(cfg)
	require.NoError(tb, err)
	scfg.Bus = bus
	srv, err := server.New(scfg)
	require.NoError(tb, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	tb.Cleanup(func() {
		cancel()
		require.NoError(tb, <-done)
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		require.NoError(tb, srv.Close(sctx))
		require.NoError(tb, bus.Shutdown(sctx))
		require.NoError(tb, l.Close())
	})
	return bus, srv
}
