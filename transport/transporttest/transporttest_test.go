package transporttest_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/transport"
	"github.com/descartes/agentbus/transport/transporttest"
)

// The suite checks itself against the in-memory transport, the simplest
// implementation (package transport runs it against every one).
func TestSuiteOnMemory(t *testing.T) {
	newListener := func(t *testing.T) (*transport.MemoryListener, func(context.Context) (transport.Conn, error)) {
		ln := transport.NewMemoryListener(transport.MemoryOptions{MaxFrameSize: transporttest.MaxFrameSize, Buffer: 4})
		t.Cleanup(func() { require.NoError(t, ln.Close()) })
		return ln, ln.Dial
	}
	transporttest.Run(t, func(t *testing.T) (transport.Conn, transport.Conn) {
		ln, dial := newListener(t)
		client, err := dial(context.Background())
		require.NoError(t, err)
		server, err := ln.Accept(context.Background())
		require.NoError(t, err)
		return client, server
	})
	transporttest.RunListener(t, func(t *testing.T) (transport.Listener, func(context.Context) (transport.Conn, error)) {
		return newListener(t)
	})
}
