package watermillbus_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/watermillbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newBus(t *testing.T, cfg agentbus.Config) *agentbus.Bus {
	t.Helper()
	bus, err := agentbus.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, bus.Shutdown(ctx))
	})
	return bus
}

func newBroker(t *testing.T, bus *agentbus.Bus, cfg watermillbus.Config) *watermillbus.Broker {
	t.Helper()
	b, err := watermillbus.NewLocal(bus, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

func subscriber(t *testing.T, b *watermillbus.Broker, group string) *watermillbus.Subscriber {
	t.Helper()
	s, err := b.Subscriber(watermillbus.SubscriberConfig{ConsumerGroup: group})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func next(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		require.True(t, ok, "channel closed")
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
		return nil
	}
}

// collect is an agent handler that hands messages to a channel.
type collect chan *agentbus.Message

func (c collect) Handle(ctx context.Context, m *agentbus.Message) error {
	select {
	case c <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestEnvelopeMapping(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	b := newBroker(t, bus, watermillbus.Config{Sender: "orders-svc"})
	// A plain agent of the bus hears what Watermill publishes.
	seen := make(collect, 4)
	_, err := bus.Spawn("auditor", seen)
	require.NoError(t, err)
	require.NoError(t, bus.Subscribe("orders.>", "auditor"))
	sub := subscriber(t, b, "")
	msgs, err := sub.Subscribe(t.Context(), "orders.created")
	require.NoError(t, err)

	for _, tc := range []struct {
		name        string
		payload     []byte
		wantPayload string // as bus agents see it
		encoded     bool
	}{
		{"json object", []byte(`{"id":7}`), `{"id":7}`, false},
		{"json number", []byte(`42`), `42`, false},
		{"bytes", []byte("x\x00\xff"), `"eAD/"`, true},
		{"text", []byte("plain text"), `"cGxhaW4gdGV4dA=="`, true},
		{"empty", nil, ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wm := message.NewMessage("uuid-"+strings.ReplaceAll(tc.name, " ", "-"), tc.payload)
			wm.Metadata.Set("tenant", "acme")
			require.NoError(t, b.Publisher().Publish("orders.created", wm))

			m := <-seen
			assert.Equal(t, wm.UUID, m.ID, "the UUID is the message ID")
			assert.Equal(t, agentbus.TypePublish, m.Type)
			assert.Equal(t, "orders.created", m.Topic)
			assert.Equal(t, "orders-svc", m.Sender)
			assert.True(t, m.RequiresAck)
			assert.Equal(t, "acme", m.Metadata["tenant"])
			assert.Equal(t, tc.wantPayload, string(m.Payload))
			if tc.encoded {
				assert.Equal(t, "base64", m.Metadata[watermillbus.PayloadEncodingKey])
			} else {
				assert.NotContains(t, m.Metadata, watermillbus.PayloadEncodingKey)
			}

			got := next(t, msgs)
			assert.Equal(t, wm.UUID, got.UUID)
			assert.Equal(t, string(tc.payload), string(got.Payload), "Watermill gets its bytes back")
			assert.Equal(t, message.Metadata{"tenant": "acme"}, got.Metadata)
			require.True(t, got.Ack())
		})
	}

	// What an agent publishes reaches Watermill, ID as UUID.
	id, err := bus.Publish(t.Context(), "orders.created", "auditor", []byte(`{"from":"agent"}`))
	require.NoError(t, err)
	<-seen // the auditor hears itself too
	got := next(t, msgs)
	assert.Equal(t, id, got.UUID)
	assert.JSONEq(t, `{"from":"agent"}`, string(got.Payload))
	got.Ack()
}

func TestNackRedeliversThenDeadLetters(t *testing.T) {
	bus := newBus(t, agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 3, Backoff: time.Millisecond}})
	b := newBroker(t, bus, watermillbus.Config{})
	msgs, err := subscriber(t, b, "").Subscribe(t.Context(), "jobs")
	require.NoError(t, err)
	wm := message.NewMessage("job-1", []byte(`{}`))
	require.NoError(t, b.Publisher().Publish("jobs", wm))
	for range 3 {
		got := next(t, msgs)
		assert.Equal(t, "job-1", got.UUID)
		require.True(t, got.Nack())
		select {
		case <-got.Context().Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the message's context is canceled by Nack")
		}
	}
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.RetriesExhausted})) == 1
	}, 5*time.Second, time.Millisecond, "after MaxAttempts the bus dead-letters it")
	l := bus.DeadLetters().List(deadletter.Filter{})[0]
	assert.Equal(t, "job-1", l.Message.ID)
	assert.Equal(t, 3, l.Message.Attempts)
}

