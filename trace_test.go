package agentbus_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
)

// The trace context of a message follows what its handler sends, publishes,
// requests and replies.
func TestTraceContextPropagates(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	watcher := newRecorder(4)
	_, err := bus.Spawn("watcher", watcher)
	require.NoError(t, err)
	require.NoError(t, bus.Subscribe("progress", "watcher"))
	_, err = bus.Spawn("tool", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Reply(ctx, m, []byte(`"done"`))
		return err
	}))
	require.NoError(t, err)
	replies := make(chan *agentbus.Message, 1)
	_, err = bus.Spawn("planner", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		if _, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypePublish, "", []byte(`"started"`)).WithTopic("progress")); err != nil {
			return err
		}
		resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", nil).WithRecipient("tool"))
		if err != nil {
			return err
		}
		replies <- resp
		return nil
	}))
	require.NoError(t, err)

	in := direct("planner", `"go"`).WithMetadata(agentbus.TraceParent, tp).WithMetadata(agentbus.TraceState, "vendor=1")
	_, err = bus.Send(t.Context(), in)
	require.NoError(t, err)
	published := watcher.next(t)
	assert.Equal(t, tp, published.Metadata[agentbus.TraceParent])
	assert.Equal(t, "vendor=1", published.Metadata[agentbus.TraceState])
	resp := recv(t, replies)
	assert.Equal(t, tp, resp.Metadata[agentbus.TraceParent], "request and response stay in the trace")

	// A message with its own trace context keeps it.
	own := "00-11111111111111111111111111111111-2222222222222222-01"
	m := agentbus.NewMessage(agentbus.TypeDirect, "x", nil).WithMetadata(agentbus.TraceParent, own)
	m.InheritTrace(in)
	assert.Equal(t, own, m.Metadata[agentbus.TraceParent])
}
