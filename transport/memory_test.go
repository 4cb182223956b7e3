package transport_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/transport"
	"github.com/descartes/agentbus/transport/transporttest"
)

func newMemoryListener(t *testing.T, opts transport.MemoryOptions) *transport.MemoryListener {
	t.Helper()
	ln := transport.NewMemoryListener(opts)
	t.Cleanup(func() { require.NoError(t, ln.Close()) })
	return ln
}

func newMemoryPair(t *testing.T, opts transport.MemoryOptions) (client, server transport.Conn) {
	t.Helper()
	ln := newMemoryListener(t, opts)
	client, err := ln.Dial(context.Background())
	require.NoError(t, err)
	server, err = ln.Accept(context.Background())
	require.NoError(t, err)
	return client, server
}

func TestMemoryConformance(t *testing.T) {
	for _, buffer := range []int{1, 0} {
		opts := transport.MemoryOptions{Buffer: buffer, MaxFrameSize: transporttest.MaxFrameSize}
		t.Run(map[int]string{0: "default buffer", 1: "buffer 1"}[buffer], func(t *testing.T) {
			transporttest.Run(t, func(t *testing.T) (transport.Conn, transport.Conn) {
				return newMemoryPair(t, opts)
			})
		})
	}
}

func TestMemoryListenerConformance(t *testing.T) {
	transporttest.RunListener(t, func(t *testing.T) (transport.Listener, func(context.Context) (transport.Conn, error)) {
		ln := newMemoryListener(t, transport.MemoryOptions{MaxFrameSize: transporttest.MaxFrameSize})
		return ln, ln.Dial
	})
}

func TestMemoryDefaults(t *testing.T) {
	ln := newMemoryListener(t, transport.MemoryOptions{})
	require.Equal(t, "memory", ln.Addr())
	client, err := ln.Dial(context.Background())
	require.NoError(t, err)
	defer client.Close()

	require.ErrorIs(t, client.Send(context.Background(), make([]byte, transport.DefaultMaxFrameSize+1)), transport.ErrFrameTooLarge)
	// The queue holds DefaultMemoryBuffer frames, then Send blocks.
	for i := range transport.DefaultMemoryBuffer {
		require.NoError(t, client.Send(context.Background(), []byte("{}")), "frame %d", i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, client.Send(ctx, []byte("{}")), context.DeadlineExceeded)
}

func TestMemoryListenerClose(t *testing.T) {
	ln := transport.NewMemoryListener(transport.MemoryOptions{})
	// Dialled but never accepted: closed with the listener.
	client, err := ln.Dial(context.Background())
	require.NoError(t, err)
	defer client.Close()
	require.NoError(t, ln.Close())
	_, err = client.Recv(context.Background())
	require.ErrorIs(t, err, transport.ErrPeerClosed)

	_, err = ln.Dial(context.Background())
	require.ErrorIs(t, err, transport.ErrClosed)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = transport.NewMemoryListener(transport.MemoryOptions{}).Dial(ctx)
	require.ErrorIs(t, err, context.Canceled)
}

func TestMemoryBuffered(t *testing.T) {
	client, server := newMemoryPair(t, transport.MemoryOptions{})
	ctx := context.Background()
	require.False(t, transport.Buffered(server))
	require.NoError(t, client.Send(ctx, []byte(`{"n":1}`)))
	require.NoError(t, client.Send(ctx, []byte(`{"n":2}`)))
	_, err := server.Recv(ctx)
	require.NoError(t, err)
	require.True(t, transport.Buffered(server))
	_, err = server.Recv(ctx)
	require.NoError(t, err)
	require.False(t, transport.Buffered(server))
}
