package watermillbus_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/daemontest"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/watermillbus"
)

// BenchmarkPubSub measures one message through Publish, the subscription's
// channel and Ack, one at a time, against Watermill's own in-memory
// GoChannel measured in the same run: in process on a Bus, and over the
// daemon's socket.
func BenchmarkPubSub(b *testing.B) {
	for _, impl := range []struct {
		name string
		new  func(b *testing.B) (message.Publisher, message.Subscriber)
	}{
		{"gochannel", func(b *testing.B) (message.Publisher, message.Subscriber) {
			g := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
			b.Cleanup(func() { require.NoError(b, g.Close()) })
			return g, g
		}},
		{"local", func(b *testing.B) (message.Publisher, message.Subscriber) {
			bus, err := agentbus.New(agentbus.Config{})
			require.NoError(b, err)
			b.Cleanup(func() { require.NoError(b, bus.Shutdown(context.Background())) })
			br, err := watermillbus.NewLocal(bus, watermillbus.Config{})
			return brokerPubSub(b, br, err)
		}},
		{"remote", func(b *testing.B) (message.Publisher, message.Subscriber) {
			_, socket := daemontest.Serve(b, agentbus.Config{}, server.Config{})
			c, err := client.Dial(context.Background(), socket, client.Options{})
			require.NoError(b, err)
			b.Cleanup(func() { require.NoError(b, c.Close()) })
			br, err := watermillbus.NewRemote(c, watermillbus.Config{})
			return brokerPubSub(b, br, err)
		}},
	} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			pub, sub := impl.new(b)
			msgs, err := sub.Subscribe(b.Context(), "bench")
			require.NoError(b, err)
			payload := []byte(`{"n":1}`)
			b.ReportAllocs()
			for b.Loop() {
				if err := pub.Publish("bench", message.NewMessage(watermill.NewUUID(), payload)); err != nil {
					b.Fatal(err)
				}
				(<-msgs).Ack()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func brokerPubSub(b *testing.B, br *watermillbus.Broker, err error) (message.Publisher, message.Subscriber) {
	require.NoError(b, err)
	sub, err := br.Subscriber(watermillbus.SubscriberConfig{})
	require.NoError(b, err)
	b.Cleanup(func() {
		require.NoError(b, sub.Close())
		require.NoError(b, br.Close())
	})
	return br.Publisher(), sub
}
