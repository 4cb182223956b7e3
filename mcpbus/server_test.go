package mcpbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/daemontest"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/mcpbus"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// daemon is a bus served on a real Unix socket in this process.
type daemon struct {
	bus    *agentbus.Bus
	socket string
}

func newDaemon(t *testing.T, cfg agentbus.Config, scfg server.Config) *daemon {
	t.Helper()
	bus, socket := daemontest.Serve(t, cfg, scfg)
	return &daemon{bus: bus, socket: socket}
}

func (d *daemon) client(t *testing.T, opts client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(ctx5(t), d.socket, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// agent starts an MCP server acting as name, on a client of its own, and
// returns an MCP client session connected to it in memory.
func (d *daemon) agent(t *testing.T, name string, opts client.Options) *session {
	t.Helper()
	c := d.client(t, opts)
	s, err := mcpbus.New(ctx5(t), c, mcpbus.Options{Agent: name})
	require.NoError(t, err)
	st, ct := mcp.NewInMemoryTransports()
	ss, err := s.MCP().Connect(ctx5(t), st, nil)
	require.NoError(t, err)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil).Connect(ctx5(t), ct, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, cs.Close())
		_ = ss.Wait()
	})
	return &session{t: t, cs: cs}
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// session is an MCP client session with helpers that call the bus's tools.
type session struct {
	t  *testing.T
	cs *mcp.ClientSession
}

// call calls tool with args and returns its result, failing the test on a
// protocol error (not on a tool error).
func (s *session) call(tool string, args any) *mcp.CallToolResult {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return call(ctx, s.t, s.cs, tool, args)
}

func call(ctx context.Context, t *testing.T, cs *mcp.ClientSession, tool string, args any) *mcp.CallToolResult {
	t.Helper()
	r, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	require.NoError(t, err, tool)
	return r
}

// callAsync calls tool in a goroutine of its own and returns the channel its
// result comes on; a protocol error comes as a tool error result.
func (s *session) callAsync(tool string, args any) <-chan *mcp.CallToolResult {
	ch := make(chan *mcp.CallToolResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		r, err := s.cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
		if err != nil {
			r = &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: err.Error()}}}
		}
		ch <- r
	}()
	return ch
}

// await returns the result of a callAsync.
func await(t *testing.T, ch <-chan *mcp.CallToolResult) *mcp.CallToolResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no result")
		return nil
	}
}

// ok calls tool and decodes its structured result into out (if not nil).
func (s *session) ok(tool string, args, out any) {
	s.t.Helper()
	okResult(s.t, s.call(tool, args), tool, out)
}

func okResult(t *testing.T, r *mcp.CallToolResult, tool string, out any) {
	t.Helper()
	require.False(t, r.IsError, "%s: %s", tool, text(r))
	data, err := json.Marshal(r.StructuredContent)
	require.NoError(t, err)
	assert.JSONEq(t, string(data), text(r), "the text content is the structured result")
	if out != nil {
		require.NoError(t, json.Unmarshal(data, out))
	}
}

// fails calls tool and returns the code of the tool error it must give.
func (s *session) fails(tool string, args any) mcpbus.ToolError {
	s.t.Helper()
	return toolError(s.t, s.call(tool, args), tool)
}

func toolError(t *testing.T, r *mcp.CallToolResult, tool string) mcpbus.ToolError {
	t.Helper()
	require.True(t, r.IsError, "%s should fail: %s", tool, text(r))
	var e mcpbus.ToolError
	require.NoError(t, json.Unmarshal([]byte(text(r)), &e), text(r))
	require.NotEmpty(t, e.Error)
	return e
}

func text(r *mcp.CallToolResult) string {
	if len(r.Content) == 0 {
		return ""
	}
	if tc, ok := r.Content[0].(*mcp.TextContent); ok {
		return tc.Text
	}
	return fmt.Sprintf("%T", r.Content[0])
}

type message struct {
	ID          string            `json:"id"`
	Type        string            `json:"type"`
	Sender      string            `json:"sender"`
	Recipient   string            `json:"recipient"`
	Topic       string            `json:"topic"`
	RequestID   string            `json:"request_id"`
	Payload     json.RawMessage   `json:"payload"`
	Priority    int               `json:"priority"`
	RequiresAck bool              `json:"requires_ack"`
	Metadata    map[string]string `json:"metadata"`
}

type inboxResult struct {
	Messages []message `json:"messages"`
}

// inbox takes what is waiting for the session's agent, waiting up to wait
// for the first.
func (s *session) inbox(max int, wait time.Duration) []message {
	s.t.Helper()
	var r inboxResult
	s.ok("inbox", map[string]any{"max": max, "wait_ms": wait.Milliseconds()}, &r)
	return r.Messages
}

