package mcpbus_test

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/internal/testutil"
	"github.com/descartes/agentbus/transport/transporttest"
)

// buildAgentbus builds cmd/agentbus into a temporary directory, with -race
// when this test binary has it, so that the build reuses the test's cached
// packages.
func buildAgentbus(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agentbus")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/descartes/agentbus/cmd/agentbus")...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// startServe runs `agentbus serve` on a fresh socket as a real process and
// waits until it accepts connections; it is stopped with SIGTERM when t ends.
func startServe(t *testing.T, bin string) string {
	t.Helper()
	socket := filepath.Join(transporttest.ShortDir(t), "bus.sock")
	var stderr testutil.SyncBuffer
	cmd := exec.Command(bin, "serve", "--socket", socket, "--log-level", "warn", "--data-dir", "")
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			assert.NoError(t, err, "daemon: %s", stderr.String())
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("daemon did not stop: %s", stderr.String())
		}
	})
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", socket)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 20*time.Second, 5*time.Millisecond, "daemon did not start: %s", stderr.String())
	return socket
}

// mcpAgent starts `agentbus mcp --as name` through the SDK's command
// transport and returns the client session.
func mcpAgent(t *testing.T, bin, socket, name string) *mcp.ClientSession {
	t.Helper()
	cmd := exec.Command(bin, "--socket", socket, "mcp", "--as", name)
	cmd.Stderr = os.Stderr
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil).
		Connect(ctx5(t), &mcp.CommandTransport{Command: cmd}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cs.Close()) })
	return cs
}

// TestBinary drives the real command: `agentbus serve` and `agentbus mcp`
// processes, with the SDK's client.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	bin := buildAgentbus(t)
	socket := startServe(t, bin)
	t.Run("stdio", func(t *testing.T) { testStdio(t, bin, socket) })
	t.Run("http", func(t *testing.T) { testHTTP(t, bin, socket) })
	t.Run("usage", func(t *testing.T) { testUsage(t, bin) })
}

func testStdio(t *testing.T, bin, socket string) {
	alice := &session{t: t, cs: mcpAgent(t, bin, socket, "alice")}
	bob := &session{t: t, cs: mcpAgent(t, bin, socket, "bob")}

	init := alice.cs.InitializeResult()
	require.NotNil(t, init)
	assert.Equal(t, "agentbus", init.ServerInfo.Name)
	assert.Contains(t, init.Instructions, "alice")

	// bob subscribes, then alice asks him and he replies.
	bob.ok("subscribe", map[string]any{"topic": "progress.>"}, nil)
	answered := alice.callAsync("request", map[string]any{"to": "bob", "payload": map[string]any{"q": "2+2"}})
	req := bob.inboxN(1)[0]
	require.Equal(t, "request", req.Type)
	assert.Equal(t, "alice", req.Sender)
	assert.JSONEq(t, `{"q":"2+2"}`, string(req.Payload))
	bob.ok("reply", map[string]any{"request_id": req.RequestID, "payload": 4}, nil)
	var resp struct {
		Response message `json:"response"`
	}
	okResult(t, await(t, answered), "request", &resp)
	assert.Equal(t, "bob", resp.Response.Sender)
	assert.Equal(t, "4", string(resp.Response.Payload))

	// alice publishes; bob receives it.
	alice.ok("publish", map[string]any{"topic": "progress.build", "payload": map[string]any{"done": 50}}, nil)
	pub := bob.inboxN(1)[0]
	assert.Equal(t, "progress.build", pub.Topic)
	assert.Equal(t, "alice", pub.Sender)
	assert.JSONEq(t, `{"done":50}`, string(pub.Payload))

	// Bad input is a tool error with the bus's code; the server goes on.
	assert.Equal(t, "no_recipient", alice.fails("send", map[string]any{"to": "nobody"}).Code)
	assert.Equal(t, "invalid_frame", alice.fails("publish", map[string]any{"topic": 7}).Code)
	var agents struct {
		Agents []struct {
			Name string `json:"name"`
		} `json:"agents"`
	}
	alice.ok("agents", nil, &agents)
	names := []string{}
	for _, a := range agents.Agents {
		names = append(names, a.Name)
	}
	assert.Equal(t, []string{"alice", "bob"}, names)
	r, err := bob.cs.ReadResource(ctx5(t), &mcp.ReadResourceParams{URI: "agentbus://topics"})
	require.NoError(t, err)
	var topics map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.Contents[0].Text), &topics))
	assert.Equal(t, map[string]any{"topics": []any{map[string]any{"topic": "progress.>",
		"subscribers": []any{"bob"}}}}, topics)
}

func testHTTP(t *testing.T, bin, socket string) {
	cmd := exec.Command(bin, "--socket", socket, "mcp", "--as", "carol", "--http", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // if the test failed before stopping it
	lines := make(chan string, 16)
	go func() { // ends when the process exits and closes the pipe
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads on: drop the rest of the log
			}
		}
	}()
	exited := make(chan error, 1)
	var url string
	select {
	case line := <-lines:
		_, rest, ok := strings.Cut(line, "serving MCP on ")
		require.True(t, ok, line)
		url, _, _ = strings.Cut(rest, " ")
	case <-time.After(20 * time.Second):
		t.Fatal("agentbus mcp --http did not start")
	}
	go func() {
		for range lines { // drain until the pipe closes, then reap
		}
		exited <- cmd.Wait()
	}()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "v0"}, nil).
		Connect(ctx5(t), &mcp.StreamableClientTransport{Endpoint: url}, nil)
	require.NoError(t, err)
	carol := &session{t: t, cs: cs}
	var sent struct {
		MessageID string `json:"message_id"`
	}
	carol.ok("send", map[string]any{"to": "carol", "payload": "over http"}, &sent)
	got := carol.inboxN(1)
	assert.Equal(t, sent.MessageID, got[0].ID)
	assert.Equal(t, "invalid_subject", carol.fails("subscribe", map[string]any{"topic": "a..b"}).Code)
	require.NoError(t, cs.Close())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "a signal is a normal stop")
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatal("agentbus mcp --http did not stop")
	}
}

func testUsage(t *testing.T, bin string) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"mcp", "--inbox", "0"}, 2},
		{[]string{"mcp", "--http", "0.0.0.0:0"}, 2},
		{[]string{"mcp", "--http", "nonsense"}, 2},
		{[]string{"mcp", "extra"}, 2},
		{[]string{"--socket", filepath.Join(t.TempDir(), "none.sock"), "mcp"}, 3},
	} {
		cmd := exec.Command(bin, tc.args...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "%v: %s", tc.args, out)
		assert.Equal(t, tc.code, ee.ExitCode(), "%v: %s", tc.args, out)
	}
}
