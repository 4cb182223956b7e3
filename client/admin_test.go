package client_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/transport"
)

func TestDeadLetterPurgeAndSubscribers(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	c := d.client(t, client.Options{})
	ctx := ctx5(t)
	n, err := c.CountSubscribers(ctx, "void.x")
	require.NoError(t, err)
	assert.Zero(t, n)
	id, err := c.Publish(ctx, "void.x", []byte(`{"n":1}`))
	require.NoError(t, err)
	var letters []client.Letter
	require.Eventually(t, func() bool {
		letters, err = c.DeadLetters(ctx, client.LetterFilter{})
		return err == nil && len(letters) == 1
	}, 5*time.Second, time.Millisecond)

	l, err := c.DeadLetter(ctx, letters[0].Seq)
	require.NoError(t, err)
	assert.Equal(t, id, l.Message.ID)
	assert.Equal(t, "no_subscribers", l.Reason)
	_, err = c.DeadLetter(ctx, letters[0].Seq+100)
	require.ErrorIs(t, err, agentbus.ErrUnknownLetter)

	purged, err := c.PurgeDeadLetters(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, purged)
	_, err = c.DeadLetter(ctx, letters[0].Seq)
	require.ErrorIs(t, err, agentbus.ErrUnknownLetter)

	require.NoError(t, c.Register(ctx, "reader", make(inbox, 1)))
	require.NoError(t, c.Subscribe(ctx, "reader", "void.>"))
	n, err = c.CountSubscribers(ctx, "void.x")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// OnDisconnect and OnReconnect report each drop and each reconnect, with
// what could not be restored.
func TestReconnectCallbacks(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	ctx := ctx5(t)
	downs := make(chan error, 4)
	ups := make(chan error, 4)
	var blocked atomic.Bool
	gate := make(chan struct{})
	c, err := client.Dial(ctx, "", client.Options{
		Dial: func(ctx context.Context) (transport.Conn, error) {
			if blocked.Load() {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return d.dial(ctx)
		},
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		OnDisconnect: func(err error) { downs <- err },
		OnReconnect:  func(err error) { ups <- err },
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	require.NoError(t, c.Register(ctx, "w", make(inbox, 1)))
	require.NoError(t, c.Subscribe(ctx, "w", "news.>"))

	d.cut()
	require.Error(t, recv(t, downs), "why the connection dropped")
	require.NoError(t, recv(t, ups), "all restored")
	require.Eventually(t, func() bool { return len(d.bus.Subscribers("news.x")) == 1 }, 5*time.Second, time.Millisecond)

	// While it is away, another client takes the name: the reconnect
	// reports it.
	blocked.Store(true)
	d.cut()
	recv(t, downs)
	require.Eventually(t, func() bool { _, ok := d.bus.PID("w"); return !ok }, 5*time.Second, time.Millisecond)
	other := d.client(t, client.Options{})
	require.NoError(t, other.Register(ctx, "w", make(inbox, 1)))
	close(gate)
	require.ErrorIs(t, recv(t, ups), agentbus.ErrAgentExists)
}

func recv(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no callback")
		return nil
	}
}
