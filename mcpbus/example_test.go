package mcpbus_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/mcpbus"
	"github.com/descartes/agentbus/transport"
)

// An MCP server acting as the agent "assistant" on a daemon's bus, and an
// MCP client (here in memory; usually an AI application running
// `agentbus mcp --as assistant`) that sends a message and reads its inbox.
func Example() {
	ctx := context.Background()
	// A daemon, served in memory for the example; usually `agentbus serve`.
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)
	srv, _ := server.New(server.Config{Bus: bus})
	l := transport.NewMemoryListener(transport.MemoryOptions{})
	defer l.Close()
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, l) }()
	defer func() { stop(); <-served; _ = srv.Close(ctx) }()

	c, err := client.Dial(ctx, "", client.Options{Dial: l.Dial})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	s, err := mcpbus.New(ctx, c, mcpbus.Options{Agent: "assistant"})
	if err != nil {
		fmt.Println(err)
		return
	}
	st, ct := mcp.NewInMemoryTransports()
	ss, _ := s.MCP().Connect(ctx, st, nil)
	defer ss.Wait()
	cs, _ := mcp.NewClient(&mcp.Implementation{Name: "example"}, nil).Connect(ctx, ct, nil)
	defer cs.Close()

	for _, call := range []*mcp.CallToolParams{
		{Name: "send", Arguments: map[string]any{"to": "assistant", "payload": map[string]any{"note": "hello"}}},
		{Name: "inbox", Arguments: map[string]any{"max": 1, "wait_ms": 1000}},
		{Name: "send", Arguments: map[string]any{"to": "nobody"}},
	} {
		r, err := cs.CallTool(ctx, call)
		if err != nil {
			fmt.Println(err)
			return
		}
		if call.Name == "send" && !r.IsError {
			continue // its message_id differs every run
		}
		var out struct {
			Messages []struct {
				Sender  string          `json:"sender"`
				Payload json.RawMessage `json:"payload"`
			} `json:"messages"`
			Code string `json:"code"`
		}
		_ = json.Unmarshal([]byte(r.Content[0].(*mcp.TextContent).Text), &out)
		if r.IsError {
			fmt.Println(call.Name, "failed:", out.Code)
			continue
		}
		for _, m := range out.Messages {
			fmt.Println(call.Name, "got", string(m.Payload), "from", m.Sender)
		}
	}
	// Output:
	// inbox got {"note":"hello"} from assistant
	// send failed: no_recipient
}
