package watermillbus_test

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/watermillbus"
)

// A Watermill service and a bus agent on one bus: the agent publishes, the
// service's Subscriber receives it with the message ID as UUID.
func ExampleNewLocal() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)
	broker, _ := watermillbus.NewLocal(bus, watermillbus.Config{})
	defer broker.Close()

	sub, _ := broker.Subscriber(watermillbus.SubscriberConfig{ConsumerGroup: "billing"})
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, "orders.created")
	if err != nil {
		fmt.Println(err)
		return
	}

	// A Watermill publisher and a plain agent both publish on the topic.
	pub := broker.Publisher()
	if err := pub.Publish("orders.created", message.NewMessage("order-1", []byte(`{"total":12}`))); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := bus.Publish(ctx, "orders.created", "shop", []byte(`{"total":30}`)); err != nil {
		fmt.Println(err)
		return
	}
	for range 2 {
		m := <-msgs
		fmt.Println(string(m.Payload))
		m.Ack()
	}
	// Output:
	// {"total":12}
	// {"total":30}
}
