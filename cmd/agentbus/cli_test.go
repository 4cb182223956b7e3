package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/testutil"
)

// cliProc is the CLI running as a real process (the test binary, as
// TestMain runs it with AGENTBUS_TEST_MAIN=1).
type cliProc struct {
	cmd            *exec.Cmd
	stdout, stderr testutil.SyncBuffer
	// term is what the process wrote to its terminal, for one started
	// with startCLIOnTerminal.
	term testutil.SyncBuffer
	tty  *os.File // the terminal's controlling side, if any
	read chan struct{}
	done chan struct{}
	err  error
}

// command returns the command line as a process, with --socket.
func command(t *testing.T, socket string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, append([]string{"--socket", socket}, args...)...)
	cmd.Env = append(os.Environ(), "AGENTBUS_TEST_MAIN=1", raceExitFast)
	return cmd
}

// startCLI runs the CLI with args as a process, its stdin empty.
func startCLI(t *testing.T, socket string, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{cmd: command(t, socket, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.start(t)
	return p
}

// startCLIOnTerminal runs the CLI with its stdin and stderr on a terminal
// (a pseudo-terminal the test reads and writes), its stdout a pipe.
func startCLIOnTerminal(t *testing.T, socket string, args ...string) *cliProc {
	t.Helper()
	ptmx, tty, err := pty.Open()
	require.NoError(t, err)
	p := &cliProc{cmd: command(t, socket, args...), done: make(chan struct{}), tty: ptmx, read: make(chan struct{})}
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = tty, &p.stdout, tty
	p.start(t)
	require.NoError(t, tty.Close()) // the child has its own
	go func() {
		defer close(p.read)
		_, _ = io.Copy(&p.term, ptmx) // ends (EIO) once the child has exited
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		<-p.read
		_ = ptmx.Close()
	})
	return p
}

func (p *cliProc) start(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

// wait waits for the process to exit and returns its exit code.
func (p *cliProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the CLI did not exit; stderr: %s", p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

// waitFor waits until s is in what out holds.
func waitFor(t *testing.T, out *testutil.SyncBuffer, s string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), s) }, 20*time.Second,
		5*time.Millisecond, "never got %q; got:\n%s", s, out.String())
}

// cliIn is cli with stdin.
func cliIn(t *testing.T, socket, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"--socket", socket}, args...), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// silent registers an agent on a raw connection that never answers
// anything delivered to it.
func silent(t *testing.T, socket, name string) *rawConn {
	t.Helper()
	r := dialRaw(t, socket)
	r.write(`{"op":"hello","id":"1","version":1}` + "\n" + `{"op":"register","id":"2","agent":"` + name + `"}` + "\n")
	require.Equal(t, "welcome", r.read().Op)
	require.Equal(t, "ok", r.read().Op)
	return r
}

// Item 1: sub notices that the daemon is gone, reconnects with backoff to
// the daemon started again, registers and subscribes again, and says so.
func TestSubReconnectsAfterDaemonRestart(t *testing.T) {
	socket := filepath.Join(shortDir(t), "bus.sock")
	d1 := startDaemonAt(t, socket)
	sub := startCLI(t, socket, "sub", "--as", "survivor", "--count", "1", "--reconnect-wait", "20s", "r.>")
	waitFor(t, &sub.stderr, "agentbus: survivor subscribed to r.>; ^C to stop")

	require.NoError(t, d1.stop(t))
	waitFor(t, &sub.stderr, "agentbus: lost the connection to the daemon at "+socket+
		" (the daemon closed it); reconnecting for up to 20s")
	d2 := startDaemonAt(t, socket)
	waitFor(t, &sub.stderr, "agentbus: reconnected to "+socket+"; survivor is registered and subscribed to r.> again")

	code, _, errOut := cli(t, socket, "pub", "r.x", `{"after":"restart"}`)
	require.Equal(t, exitOK, code, errOut)
	assert.NotContains(t, errOut, "no agent is subscribed")
	require.Equal(t, exitOK, sub.wait(t), sub.stderr.String())
	assert.Contains(t, sub.stdout.String(), `{"after":"restart"}`)
	assert.NotContains(t, d2.log(), "no_subscribers")
}

