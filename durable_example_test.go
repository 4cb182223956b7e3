package agentbus_test

import (
	"context"
	"fmt"

	"github.com/descartes/agentbus"
)

// A durable agent keeps its messages while no handler is attached; the
// next Spawn of its name with WithDurable gets them. With a store from
// store.Open in Config.Durability, they also outlive the process.
func ExampleWithDurable() {
	ctx := context.Background()
	bus, err := agentbus.New(agentbus.Config{}) // durable agents' records in memory
	if err != nil {
		panic(err)
	}
	defer bus.Shutdown(ctx)
	got := make(chan *agentbus.Message)
	handler := agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		got <- m
		return nil
	})
	if _, err := bus.Spawn("coder", handler, agentbus.WithDurable()); err != nil {
		panic(err)
	}
	_ = bus.Detach("coder", nil) // as when its client's connection drops
	for _, task := range []string{`"lint"`, `"build"`} {
		m := agentbus.NewMessage(agentbus.TypeDirect, "planner", []byte(task)).WithRecipient("coder")
		if _, err := bus.Send(ctx, m); err != nil { // returns once committed
			panic(err)
		}
	}
	if _, err := bus.Spawn("coder", handler, agentbus.WithDurable()); err != nil { // attaches
		panic(err)
	}
	for range 2 {
		m := <-got
		fmt.Println(string(m.Payload), m.Redelivered)
	}
	// Output:
	// "lint" false
	// "build" false
}
