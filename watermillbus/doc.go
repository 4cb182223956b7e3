// Package watermillbus is a Watermill (github.com/ThreeDotsLabs/watermill)
// Publisher and Subscriber on an agentbus bus, in process on a
// *agentbus.Bus (NewLocal) or over the daemon's socket through package
// client (NewRemote). Go services that move messages with Watermill, its
// router and its middleware then talk to the bus's agents, and the bus's
// agents to them.
//
//	broker, err := watermillbus.NewLocal(bus, watermillbus.Config{})
//	pub := broker.Publisher()
//	sub, err := broker.Subscriber(watermillbus.SubscriberConfig{ConsumerGroup: "billing"})
//	msgs, err := sub.Subscribe(ctx, "orders.created")
//
// # The mapping
//
// A Watermill message is a TypePublish message that requires
// acknowledgement: its UUID is the message ID, its metadata the envelope's
// metadata, and its payload the envelope's payload when it is JSON (else a
// base64 JSON string, see PayloadEncodingKey). Ack completes the delivery;
// Nack fails it, and the bus redelivers it after its retry backoff until its
// attempts run out, then dead-letters it as retries_exhausted.
//
// # Queues
//
// A Subscriber reads a queue: a bus agent per topic and consumer group,
// subscribed to the topic, that holds what is published until a Subscriber
// takes it, one message at a time. Queues outlive Subscribers and last as
// long as the Broker. See docs/bridges.md for the Watermill test suite's
// features the bus has, and why.
package watermillbus