// Item 1: a bounded reconnect wait, no reconnect at all, and a one-shot
// command whose daemon dies under it: each fails with exit code 3 and says
// why.
func TestDaemonGoneFailsClearly(t *testing.T) {
	t.Run("reconnect wait runs out", func(t *testing.T) {
		d := startDaemon(t)
		sub := startCLI(t, d.socket, "sub", "--reconnect-wait", "300ms", "x")
		waitFor(t, &sub.stderr, "subscribed to x")
		require.NoError(t, d.stop(t))
		assert.Equal(t, exitUnreachable, sub.wait(t))
		assert.Contains(t, sub.stderr.String(), "agentbus: no daemon at "+d.socket+" for 300ms (--reconnect-wait); gave up\n")
	})
	t.Run("no reconnect", func(t *testing.T) {
		d := startDaemon(t)
		sub := startCLI(t, d.socket, "sub", "--reconnect-wait", "0", "x")
		waitFor(t, &sub.stderr, "subscribed to x")
		require.NoError(t, d.stop(t))
		assert.Equal(t, exitUnreachable, sub.wait(t))
		assert.Contains(t, sub.stderr.String(), "agentbus: lost the connection to the daemon at "+d.socket+
			" (the daemon closed it)\n")
	})
	t.Run("one-shot command", func(t *testing.T) {
		d := startDaemon(t)
		silent(t, d.socket, "mute")
		req := startCLI(t, d.socket, "req", "--timeout", "1m", "mute", "{}")
		require.Eventually(t, func() bool {
			_, out, _ := cli(t, d.socket, "agents", "--json")
			return strings.Contains(out, `"received":1`)
		}, 20*time.Second, 5*time.Millisecond, "the request reached the agent")
		require.NoError(t, d.cmd.Process.Kill()) // dies under the request
		assert.Equal(t, exitUnreachable, req.wait(t))
		assert.Contains(t, req.stderr.String(), "the connection to the daemon at "+d.socket+" was lost before it answered")
	})
}

// Item 2: errors say what went wrong, with the prefix once.
func TestErrorTexts(t *testing.T) {
	d := startDaemon(t)
	silent(t, d.socket, "silent")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"request timeout", []string{"req", "--timeout", "300ms", "--to", "silent", `{"q":1}`}, exitFailed,
			"agentbus: no response from agent \"silent\" within 300ms\n"},
		{"no recipient", []string{"send", "--to", "nobody", "{}"}, exitFailed,
			"agentbus: send to \"nobody\": no agent of that name is registered with the daemon (see agentbus agents)\n"},
		{"live socket", []string{"serve"}, exitFailed,
			"agentbus: another daemon is serving " + d.socket + ": stop it first, or give another --socket\n"},
		{"name taken", []string{"send", "--as", "silent", "silent", "{}"}, exitFailed,
			"agentbus: register \"silent\": another client has an agent of that name; pick another with --as\n"},
		{"bad name", []string{"send", "--as", "$sys", "silent", "{}"}, exitUsage,
			"agentbus: --as: \"$sys\" is not a valid agent name"},
		{"unknown letter", []string{"dlq", "get", "77"}, exitFailed,
			"agentbus: dead letter 77: the dead-letter queue does not hold it (never there, purged, or evicted)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := cli(t, d.socket, tc.args...)
			assert.Equal(t, tc.code, code, errOut)
			assert.True(t, strings.HasPrefix(errOut, tc.want), "got %q\nwant %q", errOut, tc.want)
			for _, twice := range []string{"agentbus: agentbus", "transport: ", "client: ", "protocol: ", "deadline exceeded"} {
				assert.NotContains(t, errOut, twice)
			}
		})
	}
}