// inboxN takes messages until it has n of them.
func (s *session) inboxN(n int) []message {
	s.t.Helper()
	var all []message
	deadline := time.Now().Add(10 * time.Second)
	for len(all) < n && time.Now().Before(deadline) {
		all = append(all, s.inbox(n-len(all), 2*time.Second)...)
	}
	require.Len(s.t, all, n)
	return all
}

func TestRequestReplyAndPublish(t *testing.T) {
	d := newDaemon(t, agentbus.Config{}, server.Config{})
	alice, bob := d.agent(t, "alice", client.Options{}), d.agent(t, "bob", client.Options{})

	// alice asks; bob takes the request from his inbox and replies.
	type response struct {
		Response message `json:"response"`
	}
	answered := alice.callAsync("request", map[string]any{
		"to": "bob", "payload": map[string]any{"task": "lint"}, "priority": 80, "timeout_ms": 9000})
	req := bob.inboxN(1)[0]
	assert.Equal(t, "request", req.Type)
	assert.Equal(t, "alice", req.Sender)
	assert.Equal(t, 80, req.Priority)
	assert.JSONEq(t, `{"task":"lint"}`, string(req.Payload))
	bob.ok("reply", map[string]any{"request_id": req.RequestID, "payload": map[string]any{"ok": true}}, nil)
	var resp response
	okResult(t, await(t, answered), "request", &resp)
	assert.Equal(t, "response", resp.Response.Type)
	assert.Equal(t, "bob", resp.Response.Sender)
	assert.JSONEq(t, `{"ok":true}`, string(resp.Response.Payload))
	assert.Equal(t, "not_pending", bob.fails("reply", map[string]any{"request_id": req.RequestID}).Code,
		"a request is answered once")

	// bob subscribes; alice publishes; bob gets it.
	bob.ok("subscribe", map[string]any{"topic": "builds.*"}, nil)
	var sent struct {
		MessageID string `json:"message_id"`
	}
	alice.ok("publish", map[string]any{"topic": "builds.api", "payload": 42, "metadata": map[string]string{"k": "v"}}, &sent)
	pub := bob.inboxN(1)[0]
	assert.Equal(t, sent.MessageID, pub.ID)
	assert.Equal(t, "publish", pub.Type)
	assert.Equal(t, "builds.api", pub.Topic)
	assert.Equal(t, "v", pub.Metadata["k"])
	bob.ok("unsubscribe", map[string]any{"topic": "builds.*"}, nil)

	// A direct message.
	alice.ok("send", map[string]any{"to": "bob", "payload": "hi", "correlation_id": "c1"}, nil)
	got := bob.inboxN(1)
	assert.Equal(t, `"hi"`, string(got[0].Payload))
	assert.Equal(t, "direct", got[0].Type)
}

func TestBadInput(t *testing.T) {
	d := newDaemon(t, agentbus.Config{}, server.Config{})
	alice := d.agent(t, "alice", client.Options{})
	d.agent(t, "bob", client.Options{}) // never reads its inbox
	for _, tc := range []struct {
		tool string
		args any
		code string
	}{
		{"send", map[string]any{"to": "nobody"}, "no_recipient"},
		{"send", map[string]any{}, "invalid_message"},
		{"send", map[string]any{"to": "bob", "priority": 300}, "invalid_frame"},
		{"send", map[string]any{"to": "bob", "priority": -1}, "invalid_frame"},
		{"send", map[string]any{"to": 5}, "invalid_frame"},
		{"send", map[string]any{"to": "bob", "bogus": 1}, "invalid_frame"},
		{"send", map[string]any{"to": "bob", "type": "request"}, "invalid_frame"},
		{"send", map[string]any{"to": "bob", "ttl_ms": -5}, "invalid_frame"},
		{"send", map[string]any{"to": "bob", "metadata": map[string]any{"n": 1}}, "invalid_frame"},
		{"send", []int{1, 2}, "invalid_frame"},
		{"send", map[string]any{"to": "bob", "payload": "x", "priority": 50.5}, "invalid_frame"},
		{"request", map[string]any{}, "invalid_frame"},
		{"request", map[string]any{"to": "nobody"}, "no_recipient"},
		{"request", map[string]any{"to": "bob", "timeout_ms": 100}, "request_timeout"},
		{"request", map[string]any{"to": "bob", "timeout_ms": 0}, "invalid_frame"},
		{"reply", map[string]any{"request_id": "never-taken"}, "not_pending"},
		{"reply", map[string]any{}, "invalid_frame"},
		{"publish", map[string]any{"topic": "a..b"}, "invalid_subject"},
		{"publish", map[string]any{"topic": "a.*"}, "invalid_subject"},
		{"publish", map[string]any{"payload": 1}, "invalid_frame"},
		{"subscribe", map[string]any{"topic": ""}, "invalid_frame"}, // the daemon: a missing field
		{"subscribe", map[string]any{"topic": "a.>.b"}, "invalid_subject"},
		{"unsubscribe", map[string]any{"topic": "never.subscribed"}, "not_subscribed"},
		{"inbox", map[string]any{"max": 0}, "invalid_frame"},
		{"inbox", map[string]any{"max": 1000}, "invalid_frame"},
		{"inbox", map[string]any{"wait_ms": 3600000}, "invalid_frame"},
		{"dead_letters", map[string]any{"reason": "bogus"}, "invalid_frame"},
		{"dead_letters", map[string]any{"limit": 5000}, "invalid_frame"},
		{"stats", map[string]any{"x": 1}, "invalid_frame"},
	} {
		t.Run(fmt.Sprintf("%s %v", tc.tool, tc.args), func(t *testing.T) {
			e := alice.fails(tc.tool, tc.args)
			assert.Equal(t, tc.code, e.Code, e.Error)
		})
	}
	// The server is still fine, and refused input left nothing behind.
	alice.ok("send", map[string]any{"to": "bob", "payload": "still here"}, nil)
	_, err := alice.cs.CallTool(ctx5(t), &mcp.CallToolParams{Name: "no_such_tool"})
	require.Error(t, err, "an unknown tool is a protocol error")
}

