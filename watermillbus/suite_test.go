package watermillbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/daemontest"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/watermillbus"
)

// features are the Watermill features the bus has; see docs/bridges.md for
// why each is on or off.
var features = tests.Features{
	ConsumerGroups:                      true,
	ExactlyOnceDelivery:                 false,
	GuaranteedOrder:                     true,
	GuaranteedOrderWithSingleSubscriber: false,
	Persistent:                          true,
	RequireSingleInstance:               false,
	NewSubscriberReceivesOldMessages:    false,
	ContextPreserved:                    false,
}

// suiteBusConfig sizes the bus for the suite: its tests run in parallel on
// one bus and publish thousands of messages before anyone reads them, and
// TestContinueAfterErrors nacks the same messages many times.
func suiteBusConfig() agentbus.Config {
	return agentbus.Config{
		MailboxSize:  20000,
		Backpressure: agentbus.BackpressureConfig{MaxPending: 200000},
		Retry:        agentbus.RetryConfig{MaxAttempts: 1000, Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
	}
}

func constructors(b *watermillbus.Broker) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	group := func(t *testing.T, g string) (message.Publisher, message.Subscriber) {
		sub, err := b.Subscriber(watermillbus.SubscriberConfig{ConsumerGroup: g})
		require.NoError(t, err)
		return b.Publisher(), sub
	}
	return func(t *testing.T) (message.Publisher, message.Subscriber) { return group(t, "") }, group
}

func TestPubSubLocal(t *testing.T) {
	bus, err := agentbus.New(suiteBusConfig())
	require.NoError(t, err)
	b, err := watermillbus.NewLocal(bus, watermillbus.Config{})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, b.Close())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, bus.Shutdown(ctx))
	})
	pubsub, group := constructors(b)
	tests.TestPubSub(t, features, pubsub, group)
}

func TestPubSubRemote(t *testing.T) {
	_, socket := daemontest.Serve(t, suiteBusConfig(), server.Config{MaxAgents: 1024})
	c, err := client.Dial(context.Background(), socket, client.Options{})
	require.NoError(t, err)
	b, err := watermillbus.NewRemote(c, watermillbus.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { // before the daemon's own cleanup
		require.NoError(t, b.Close())
		require.NoError(t, c.Close())
	})
	pubsub, group := constructors(b)
	tests.TestPubSub(t, features, pubsub, group)
}