// Item 3: a payload that starts like JSON must be JSON; --raw sends text
// as a string.
func TestPayloads(t *testing.T) {
	d := startDaemon(t)
	w := dialClient(t, d.socket)
	got := make(chan *agentbus.Message, 8)
	require.NoError(t, w.Register(context.Background(), "watcher", agentbus.HandlerFunc(
		func(ctx context.Context, m *agentbus.Message) error {
			got <- m
			return nil
		})))
	next := func() string {
		t.Helper()
		select {
		case m := <-got:
			return string(m.Payload)
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
			return ""
		}
	}
	for _, tc := range []struct {
		name, stdin string
		args        []string
		code        int
		want        string // the payload received, or the error's text
	}{
		{"truncated object", "", []string{"send", "watcher", `{"a":1`}, exitUsage,
			"the payload starts like JSON but is not valid JSON at byte 6"},
		{"unterminated string", "", []string{"send", "watcher", `"abc`}, exitUsage, "to send the text as a string, add --raw"},
		{"bad array", "", []string{"req", "watcher", `[1,]`}, exitUsage, "not valid JSON"},
		{"raw", "", []string{"send", "--raw", "watcher", `{"a":1`}, exitOK, `"{\"a\":1"`},
		{"json", "", []string{"send", "watcher", `{"a":1}`}, exitOK, `{"a":1}`},
		{"text", "", []string{"send", "watcher", `plain text`}, exitOK, `"plain text"`},
		{"number", "", []string{"send", "watcher", `42`}, exitOK, `42`},
		{"stdin", "[1, 2]\n", []string{"send", "watcher", "-"}, exitOK, `[1,2]`},
		{"bad stdin", "{oops\n", []string{"send", "watcher", "-"}, exitUsage, "not valid JSON"},
		{"raw stdin", "{oops\n", []string{"send", "--raw", "watcher", "-"}, exitOK, `"{oops\n"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := cliIn(t, d.socket, tc.stdin, tc.args...)
			require.Equal(t, tc.code, code, errOut)
			if code != exitOK {
				assert.Contains(t, errOut, tc.want)
				return
			}
			assert.Equal(t, tc.want, next(), "and what was refused before was never sent")
		})
	}
}

// Item 5: serve's help reads right, and its log can be JSON.
func TestServeHelpAndJSONLog(t *testing.T) {
	code, out, _ := cli(t, "unused", "serve", "--help")
	require.Equal(t, exitOK, code)
	for _, name := range []string{"drain-timeout", "request-timeout", "wait-duration", "backpressure-timeout", "ack-timeout"} {
		assert.Regexp(t, regexp.MustCompile(`--`+name+` duration `), out)
	}
	assert.Regexp(t, regexp.MustCompile(`\n\s+--history\s+record accepted messages`), out, "no value name for a bool")
	assert.NotContains(t, out, "`")
	for _, meaningless := range []string{"--json", "--as ", "--timeout"} {
		assert.NotContains(t, out, meaningless)
	}
	assert.Contains(t, out, "--log-format string")

	d := startDaemon(t, "--log-format", "json")
	require.NoError(t, d.stop(t))
	lines := strings.Split(strings.TrimSpace(d.log()), "\n")
	require.NotEmpty(t, lines)
	for _, l := range lines {
		var v map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &v), l)
		assert.Contains(t, v, "level")
	}
	assert.Contains(t, d.log(), `"msg":"agentbus daemon listening"`)

	// Durations in a config file are Go durations, checked like the flags.
	dir := shortDir(t)
	cfg := filepath.Join(dir, "c.json")
	require.NoError(t, os.WriteFile(cfg, []byte(`{"request_timeout":"soon"}`), 0o600))
	code, _, errOut := cli(t, filepath.Join(dir, "s"), "serve", "--config", cfg)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `key "request_timeout"`)
	require.NoError(t, os.WriteFile(cfg, []byte(`{"request_timeout":"5s","history":true,"max_pending":50}`), 0o600))
	startDaemon(t, "--config", cfg)
}

// Item 6: on a terminal, a wait shows after a second and is erased when
// it ends; elsewhere nothing is shown.
func TestWaitShownOnTerminal(t *testing.T) {
	d := startDaemon(t)
	w := dialClient(t, d.socket)
	release := make(chan struct{})
	require.NoError(t, w.Register(context.Background(), "worker", agentbus.HandlerFunc(
		func(ctx context.Context, m *agentbus.Message) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			_, err := w.Reply(ctx, m, []byte(`{"done":true}`))
			return err
		})))
	p := startCLIOnTerminal(t, d.socket, "req", "worker", `{"q":1}`)
	waitFor(t, &p.term, `agentbus: waiting for a response from "worker"… 1s (^C to give up)`)
	close(release)
	require.Equal(t, exitOK, p.wait(t), p.term.String())
	assert.JSONEq(t, `{"done":true}`, p.stdout.String())
	<-p.read
	term := p.term.String()
	assert.True(t, strings.HasSuffix(term, "\r\x1b[K"), "the line is erased: %q", term)

	// Not on a terminal: the same wait says nothing.
	require.NoError(t, w.Register(context.Background(), "slowpoke", agentbus.HandlerFunc(
		func(ctx context.Context, m *agentbus.Message) error {
			select {
			case <-time.After(1500 * time.Millisecond): // longer than the second before a wait is shown
			case <-ctx.Done():
				return ctx.Err()
			}
			_, err := w.Reply(ctx, m, []byte(`1`))
			return err
		})))
	code, out, errOut := cli(t, d.socket, "req", "slowpoke", `{}`)
	require.Equal(t, exitOK, code, errOut)
	assert.Equal(t, "1\n", out)
	assert.Empty(t, errOut)
}