func TestInboxBoundedBackpressure(t *testing.T) {
	// bob holds at most 2 deliveries in his process and 4 in the daemon;
	// beyond that, senders wait and then get backpressure_timeout. None
	// of what was accepted is lost: bob's inbox returns every one of them.
	d := newDaemon(t, agentbus.Config{MailboxSize: 4,
		Backpressure: agentbus.BackpressureConfig{Timeout: 50 * time.Millisecond, WaitDuration: time.Millisecond}},
		server.Config{})
	bob := d.agent(t, "bob", client.Options{AgentQueue: 2})
	alice := d.agent(t, "alice", client.Options{})
	var accepted []string
	refused := 0
	for i := range 40 {
		r := alice.call("send", map[string]any{"to": "bob", "payload": i})
		if r.IsError {
			e := toolError(t, r, "send")
			require.Equal(t, "backpressure_timeout", e.Code, e.Error)
			refused++
			continue
		}
		var sent struct {
			MessageID string `json:"message_id"`
		}
		okResult(t, r, "send", &sent)
		accepted = append(accepted, sent.MessageID)
	}
	require.NotZero(t, refused, "the bound pushed back")
	require.Less(t, len(accepted), 20, "the bound held")
	got := bob.inboxN(len(accepted))
	ids := make([]string, len(got))
	for i, m := range got {
		ids[i] = m.ID
	}
	assert.Equal(t, accepted, ids, "every accepted message, in order")
	assert.Empty(t, d.bus.DeadLetters().List(deadletter.Filter{}), "nothing dropped")
}

func TestInboxAcksAndWaits(t *testing.T) {
	d := newDaemon(t, agentbus.Config{}, server.Config{})
	bob := d.agent(t, "bob", client.Options{})
	alice := d.agent(t, "alice", client.Options{})
	before := d.bus.Stats().Ledger.Handled

	// An inbox call that waits gets a message sent after it started.
	waiting := bob.callAsync("inbox", map[string]any{"max": 5, "wait_ms": 8000})
	alice.ok("send", map[string]any{"to": "bob", "payload": "ack me", "requires_ack": true}, nil)
	var got inboxResult
	okResult(t, await(t, waiting), "inbox", &got)
	msgs := got.Messages
	require.Len(t, msgs, 1)
	assert.True(t, msgs[0].RequiresAck)
	// Taking it acknowledged it: the bus counts it handled, with no retry.
	require.Eventually(t, func() bool {
		st := d.bus.Stats()
		return st.Ledger.Handled > before && st.PendingRetries == 0 && st.Ledger.InFlight == 0
	}, 5*time.Second, time.Millisecond)

	// An inbox with nothing waiting returns empty.
	assert.Empty(t, bob.inbox(10, 0))
}

func TestUntakenAreDeadLettered(t *testing.T) {
	d := newDaemon(t, agentbus.Config{}, server.Config{})
	c := d.client(t, client.Options{})
	_, err := mcpbus.New(ctx5(t), c, mcpbus.Options{Agent: "bob"})
	require.NoError(t, err)
	alice := d.agent(t, "alice", client.Options{})
	for i := range 3 {
		alice.ok("send", map[string]any{"to": "bob", "payload": i}, nil)
	}
	require.NoError(t, c.Close())
	require.Eventually(t, func() bool {
		return len(d.bus.DeadLetters().List(deadletter.Filter{Agent: "bob"})) == 3
	}, 5*time.Second, time.Millisecond, "what no inbox took is dead-lettered, not lost")
}

