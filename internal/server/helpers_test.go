package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/transport"
	"github.com/descartes/agentbus/transport/transporttest"
)

// shortDir returns a directory whose path fits a socket address.
var shortDir = transporttest.ShortDir

// serve starts a bus configured by cfg and a daemon configured by scfg (its
// Bus set to that bus) serving l, and stops all three when tb ends.
func serve(tb testing.TB, cfg agentbus.Config, scfg server.Config, l transport.Listener) (*agentbus.Bus, *server.Server) {
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
