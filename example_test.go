package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// An agent that answers requests, and a caller that asks it.
func Example() {
	ctx := context.Background()
	bus, err := agentbus.New(agentbus.Config{})
	if err != nil {
		panic(err)
	}
	defer bus.Shutdown(ctx)

	_, err = bus.Spawn("greeter", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		var who string
		if err := m.DecodePayload(&who); err != nil {
			return err
		}
		_, err := bus.Reply(ctx, m, fmt.Appendf(nil, "%q", "hello, "+who))
		return err
	}))
	if err != nil {
		panic(err)
	}

	req := agentbus.NewMessage(agentbus.TypeRequest, "main", []byte(`"planner"`)).WithRecipient("greeter")
	resp, err := bus.Request(ctx, req)
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Sender, "says", string(resp.Payload))
	// Output: greeter says "hello, planner"
}

// Messages queued for a busy agent are delivered highest priority first.
func ExampleBus_Send() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)

	busy, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	_, _ = bus.Spawn("worker", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		switch string(m.Payload) {
		case `"warm-up"`:
			close(busy)
			<-release // hold the agent while the others queue up
		case `"last"`:
			close(done)
		default:
			fmt.Println(string(m.Payload), m.Priority)
		}
		return nil
	}))
	send := func(body string, prio uint8) {
		msg := agentbus.NewMessage(agentbus.TypeDirect, "main", []byte(body)).WithRecipient("worker").WithPriority(prio)
		if _, err := bus.Send(ctx, msg); err != nil {
			fmt.Println(err)
		}
	}
	send(`"warm-up"`, 50)
	<-busy
	send(`"routine"`, 10)
	send(`"urgent"`, 95)
	send(`"normal"`, 50)
	send(`"last"`, 0)
	close(release)
	<-done
	// Output:
	// "urgent" 95
	// "normal" 50
	// "routine" 10
}

// A request whose handler fails returns the failure at once, and the
// message is kept in the dead-letter queue with its reason.
func ExampleBus_Request() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{RequestTimeout: 5 * time.Second})
	defer bus.Shutdown(ctx)

	_, _ = bus.Spawn("flaky", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		return errors.New("model quota exceeded")
	}))
	_, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "main", nil).WithRecipient("flaky"))
	fmt.Println(errors.Unwrap(err)) // the cause, without the request ID
	for _, l := range bus.DeadLetters().List(deadletter.Filter{}) {
		fmt.Println(l.Reason, l.Agent)
	}
	// Output:
	// agentbus: handler of "flaky" failed: model quota exceeded
	// handler_error flaky
}