func TestResourcesAndInspection(t *testing.T) {
	d := newDaemon(t, agentbus.Config{}, server.Config{})
	alice := d.agent(t, "alice", client.Options{})
	alice.ok("subscribe", map[string]any{"topic": "jobs.>"}, nil)

	res, err := alice.cs.ListResources(ctx5(t), nil)
	require.NoError(t, err)
	var uris []string
	for _, r := range res.Resources {
		uris = append(uris, r.URI)
	}
	assert.ElementsMatch(t, []string{mcpbus.AgentsURI, mcpbus.TopicsURI}, uris)

	read := func(uri string, out any) {
		r, err := alice.cs.ReadResource(ctx5(t), &mcp.ReadResourceParams{URI: uri})
		require.NoError(t, err)
		require.Len(t, r.Contents, 1)
		assert.Equal(t, "application/json", r.Contents[0].MIMEType)
		require.NoError(t, json.Unmarshal([]byte(r.Contents[0].Text), out))
	}
	var agents struct {
		Agents []struct {
			Name string `json:"name"`
		} `json:"agents"`
	}
	read(mcpbus.AgentsURI, &agents)
	require.Len(t, agents.Agents, 1)
	assert.Equal(t, "alice", agents.Agents[0].Name)
	var topics struct {
		Topics []client.TopicInfo `json:"topics"`
	}
	read(mcpbus.TopicsURI, &topics)
	assert.Equal(t, []client.TopicInfo{{Topic: "jobs.>", Subscribers: []string{"alice"}}}, topics.Topics)

	var listed struct {
		Agents []struct {
			Name string `json:"name"`
		} `json:"agents"`
	}
	alice.ok("agents", nil, &listed)
	assert.Equal(t, agents, listed)

	alice.ok("publish", map[string]any{"topic": "nobody.listens", "payload": 1}, nil)
	var letters struct {
		Letters []struct {
			Reason  string  `json:"reason"`
			Message message `json:"message"`
		} `json:"letters"`
	}
	require.Eventually(t, func() bool {
		alice.ok("dead_letters", map[string]any{"reason": "no_subscribers"}, &letters)
		return len(letters.Letters) == 1
	}, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, "nobody.listens", letters.Letters[0].Message.Topic)

	var stats map[string]any
	alice.ok("stats", map[string]any{}, &stats)
	assert.Contains(t, stats, "totals")

	tools, err := alice.cs.ListTools(ctx5(t), nil)
	require.NoError(t, err)
	names := map[string]bool{}
	for _, tl := range tools.Tools {
		names[tl.Name] = true
		assert.NotNil(t, tl.InputSchema, tl.Name)
		assert.NotNil(t, tl.OutputSchema, tl.Name)
	}
	for _, want := range []string{"send", "request", "reply", "publish", "subscribe", "unsubscribe", "inbox",
		"agents", "stats", "dead_letters"} {
		assert.True(t, names[want], want)
	}
}

func TestNewErrors(t *testing.T) {
	d := newDaemon(t, agentbus.Config{}, server.Config{})
	c := d.client(t, client.Options{})
	_, err := mcpbus.New(ctx5(t), nil, mcpbus.Options{Agent: "x"})
	require.Error(t, err)
	_, err = mcpbus.New(ctx5(t), c, mcpbus.Options{})
	require.ErrorIs(t, err, agentbus.ErrInvalidAgent)
	_, err = mcpbus.New(ctx5(t), c, mcpbus.Options{Agent: "x", MaxInbox: -1})
	require.Error(t, err)
	_, err = mcpbus.New(ctx5(t), c, mcpbus.Options{Agent: "bad name"})
	require.ErrorIs(t, err, agentbus.ErrInvalidAgent)
	s, err := mcpbus.New(ctx5(t), c, mcpbus.Options{Agent: "taken"})
	require.NoError(t, err)
	_, err = mcpbus.New(ctx5(t), d.client(t, client.Options{}), mcpbus.Options{Agent: "taken"})
	require.ErrorIs(t, err, agentbus.ErrAgentExists)
	require.NoError(t, s.Close(ctx5(t)))
	require.NoError(t, s.Close(ctx5(t)), "idempotent")
	_, err = mcpbus.New(ctx5(t), d.client(t, client.Options{}), mcpbus.Options{Agent: "taken"})
	require.NoError(t, err, "Close freed the name")
}
