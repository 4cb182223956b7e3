package python_agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/testutil"
	"github.com/descartes/agentbus/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	wait = 30 * time.Second // generous: a loaded machine may start processes slowly
	tick = 10 * time.Millisecond
)

// proc is a subprocess; done is closed once it exited and err (Wait's
// result) is set.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *testutil.SyncBuffer
	done           chan struct{}
	err            error
}

// start runs a subprocess, killed and waited for in t.Cleanup if it still
// runs then.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	return p.wait(t)
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(wait):
		require.FailNow(t, "process did not exit", "%s\nstderr:\n%s", p.cmd, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// buildDaemon builds cmd/agentbus from the module root into a temp dir.
func buildDaemon(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	require.NoError(t, err)
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(t.TempDir(), "agentbus")
	build := exec.Command("go", "build", "-o", bin, "./cmd/agentbus")
	build.Dir = root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build ./cmd/agentbus:\n%s", out)
	return bin
}

// startAgent starts agent.py and waits for its "ready" line.
func startAgent(t *testing.T, python, socket string, args ...string) *proc {
	t.Helper()
	agent := start(t, python, append([]string{"agent.py", "--socket", socket}, args...)...)
	require.Eventually(t, func() bool { return agent.exited() || strings.Contains(agent.stdout.String(), "\n") }, wait, tick)
	require.False(t, agent.exited(), "agent.py exited early:\n%s", agent.stderr)
	require.Equal(t, "ready", strings.SplitN(agent.stdout.String(), "\n", 2)[0], "first line of agent.py")
	return agent
}

func TestPythonAgent(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found in PATH: the Python agent example is not tested")
	}
	// Run the interpreter itself, not a wrapper such as a pyenv shim, which
	// takes longer to start than the agent.
	if out, err := exec.Command(python, "-c", "import sys; print(sys.executable)").Output(); err == nil &&
		strings.TrimSpace(string(out)) != "" {
		python = strings.TrimSpace(string(out))
	}
	bin := buildDaemon(t)
	socket := filepath.Join(transporttest.ShortDir(t), "s") // short: a socket path is at most 108 bytes

	// An agent started with no daemon says so and exits with code 3.
	lone := start(t, python, "agent.py", "--socket", socket)
	assert.Equal(t, 3, lone.wait(t))
	assert.Contains(t, lone.stderr.String(), "cannot reach the agentbus daemon at "+socket)

	daemon := start(t, bin, "serve", "--socket", socket, "--data-dir", "")
	require.Eventually(t, func() bool {
		if daemon.exited() {
			return true
		}
		c, err := net.Dial("unix", socket)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}, wait, tick)
	require.False(t, daemon.exited(), "daemon exited early:\n%s", daemon.stderr)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, socket, client.Options{Name: "python_agent_test"})
	require.NoError(t, err)
	defer c.Close()
	got := make(chan *agentbus.Message, 16)
	require.NoError(t, c.Register(ctx, "go-observer", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		select {
		case got <- m:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})))
	require.NoError(t, c.Subscribe(ctx, "go-observer", "progress.>"))
	progress := func(task string) {
		t.Helper()
		select {
		case m := <-got:
			assert.Equal(t, agentbus.TypePublish, m.Type)
			assert.Equal(t, "progress.py-worker", m.Topic)
			assert.Equal(t, "py-worker", m.Sender)
			assert.JSONEq(t, `{"task":"`+task+`","state":"working"}`, string(m.Payload))
		case <-time.After(wait):
			require.FailNow(t, "no progress message", "task %q", task)
		}
	}

	agent := startAgent(t, python, socket)

	// (a) The CLI asks; the agent publishes progress, then answers 1+2+3.
	out, err := exec.CommandContext(ctx, bin, "--socket", socket, "req", "--to", "py-worker", `{"task":"lint","n":3}`).Output()
	require.NoError(t, err)
	assert.Equal(t, `{"task":"lint","result":6,"by":"py-worker"}`+"\n", string(out))
	progress("lint")

	// (c) A direct message that requires an ack: the agent prints and acks
	// it. Deliveries to an agent wait for its ack, so the request below is
	// answered only if the ack arrived.
	note := agentbus.NewMessage(agentbus.TypeDirect, "go-observer", json.RawMessage(`{"note":"hello python"}`))
	note.Recipient, note.RequiresAck = "py-worker", true
	noteID, err := c.Send(ctx, note)
	require.NoError(t, err)

	// (b) The Go client asks too.
	req := agentbus.NewMessage(agentbus.TypeRequest, "go-observer", json.RawMessage(`{"task":"test","n":10}`))
	req.Recipient = "py-worker"
	rctx, rcancel := context.WithTimeout(ctx, wait)
	resp, err := c.Request(rctx, req)
	rcancel()
	require.NoError(t, err)
	assert.JSONEq(t, `{"task":"test","result":55,"by":"py-worker"}`, string(resp.Payload))
	assert.Equal(t, "py-worker", resp.Sender)
	progress("test")

	// It printed the message before acking it; the pipe may lag behind.
	require.Eventually(t, func() bool { return strings.Count(agent.stdout.String(), "\n") >= 2 }, wait, tick)
	lines := strings.Split(strings.TrimSpace(agent.stdout.String()), "\n")
	require.Len(t, lines, 2, "agent.py stdout: ready, then the direct message")
	var printed agentbus.Message
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &printed))
	assert.Equal(t, noteID, printed.ID)
	assert.Equal(t, agentbus.TypeDirect, printed.Type)
	assert.Equal(t, "go-observer", printed.Sender)
	assert.True(t, printed.RequiresAck)
	assert.JSONEq(t, `{"note":"hello python"}`, string(printed.Payload))

	// (e) More messages than the agent's window (256): the request after
	// them is answered only if the agent credits what it handles.
	for i := range 300 {
		m := agentbus.NewMessage(agentbus.TypeDirect, "go-observer", json.RawMessage(strconv.Itoa(i)))
		m.Recipient = "py-worker"
		_, err := c.Send(ctx, m)
		require.NoError(t, err)
	}
	req = agentbus.NewMessage(agentbus.TypeRequest, "go-observer", json.RawMessage(`{"task":"after","n":3}`))
	req.Recipient = "py-worker"
	rctx, rcancel = context.WithTimeout(ctx, wait)
	resp, err = c.Request(rctx, req)
	rcancel()
	require.NoError(t, err)
	assert.JSONEq(t, `{"task":"after","result":6,"by":"py-worker"}`, string(resp.Payload))
	progress("after")

	letters, err := c.DeadLetters(ctx, client.LetterFilter{})
	require.NoError(t, err)
	assert.Empty(t, letters, "dead letters")

	// A pipelined stream from Python: every message arrives, in order, and
	// flush reports the one refusal.
	streamer := startAgent(t, python, socket, "--name", "py-streamer", "--stream-to", "go-observer", "--count", "200")
	for i := range 200 {
		select {
		case m := <-got:
			require.JSONEq(t, fmt.Sprintf(`{"n":%d}`, i), string(m.Payload))
			require.Equal(t, "py-streamer", m.Sender)
		case <-time.After(wait):
			t.Fatalf("message %d of the Python stream did not arrive; agent.py stderr:\n%s", i, streamer.stderr)
		}
	}
	require.Eventually(t, func() bool { return strings.Count(streamer.stdout.String(), "\n") >= 2 }, wait, tick)
	assert.Equal(t, "flushed 200, refused 1: no_recipient", strings.Split(streamer.stdout.String(), "\n")[1])
	assert.Equal(t, 0, streamer.stop(t), "agent.py stderr:\n%s", streamer.stderr)

	// respond_async: a refused answer reaches its Pending's callback and the
	// next flush; a callback added after the answer runs at once.
	snippet := exec.CommandContext(ctx, python, "-c", respondAsyncCheck, socket)
	snippet.Dir = "."
	sout, err := snippet.CombinedOutput()
	require.NoError(t, err, "respond_async check:\n%s", sout)
	assert.Equal(t, "callback not_registered\nlate callback not_registered\nflush not_registered 1\n", string(sout))

	// (d) SIGTERM: the agent exits 0, and its name is gone from the bus.
	assert.Equal(t, 0, agent.stop(t), "agent.py stderr:\n%s", agent.stderr)
	assert.Empty(t, agent.stderr.String())
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		req := agentbus.NewMessage(agentbus.TypeRequest, "go-observer", json.RawMessage(`{"task":"gone"}`))
		req.Recipient = "py-worker"
		_, err := c.Request(rctx, req)
		assert.ErrorIs(ct, err, agentbus.ErrNoRecipient)
	}, wait, tick)

	// An agent whose daemon goes away says so and exits with code 1.
	orphan := startAgent(t, python, socket, "--name", "py-orphan")
	require.NoError(t, c.Close())
	assert.Equal(t, 0, daemon.stop(t), "daemon stderr:\n%s", daemon.stderr)
	assert.NoFileExists(t, socket)
	assert.Equal(t, 1, orphan.wait(t))
	assert.Contains(t, orphan.stderr.String(), "agent.py: the daemon closed the connection")
}

// respondAsyncCheck answers a request in the name of an agent the connection
// did not register, which the daemon refuses (not_registered).
const respondAsyncCheck = `
import sys, threading
from agentbus_client import Client, FlushError
c = Client(sys.argv[1], name="respond-async-check")
# Hold the reader's settling of answers until the callback is added, so
# that it is added to a Pending still waiting.
gate, settle = threading.Event(), c._settle
def gated(*args):
    gate.wait(10)
    return settle(*args)
c._settle = gated
called = threading.Event()
codes = []
def cb(p):
    codes.append(p.error.code)
    called.set()
p = c.respond_async({"id": "r1", "request_id": "r1", "sender": "go-observer", "recipient": "not-mine"}, {"ok": True})
assert not p.done()
p.add_done_callback(cb)
gate.set()
assert called.wait(10), "no callback"
print("callback", codes[0])
p.add_done_callback(lambda p: print("late callback", p.error.code))
try:
    c.flush(10)
    print("flush reported nothing")
except FlushError as e:
    print("flush", e.errors[0].code, len(e.errors))
c.close()
`