func TestAbandonedGoesBack(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	b := newBroker(t, bus, watermillbus.Config{})
	require.NoError(t, subscriber(t, b, "").SubscribeInitialize("tasks"))
	require.NoError(t, b.Publisher().Publish("tasks", message.NewMessage("t1", []byte(`1`)), message.NewMessage("t2", []byte(`2`))))

	ctx, cancel := context.WithCancel(t.Context())
	first := subscriber(t, b, "")
	msgs, err := first.Subscribe(ctx, "tasks")
	require.NoError(t, err)
	got := next(t, msgs)
	assert.Equal(t, "t1", got.UUID)
	cancel() // leaves without acking
	for range msgs {
	}
	select {
	case <-got.Context().Done():
	default:
		t.Fatal("the message's context ends with the subscription")
	}

	msgs, err = subscriber(t, b, "").Subscribe(t.Context(), "tasks")
	require.NoError(t, err)
	for _, want := range []string{"t1", "t2"} {
		got := next(t, msgs)
		assert.Equal(t, want, got.UUID, "taken back, in order")
		got.Ack()
	}
	assert.Zero(t, bus.Stats().Ledger.Retried, "leaving is not a failed attempt")
}

func TestConsumerGroups(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	b := newBroker(t, bus, watermillbus.Config{})
	billing, shipping := subscriber(t, b, "billing"), subscriber(t, b, "shipping")
	bm, err := billing.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	sm, err := shipping.Subscribe(t.Context(), "orders")
	require.NoError(t, err)
	require.NoError(t, b.Publisher().Publish("orders", message.NewMessage("o1", []byte(`1`))))
	for _, ch := range []<-chan *message.Message{bm, sm} {
		got := next(t, ch)
		assert.Equal(t, "o1", got.UUID, "every group gets every message")
		got.Ack()
	}
	assert.ElementsMatch(t, []string{"watermill:billing:orders", "watermill:shipping:orders"}, bus.Subscribers("orders"))
}

func TestFullQueueDeadLetters(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	b := newBroker(t, bus, watermillbus.Config{QueueSize: 2})
	sub := subscriber(t, b, "")
	require.NoError(t, sub.SubscribeInitialize("burst"))
	pub := b.Publisher()
	require.NoError(t, pub.Publish("burst", message.NewMessage("a", []byte(`0`))))
	require.Eventually(t, func() bool { // its handler holds a, waiting for a Subscriber
		for _, a := range bus.Stats().Agents {
			if a.Name == "watermill::burst" {
				return a.Received == 1 && a.Queued == 0
			}
		}
		return false
	}, 5*time.Second, time.Millisecond)
	for _, id := range []string{"b", "c", "d", "e", "f"} {
		require.NoError(t, pub.Publish("burst", message.NewMessage(id, []byte(`0`))))
	}
	// The queue holds 2 more; the topic's fan-out never waits on a full
	// subscriber, so the rest is dead-lettered, never silently dropped.
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.MailboxFull})) == 3
	}, 5*time.Second, time.Millisecond)
	msgs, err := sub.Subscribe(t.Context(), "burst")
	require.NoError(t, err)
	for _, want := range []string{"a", "b", "c"} {
		got := next(t, msgs)
		assert.Equal(t, want, got.UUID)
		got.Ack()
	}
}