// Item 6: a send held back by a full mailbox shows its wait on a
// terminal, and fails clearly when the daemon's backpressure timeout ends
// it.
func TestBackpressuredSendShownOnTerminal(t *testing.T) {
	d := startDaemon(t, "--mailbox-size", "1", "--outbound-queue", "1", "--backpressure-timeout", "2s")
	silent(t, d.socket, "slow") // never reads: its socket, queue and mailbox fill
	fast := dialClient(t, d.socket)
	payload := []byte(`"` + strings.Repeat("z", 60_000) + `"`)
	var err error
	for range 1000 {
		m := agentbus.NewMessage(agentbus.TypeDirect, "", payload)
		m.Recipient = "slow"
		if _, err = fast.Send(context.Background(), m); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, agentbus.ErrBackpressureTimeout)
	p := startCLIOnTerminal(t, d.socket, "send", "slow", `{"one":"more"}`)
	waitFor(t, &p.term, `agentbus: waiting for room in the mailbox of "slow"… 1s (^C to give up)`)
	require.Equal(t, exitFailed, p.wait(t))
	<-p.read
	assert.Contains(t, p.term.String(), "\r\x1b[Kagentbus: send to \"slow\": its mailbox stayed full for the daemon's "+
		"backpressure timeout; the message was not accepted")
}

// Item 6: pub says on stderr when nobody was subscribed, and exits 0.
func TestPubWithoutSubscribers(t *testing.T) {
	d := startDaemon(t)
	code, out, errOut := cli(t, d.socket, "pub", "void.topic", `1`)
	require.Equal(t, exitOK, code, errOut)
	assert.NotEmpty(t, strings.TrimSpace(out))
	assert.Regexp(t, `^agentbus: no agent is subscribed to "void.topic": the message was dead-lettered `+
		`\(no_subscribers, dead letter \d+\)\n$`, errOut)

	w := dialClient(t, d.socket)
	ctx := context.Background()
	got := make(chan *agentbus.Message, 1)
	require.NoError(t, w.Register(ctx, "listener", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		got <- m
		return nil
	})))
	require.NoError(t, w.Subscribe(ctx, "listener", "heard.*"))
	code, _, errOut = cli(t, d.socket, "pub", "heard.topic", `2`)
	require.Equal(t, exitOK, code, errOut)
	assert.Empty(t, errOut)
	<-got
}

// Item 7: the daemon's log: per-connection lines at debug, a summary at
// info, no "shut down before delivery" for idle agents, and a shutdown
// that does not wait on an abandoned request.
func TestDaemonLogs(t *testing.T) {
	d := startDaemon(t, "--drain-timeout", "30s")
	idle := dialClient(t, d.socket)
	require.NoError(t, idle.Register(context.Background(), "idle", agentbus.HandlerFunc(
		func(context.Context, *agentbus.Message) error { return nil })))
	silent(t, d.socket, "silent")
	for range 3 {
		code, _, errOut := cli(t, d.socket, "ping")
		require.Equal(t, exitOK, code, errOut)
	}
	code, _, errOut := cli(t, d.socket, "req", "--timeout", "200ms", "silent", "{}")
	require.Equal(t, exitFailed, code, errOut)
	waitFor(t, &d.stderr, "msg=clients ")

	start := time.Now()
	require.NoError(t, d.stop(t))
	assert.Less(t, time.Since(start), 15*time.Second, "the shutdown did not wait for the drain timeout")
	log := d.log()
	for _, no := range []string{"client connected", "client hello", "client disconnected", "agent registered",
		"shut down before delivery", "cut short", "drain incomplete"} {
		assert.NotContains(t, log, no)
	}
	assert.Contains(t, log, `msg="agent stopped" agent=idle reason="bus shutdown"`)
	assert.Regexp(t, `msg=clients connections=\d+ agents=\d+ connected=\d+ disconnected=\d+`, log)

	dbg := startDaemon(t, "--log-level", "debug")
	code, _, errOut = cli(t, dbg.socket, "ping")
	require.Equal(t, exitOK, code, errOut)
	waitFor(t, &dbg.stderr, `msg="client hello"`)
	assert.Contains(t, dbg.log(), `level=DEBUG msg="client connected"`)
}

