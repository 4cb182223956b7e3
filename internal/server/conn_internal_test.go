package server

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/transport"
)

// A delivery the writer cannot encode (no message the bus accepted is
// like that, so the test makes one up and hands it to the agent's handler
// itself) fails as a handler failure does: a request at once, with the
// error; another delivery is dead-lettered as handler_error. Either way
// its place in the window comes back.
func TestDeliveryThatDoesNotEncode(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	srv, err := New(Config{Bus: bus})
	require.NoError(t, err)
	l := transport.NewMemoryListener(transport.MemoryOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	defer func() {
		cancel()
		require.NoError(t, <-served)
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		require.NoError(t, srv.Close(sctx))
		require.NoError(t, bus.Shutdown(sctx))
		require.NoError(t, l.Close())
	}()
	client, err := l.Dial(ctx)
	require.NoError(t, err)
	defer client.Close()
	for _, f := range []string{`{"op":"hello","id":"h","version":1}`, `{"op":"register","id":"r","agent":"w","window":2}`} {
		require.NoError(t, client.Send(ctx, []byte(f)))
		data, err := client.Recv(ctx)
		require.NoError(t, err)
		fr, err := protocol.Decode(data)
		require.NoError(t, err)
		require.NotEqual(t, protocol.OpError, fr.Op, fr.Error)
	}
	srv.mu.Lock()
	var c *conn
	for x := range srv.conns {
		c = x
	}
	srv.mu.Unlock()
	require.NotNil(t, c)
	c.mu.Lock()
	r := c.agents["w"]
	c.mu.Unlock()
	require.NotNil(t, r)

	req := agentbus.NewMessage(agentbus.TypeRequest, "a", []byte(`{"not json`))
	req.Recipient, req.RequestID = "w", "q1"
	err = c.deliver("w", r, req)
	require.ErrorIs(t, err, agentbus.ErrInvalidMessage)
	assert.Contains(t, err.Error(), `deliver to "w"`)

	plain := agentbus.NewMessage(agentbus.TypeDirect, "a", []byte(`{"not json`))
	plain.Recipient = "w"
	require.NoError(t, c.deliver("w", r, plain)) // queued: the writer finds out
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerError, Agent: "w"})) == 1
	}, 5*time.Second, time.Millisecond)
	l0 := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerError, Agent: "w"})[0]
	assert.Equal(t, plain.ID, l0.Message.ID)

	// Nothing is listed, and of the window only the place the handler
	// holds for the next delivery is taken.
	c.mu.Lock()
	assert.Empty(t, r.inflight)
	assert.Nil(t, r.wait)
	c.mu.Unlock()
	assert.Equal(t, 1, len(r.slots))
	assert.True(t, r.held)

	// The connection goes on: nothing was written for either.
	require.NoError(t, client.Send(ctx, []byte(`{"op":"ping","id":"p"}`)))
	data, err := client.Recv(ctx)
	require.NoError(t, err)
	fr, err := protocol.Decode(data)
	require.NoError(t, err)
	assert.Equal(t, protocol.OpPong, fr.Op)
}