func TestErrors(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	_, err := watermillbus.NewLocal(nil, watermillbus.Config{})
	require.Error(t, err)
	_, err = watermillbus.NewRemote(nil, watermillbus.Config{})
	require.Error(t, err)
	_, err = watermillbus.NewLocal(bus, watermillbus.Config{QueueSize: -1})
	require.Error(t, err)

	b := newBroker(t, bus, watermillbus.Config{MaxQueues: 2})
	for _, g := range []string{"a:b", "has space", "$reserved", strings.Repeat("g", 65)} {
		_, err := b.Subscriber(watermillbus.SubscriberConfig{ConsumerGroup: g})
		require.ErrorIs(t, err, agentbus.ErrInvalidAgent, g)
	}
	sub := subscriber(t, b, "")
	pub := b.Publisher()
	require.ErrorIs(t, pub.Publish("bad..topic", message.NewMessage("1", nil)), agentbus.ErrInvalidSubject)
	require.ErrorIs(t, pub.Publish("a.*", message.NewMessage("1", nil)), agentbus.ErrInvalidSubject)
	_, err = sub.Subscribe(t.Context(), "bad..topic")
	require.ErrorIs(t, err, agentbus.ErrInvalidSubject)
	assert.Empty(t, bus.Agents(), "a refused subscription leaves no queue behind")

	_, err = bus.Spawn("watermill::taken", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil }))
	require.NoError(t, err)
	require.ErrorIs(t, sub.SubscribeInitialize("taken"), agentbus.ErrAgentExists)

	long := strings.Repeat("t", 250) // too long for an agent name: hashed
	require.NoError(t, sub.SubscribeInitialize(long))
	require.NoError(t, sub.SubscribeInitialize("events.>"), "patterns too")
	require.ErrorIs(t, sub.SubscribeInitialize("third"), watermillbus.ErrTooManyQueues)
	assert.Len(t, bus.Subscribers(long), 1)

	require.NoError(t, pub.Close())
	require.ErrorIs(t, pub.Publish("x", message.NewMessage("1", nil)), watermillbus.ErrClosed)
	require.NoError(t, sub.Close())
	require.NoError(t, sub.Close())
	_, err = sub.Subscribe(t.Context(), "events.>")
	require.ErrorIs(t, err, watermillbus.ErrClosed)

	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	assert.Equal(t, []string{"watermill::taken"}, bus.Agents(), "Close removed the queues")
	require.ErrorIs(t, b.Publisher().Publish("x", message.NewMessage("1", nil)), watermillbus.ErrClosed)
	s2, err := b.Subscriber(watermillbus.SubscriberConfig{})
	require.NoError(t, err)
	require.ErrorIs(t, s2.SubscribeInitialize("x"), watermillbus.ErrClosed)
}

func TestPoisonPayload(t *testing.T) {
	bus := newBus(t, agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 2, Backoff: time.Millisecond}})
	b := newBroker(t, bus, watermillbus.Config{})
	require.NoError(t, subscriber(t, b, "").SubscribeInitialize("p"))
	msgs, err := subscriber(t, b, "").Subscribe(t.Context(), "p")
	require.NoError(t, err)
	// An agent marks a payload base64 that is not: Watermill never sees
	// it; the bus dead-letters it after its attempts.
	bad := agentbus.NewMessage(agentbus.TypePublish, "", json.RawMessage(`"%%%"`)).WithTopic("p").
		WithMetadata(watermillbus.PayloadEncodingKey, "base64")
	_, err = bus.Send(t.Context(), bad)
	require.NoError(t, err)
	require.NoError(t, b.Publisher().Publish("p", message.NewMessage("good", []byte(`1`))))
	got := next(t, msgs)
	assert.Equal(t, "good", got.UUID)
	got.Ack()
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerError})) == 1
	}, 5*time.Second, time.Millisecond)
}