// Item 8: --metrics is loopback only unless --metrics-allow-remote says
// otherwise.
func TestMetricsAllowRemote(t *testing.T) {
	dir := shortDir(t)
	code, _, errOut := cli(t, filepath.Join(dir, "s"), "serve", "--metrics", "0.0.0.0:9464")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `"0.0.0.0:9464" is not a loopback address`)
	assert.Contains(t, errOut, "--metrics-allow-remote")
	// Accepted with the flag: a bad socket mode stops serve before it
	// binds anything, and is the only complaint. (Tests bind loopback only.)
	for _, addr := range []string{"0.0.0.0:9464", "[::]:9464", "example.com:9464"} {
		code, _, errOut = cli(t, filepath.Join(dir, "s"), "serve", "--metrics", addr, "--metrics-allow-remote",
			"--socket-mode", "999")
		assert.Equal(t, exitUsage, code)
		assert.Contains(t, errOut, "--socket-mode")
		assert.NotContains(t, errOut, "--metrics", addr)
	}
	code, _, errOut = cli(t, filepath.Join(dir, "s"), "serve", "--metrics", "nocolon", "--metrics-allow-remote")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `--metrics: "nocolon" is not an address`)
}

// Item 9: version, ping, agents, dlq get and purge, and the positional
// forms of send and req.
func TestNewCommands(t *testing.T) {
	d := startDaemon(t)
	ctx := context.Background()

	code, out, errOut := cli(t, d.socket, "version")
	require.Equal(t, exitOK, code, errOut)
	assert.Contains(t, out, "github.com/descartes/agentbus")
	assert.Contains(t, out, runtime.Version())
	assert.Regexp(t, fmt.Sprintf(`protocol\s+%d\n`, protocol.Version), out)
	assert.Regexp(t, fmt.Sprintf(`daemon\s+agentbus/\S+, protocol %d, at `, protocol.Version)+regexp.QuoteMeta(d.socket), out)
	code, out, _ = cli(t, d.socket, "version", "--json")
	require.Equal(t, exitOK, code)
	var v versionInfo
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	assert.Equal(t, protocol.Version, v.Protocol)
	require.NotNil(t, v.Daemon)
	assert.Equal(t, d.socket, v.Daemon.Socket)
	code, out, _ = cli(t, filepath.Join(shortDir(t), "none.sock"), "version")
	require.Equal(t, exitOK, code, "no daemon is not an error for version")
	assert.Regexp(t, `daemon\s+none at .*none.sock \(the socket does not exist\)`, out)

	code, out, errOut = cli(t, d.socket, "ping", "-c", "2")
	require.Equal(t, exitOK, code, errOut)
	assert.Equal(t, 2, strings.Count(out, "pong from agentbus/"), out)
	assert.Contains(t, out, "2 pings: min/avg/max = ")
	code, out, _ = cli(t, d.socket, "ping", "--json")
	require.Equal(t, exitOK, code)
	var pr pingResult
	require.NoError(t, json.Unmarshal([]byte(out), &pr))
	assert.Len(t, pr.RTTUS, 1)
	assert.Positive(t, pr.RTTUS[0])
	code, _, _ = cli(t, filepath.Join(shortDir(t), "none.sock"), "ping")
	assert.Equal(t, exitUnreachable, code)

	// Positional forms.
	w := dialClient(t, d.socket)
	require.NoError(t, w.Register(ctx, "worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		if m.Type != agentbus.TypeRequest {
			return nil
		}
		_, err := w.Reply(ctx, m, []byte(`{"echo":`+string(m.Payload)+`}`))
		return err
	})))
	code, out, errOut = cli(t, d.socket, "req", "worker", `{"n":2}`)
	require.Equal(t, exitOK, code, errOut)
	assert.JSONEq(t, `{"echo":{"n":2}}`, out)
	code, out, errOut = cli(t, d.socket, "send", "worker", `"hi"`)
	require.Equal(t, exitOK, code, errOut)
	assert.NotEmpty(t, strings.TrimSpace(out))

	// agents shows queue depths: an agent with a window of one that never
	// credits has one delivery out and the rest queued (its handler waits
	// for the credit before it takes the next).
	busy := dialRaw(t, d.socket)
	busy.write(`{"op":"hello","id":"1","version":1}` + "\n" + `{"op":"register","id":"2","agent":"busy","window":1}` + "\n")
	require.Equal(t, "welcome", busy.read().Op)
	require.Equal(t, "ok", busy.read().Op)
	for range 5 {
		m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`1`))
		m.Recipient = "busy"
		_, err := w.Send(ctx, m)
		require.NoError(t, err)
	}
	var agents []agentbus.AgentStats
	require.Eventually(t, func() bool {
		code, out, _ := cli(t, d.socket, "agents", "--json")
		agents = nil
		if code != exitOK || json.Unmarshal([]byte(out), &agents) != nil {
			return false
		}
		for _, a := range agents {
			if a.Name == "busy" {
				return a.Queued == 4
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "%+v", agents)
	code, out, errOut = cli(t, d.socket, "agents")
	require.Equal(t, exitOK, code, errOut)
	assert.Regexp(t, `AGENT\s+QUEUED\s+CAP\s+RECEIVED`, out)
	assert.Regexp(t, `\nbusy\s+4\s+1024\s+5\s`, out)
	assert.Regexp(t, `\nworker\s+0\s+1024\s+2\s`, out)
	assert.Equal(t, "2 agent(s)\n", errOut)

	// dlq get and purge.
	code, _, errOut = cli(t, d.socket, "pub", "void.x", `{"lost":true}`)
	require.Equal(t, exitOK, code, errOut)
	var letters []client.Letter
	require.Eventually(t, func() bool {
		_, out, _ := cli(t, d.socket, "dlq", "list", "--json")
		return json.Unmarshal([]byte(out), &letters) == nil && len(letters) == 1
	}, 10*time.Second, 10*time.Millisecond)
	seq := fmt.Sprint(letters[0].Seq)
	code, out, errOut = cli(t, d.socket, "dlq", "get", seq)
	require.Equal(t, exitOK, code, errOut)
	assert.Regexp(t, `seq\s+`+seq+`\n`, out)
	assert.Regexp(t, `reason\s+no_subscribers\n`, out)
	assert.Contains(t, out, `"topic": "void.x"`)
	assert.Contains(t, out, `"lost": true`)
	code, out, _ = cli(t, d.socket, "dlq", "get", "--json", seq)
	require.Equal(t, exitOK, code)
	var l client.Letter
	require.NoError(t, json.Unmarshal([]byte(out), &l))
	assert.Equal(t, letters[0].Message.ID, l.Message.ID)

	code, _, errOut = cli(t, d.socket, "dlq", "purge")
	assert.Equal(t, exitUsage, code, "not on a terminal: --force is needed")
	assert.Contains(t, errOut, "add --force")
	code, out, errOut = cli(t, d.socket, "dlq", "purge", "--force")
	require.Equal(t, exitOK, code, errOut)
	assert.Equal(t, "purged 1 dead letter(s)\n", out)
	code, out, _ = cli(t, d.socket, "dlq", "list", "--json")
	require.Equal(t, exitOK, code)
	assert.JSONEq(t, `[]`, out)
	code, _, errOut = cli(t, d.socket, "dlq", "get", seq)
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errOut, "does not hold it")
}

// Item 9: on a terminal, dlq purge asks first.
func TestPurgeAsksOnTerminal(t *testing.T) {
	d := startDaemon(t)
	code, _, errOut := cli(t, d.socket, "pub", "void.y", `1`)
	require.Equal(t, exitOK, code, errOut)
	require.Eventually(t, func() bool {
		_, out, _ := cli(t, d.socket, "dlq", "list", "--json")
		return strings.Count(out, `"seq"`) == 1
	}, 10*time.Second, 10*time.Millisecond)

	no := startCLIOnTerminal(t, d.socket, "dlq", "purge")
	waitFor(t, &no.term, "Delete the 1 dead letter(s) the daemon holds? [y/N] ")
	_, err := no.tty.Write([]byte("n\n"))
	require.NoError(t, err)
	require.Equal(t, exitOK, no.wait(t))
	<-no.read
	assert.Contains(t, no.term.String(), "agentbus: nothing purged")

	yes := startCLIOnTerminal(t, d.socket, "dlq", "purge")
	waitFor(t, &yes.term, "[y/N] ")
	_, err = yes.tty.Write([]byte("y\n"))
	require.NoError(t, err)
	require.Equal(t, exitOK, yes.wait(t))
	assert.Equal(t, "purged 1 dead letter(s)\n", yes.stdout.String())
}

// Item 10: shell completion, and a root help that lists the common flows.
func TestCompletionAndHelp(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_agentbus", "zsh": "#compdef agentbus",
		"fish": "complete -c agentbus", "powershell": "Register-ArgumentCompleter"} {
		code, out, errOut := cli(t, "unused", "completion", shell)
		require.Equal(t, exitOK, code, errOut)
		assert.Contains(t, out, want, shell)
	}
	// What the scripts ask the binary for: commands, flag values.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "dlq", "list", "--reason", ""}, []string{"no_subscribers", "transport_closed"}},
		{[]string{"__complete", "send", "--type", ""}, []string{"heartbeat", "control"}},
		{[]string{"__complete", "history", "--type", ""}, []string{"request", "response"}},
		{[]string{"__complete", "serve", "--log-format", ""}, []string{"json", "text"}},
		{[]string{"__complete", "completion", ""}, []string{"bash", "fish"}},
		{[]string{"__complete", "dl"}, []string{"dlq"}},
	} {
		code, out, errOut := cli(t, "unused", tc.args...)
		require.Equal(t, exitOK, code, errOut)
		for _, w := range tc.want {
			assert.Regexp(t, `(?m)^`+w+`(\t|$)`, out, tc.args)
		}
	}
	code, _, errOut := cli(t, "unused", "completion", "tcsh")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "completion takes one shell: bash, zsh, fish, powershell")

	code, out, _ := cli(t, "unused", "--help")
	require.Equal(t, exitOK, code)
	for _, s := range []string{"Common flows:", "agentbus serve --history", "agentbus sub 'progress.>'",
		"agentbus req worker", "agentbus dlq replay 42", "Exit status:", "3  the daemon could not be reached",
		"agentbus completion --help", "docs/cli.md"} {
		assert.Contains(t, out, s)
	}
	for _, c := range []string{"send", "pub", "sub", "req", "agents", "stats", "dlq", "history", "ping", "serve",
		"version", "completion", "mcp"} {
		assert.Regexp(t, `\n  `+c+`\s+\S`, out, c)
	}
}

