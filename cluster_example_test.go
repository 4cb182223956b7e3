package agentbus_test

import (
	"context"
	"fmt"
	"time"

	"github.com/descartes/agentbus"
)

// Two buses form a cluster (here in one process, on 127.0.0.1 and free
// ports): an agent spawned on one is reached by name from the other.
func ExampleBus_Cluster() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := agentbus.New(agentbus.Config{Cluster: &agentbus.ClusterConfig{Name: "example", NodeName: "a"}})
	if err != nil {
		panic(err)
	}
	defer a.Shutdown(ctx)
	b, err := agentbus.New(agentbus.Config{Cluster: &agentbus.ClusterConfig{Name: "example", NodeName: "b",
		Seeds: []string{a.Cluster().Self().Addr}}})
	if err != nil {
		panic(err)
	}
	defer b.Shutdown(ctx)

	_, err = b.Spawn("echo", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := b.Reply(ctx, m, m.Payload)
		return err
	}))
	if err != nil {
		panic(err)
	}
	for { // the name reaches a's directory within a moment
		if m, ok := a.Cluster().Where("echo"); ok {
			fmt.Println("echo is on", m.Name)
			break
		}
		select {
		case <-ctx.Done():
			panic(ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	resp, err := a.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "main", []byte(`"hello"`)).WithRecipient("echo"))
	if err != nil {
		panic(err)
	}
	fmt.Println("a got", string(resp.Payload))
	// Output:
	// echo is on b
	// a got "hello"
}