// A real shell runs the bash completion script and completes a command.
func TestBashCompletionInBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	exe, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentbus")
	script := fmt.Sprintf(`#!/bin/sh
AGENTBUS_TEST_MAIN=1 exec %q "$@"
`, exe)
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o700))
	// What bash-completion would provide, reduced to what the script calls.
	prog := `
_get_comp_words_by_ref() { cur="${COMP_WORDS[COMP_CWORD]}"; prev="${COMP_WORDS[COMP_CWORD-1]}"; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
__ltrim_colon_completions() { :; }
source <(agentbus completion bash)
COMP_WORDS=(agentbus dlq list --reason no_s); COMP_CWORD=4; COMP_LINE="agentbus dlq list --reason no_s"; COMP_POINT=${#COMP_LINE}
__start_agentbus agentbus no_s list
printf '%s\n' "${COMPREPLY[@]}"
`
	cmd := exec.Command(bash, "-c", prog)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), "no_subscribers")
}

// The process exits on SIGTERM like on ^C: sub ends with exit code 0.
func TestSubStopsOnSignal(t *testing.T) {
	d := startDaemon(t)
	sub := startCLI(t, d.socket, "sub", "x.>")
	waitFor(t, &sub.stderr, "subscribed to x.>")
	require.NoError(t, sub.cmd.Process.Signal(syscall.SIGTERM))
	assert.Equal(t, exitOK, sub.wait(t))
}
