package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/testutil"
	"github.com/descartes/agentbus/transport/transporttest"
)

// TestMain runs the command itself when the test binary is started as the
// daemon by a test (AGENTBUS_TEST_MAIN=1), so that integration tests run the
// real daemon as a real process without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("AGENTBUS_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	// A daemon started without --data-dir keeps its store under the
	// user's state directory: give the tests (and the daemons they start,
	// which inherit it) one of their own, never the user's.
	state, err := os.MkdirTemp("", "agentbus-state-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Setenv("XDG_STATE_HOME", state)
	code := m.Run()
	if code == 0 { // as goleak.VerifyTestMain, which would exit before the cleanup
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: errors on successful test run:", err)
			code = 1
		}
	}
	os.RemoveAll(state)
	os.Exit(code)
}

// raceExitFast keeps a subprocess built with -race from waiting a second
// at exit (the race runtime's default), which would add up over the tests.
const raceExitFast = "GORACE=atexit_sleep_ms=0"

// proc is the daemon running as a subprocess.
type proc struct {
	cmd    *exec.Cmd
	socket string
	stderr testutil.SyncBuffer
	done   chan error
}

func (p *proc) log() string { return p.stderr.String() }

// shortDir returns a directory whose path fits a socket address.
var shortDir = transporttest.ShortDir

// startDaemon runs `agentbus serve` with args on a fresh socket and waits
// until it accepts connections.
func startDaemon(t *testing.T, args ...string) *proc {
	t.Helper()
	return startDaemonAt(t, filepath.Join(shortDir(t), "bus.sock"), args...)
}

// startDaemonAt is startDaemon on socket.
func startDaemonAt(t *testing.T, socket string, args ...string) *proc {
	t.Helper()
	p := startProc(t, socket, args...)
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", p.socket)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 20*time.Second, 5*time.Millisecond, "daemon did not start: %s", p.log())
	return p
}

func startProc(t *testing.T, socket string, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	p := &proc{socket: socket, done: make(chan error, 1)}
	// A data directory of its own (args may name another): daemons that run
	// together do not share one.
	p.cmd = exec.Command(exe, append([]string{"serve", "--socket", socket, "--data-dir", t.TempDir()}, args...)...)
	p.cmd.Env = append(os.Environ(), "AGENTBUS_TEST_MAIN=1", raceExitFast)
	p.cmd.Stderr = &p.stderr
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit error.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not stop: %s", p.log())
		return nil
	}
}

// cli runs the command line in this process and returns its exit code and
// output.
func cli(t *testing.T, socket string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"--socket", socket}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func dialClient(t *testing.T, socket string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, socket, client.Options{Name: "test"})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func TestDaemonEndToEnd(t *testing.T) {
	d := startDaemon(t, "--history")
	fi, err := os.Stat(d.socket)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "socket mode")
	assert.Equal(t, os.ModeSocket, fi.Mode().Type())

	// A worker answers requests.
	w := dialClient(t, d.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.Register(ctx, "worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := w.Reply(ctx, m, []byte(`{"echo":`+string(m.Payload)+`}`))
		return err
	})))
	code, out, errOut := cli(t, d.socket, "req", "--to", "worker", `{"n":1}`)
	require.Equal(t, 0, code, errOut)
	assert.JSONEq(t, `{"echo":{"n":1}}`, out)

	// sub prints what pub publishes.
	type result struct {
		code     int
		out, err string
	}
	subDone := make(chan result, 1)
	go func() {
		code, out, errOut := cli(t, d.socket, "sub", "--json", "--count", "1", "--as", "watcher", "progress.>")
		subDone <- result{code, out, errOut}
	}()
	// Publish until the subscriber, which starts concurrently, has one.
	var pubIDs []string
	var r result
	for r.out == "" {
		code, out, errOut = cli(t, d.socket, "pub", "progress.build", "-p", "70", `{"done":50}`)
		require.Equal(t, 0, code, errOut)
		pubIDs = append(pubIDs, strings.TrimSpace(out))
		select {
		case r = <-subDone:
			require.Equal(t, 0, r.code, r.err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	var m agentbus.Message
	require.NoError(t, json.Unmarshal([]byte(r.out), &m))
	assert.Contains(t, pubIDs, m.ID)
	assert.Equal(t, "progress.build", m.Topic)
	assert.EqualValues(t, 70, m.Priority)

	// send: human and JSON output; errors have exit code 1.
	code, out, errOut = cli(t, d.socket, "send", "--to", "worker", "plain text")
	require.Equal(t, 0, code, errOut)
	assert.NotEmpty(t, strings.TrimSpace(out))
	code, _, errOut = cli(t, d.socket, "send", "--to", "nobody", "{}")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errOut, `send to "nobody": no agent of that name is registered`)

	// Publishing to nobody dead-letters; dlq list shows it, replay resends.
	code, _, errOut = cli(t, d.socket, "pub", "void.topic", `1`)
	require.Equal(t, 0, code, errOut)
	var letters []client.Letter
	require.Eventually(t, func() bool {
		code, out, _ := cli(t, d.socket, "dlq", "list", "--json", "--topic", "void.topic")
		return code == 0 && json.Unmarshal([]byte(out), &letters) == nil && len(letters) == 1
	}, 10*time.Second, 10*time.Millisecond)
	code, out, _ = cli(t, d.socket, "dlq", "list")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "no_subscribers")
	code, _, errOut = cli(t, d.socket, "dlq", "replay", fmt.Sprint(letters[0].Seq), "--to", "worker")
	require.Equal(t, 0, code, errOut)
	code, _, errOut = cli(t, d.socket, "dlq", "replay", "999999")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errOut, "replay dead letter 999999: the dead-letter queue does not hold it")

	// history and stats.
	code, out, errOut = cli(t, d.socket, "history", "--topic", "progress.>")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "progress.build")
	code, out, errOut = cli(t, d.socket, "stats")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "worker")
	code, out, errOut = cli(t, d.socket, "stats", "--json")
	require.Equal(t, 0, code, errOut)
	assert.True(t, json.Valid([]byte(out)), out)

	// SIGTERM: a clean exit, and the socket is gone.
	require.NoError(t, d.stop(t))
	_, err = os.Stat(d.socket)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, d.log(), "agentbus daemon stopped")
}

func TestUsageAndExitCodes(t *testing.T) {
	missing := filepath.Join(shortDir(t), "none.sock")
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown command", []string{"teleport"}, exitUsage, "unknown command"},
		{"unknown flag", []string{"send", "--bogus"}, exitUsage, "unknown flag"},
		{"missing agent", []string{"send", "{}"}, exitUsage, "give AGENT and PAYLOAD"},
		{"too many args", []string{"pub", "a", "b", "c"}, exitUsage, "accepts 2 arg"},
		{"bad priority", []string{"send", "--to", "x", "-p", "101", "{}"}, exitUsage, "--priority"},
		{"bad seq", []string{"dlq", "replay", "abc"}, exitUsage, "SEQ"},
		{"bad type", []string{"history", "--type", "telegram"}, exitUsage, "--type"},
		{"negative count", []string{"sub", "--count", "-1", "x"}, exitUsage, "--count"},
		{"unreachable", []string{"stats"}, exitUnreachable, "(the socket does not exist): is \"agentbus serve\" running?"},
		{"bad socket mode", []string{"serve", "--socket-mode", "999"}, exitUsage, "--socket-mode"},
		{"bad duration", []string{"serve", "--request-timeout", "soon"}, exitUsage, "--request-timeout"},
		{"non-loopback metrics", []string{"serve", "--metrics", "0.0.0.0:9464"}, exitUsage, "loopback"},
		{"bad uid", []string{"serve", "--allow-uids", "root"}, exitUsage, "--allow-uids"},
		{"negative size", []string{"serve", "--mailbox-size", "-1"}, exitUsage, "negative"},
		{"missing config", []string{"serve", "--config", "/nonexistent.json"}, exitUsage, "config"},
		{"bad commit policy", []string{"serve", "--commit", "sometimes"}, exitUsage, "--commit"},
		{"negative store bound", []string{"serve", "--max-store-bytes", "-1"}, exitUsage, "--max-store-bytes"},
		{"bad dedup window", []string{"serve", "--dedup-window", "a while"}, exitUsage, "dedup-window"},
		// Item 4 of issue 17: each found locally (the socket is missing, so
		// a check left to the daemon would exit 3).
		{"unknown subcommand", []string{"dlq", "bogus"}, exitUsage, `unknown command "bogus" for "agentbus dlq"`},
		{"unknown subcommand suggested", []string{"dlq", "lst"}, exitUsage, `did you mean "list"?`},
		{"bad reason", []string{"dlq", "list", "--reason", "bogus"}, exitUsage, `--reason: "bogus" is not one of`},
		{"bad send type", []string{"send", "--type", "request", "x", "{}"}, exitUsage, `--type: "request" is not one of`},
		{"bad log level", []string{"serve", "--log-level", "loud"}, exitUsage, "--log-level"},
		{"bad log format", []string{"serve", "--log-format", "xml"}, exitUsage, "--log-format"},
		{"bad shell", []string{"completion", "tcsh"}, exitUsage, "completion takes one shell"},
		{"bad ping count", []string{"ping", "-c", "0"}, exitUsage, "--count"},
		{"bad timeout", []string{"stats", "--timeout", "0s"}, exitUsage, "--timeout"},
		{"bad reconnect wait", []string{"sub", "--reconnect-wait", "-1s", "x"}, exitUsage, "--reconnect-wait"},
		{"bad pattern", []string{"sub", "a..b"}, exitUsage, "PATTERN"},
		{"bad topic", []string{"pub", "a.*", "1"}, exitUsage, "TOPIC"},
		{"purge without force", []string{"dlq", "purge"}, exitUsage, "--force"},
		{"bad get seq", []string{"dlq", "get", "0"}, exitUsage, "SEQ"},
		{"payload and --to", []string{"send", "--to", "x", "a", "b"}, exitUsage, "with --to, give only the PAYLOAD"},
		{"bad payload", []string{"req", "x", "{"}, exitUsage, "not valid JSON"},
		{"json on serve", []string{"serve", "--json"}, exitUsage, "unknown flag: --json"},
		{"timeout on serve", []string{"serve", "--timeout", "1s"}, exitUsage, "unknown flag: --timeout"},
		{"missing flag value", []string{"stats", "--timeout"}, exitUsage, "flag needs an argument"},
		{"bad flag value", []string{"history", "--limit", "many"}, exitUsage, "invalid argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := cli(t, missing, tc.args...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Contains(t, errOut, tc.msg)
		})
	}
	for _, group := range [][]string{{}, {"dlq"}} {
		code, out, _ := cli(t, missing, group...)
		assert.Equal(t, exitOK, code, "a group alone prints its help")
		assert.Contains(t, out, "Usage:")
	}
	code, out, _ := cli(t, missing, "--help")
	assert.Equal(t, 0, code)
	for _, c := range []string{"serve", "send", "pub", "sub", "req", "stats", "dlq", "history"} {
		assert.Contains(t, out, c)
	}
}

func TestConfigFile(t *testing.T) {
	dir := shortDir(t)
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"max_pending": "lots"}`), 0o600))
	code, _, errOut := cli(t, filepath.Join(dir, "s"), "serve", "--config", bad)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "max_pending")
	unknown := filepath.Join(dir, "unknown.json")
	require.NoError(t, os.WriteFile(unknown, []byte(`{"max_pendings": 5}`), 0o600))
	code, _, errOut = cli(t, filepath.Join(dir, "s"), "serve", "--config", unknown)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "max_pendings")

	good := filepath.Join(dir, "good.json")
	require.NoError(t, os.WriteFile(good, []byte(`{"socket_mode":"0640","history":true,"max_pending":50}`), 0o600))
	d := startDaemon(t, "--config", good)
	fi, err := os.Stat(d.socket)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
}

func TestSocketOwnership(t *testing.T) {
	d := startDaemon(t)
	// A second daemon on the same socket refuses to start and leaves the
	// first one serving.
	var errb bytes.Buffer
	code := run([]string{"serve", "--socket", d.socket, "--data-dir", ""}, strings.NewReader(""), io.Discard, &errb)
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errb.String(), "another daemon is serving "+d.socket)
	_, err := dialClient(t, d.socket).Ping(context.Background())
	require.NoError(t, err)

	// A stale socket (its daemon was killed) is replaced.
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	require.NoError(t, l.Close())
	p := startProc(t, stale)
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", stale)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 20*time.Second, 5*time.Millisecond, p.log())

	// A socket path in a missing directory is a clear error.
	code = run([]string{"serve", "--data-dir", "", "--socket", filepath.Join(dir, "no", "such", "dir.sock")}, strings.NewReader(""),
		io.Discard, &errb)
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errb.String(), "no/such")
}

// rawConn speaks the protocol by hand over the daemon's socket.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func dialRaw(t *testing.T, socket string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", socket)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, rd: bufio.NewReaderSize(c, 1<<16)}
}

func (r *rawConn) write(s string) {
	r.t.Helper()
	_, err := r.c.Write([]byte(s))
	require.NoError(r.t, err)
}

func (r *rawConn) read() *protocol.Frame {
	r.t.Helper()
	require.NoError(r.t, r.c.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err := r.rd.ReadBytes('\n')
	require.NoError(r.t, err)
	f, err := protocol.Decode(bytes.TrimSpace(line))
	require.NoError(r.t, err, string(line))
	return f
}

func TestDaemonBadInput(t *testing.T) {
	d := startDaemon(t, "--max-message-size", "2048")
	r := dialRaw(t, d.socket)
	r.write(`{"op":"hello","id":"1","version":1}` + "\n")
	require.Equal(t, protocol.OpWelcome, r.read().Op)
	r.write(`{"op":"register","id":"2","agent":"me"}` + "\n")
	require.Equal(t, protocol.OpOK, r.read().Op)
	other := dialClient(t, d.socket)
	require.NoError(t, other.Register(context.Background(), "victim", agentbus.HandlerFunc(
		func(context.Context, *agentbus.Message) error { return nil })))

	for _, tc := range []struct{ name, frame, code string }{
		{"not json", "hello there\n", protocol.CodeInvalidFrame},
		{"invalid utf-8", "{\"op\":\"ping\",\"x\":\"\xff\xfe\"}\n", protocol.CodeInvalidFrame},
		{"wrong types", `{"op":"send","id":3,"message":[]}` + "\n", protocol.CodeInvalidFrame},
		{"unknown op", `{"op":"fly","id":"4"}` + "\n", protocol.CodeUnknownOp},
		{"missing fields", `{"op":"subscribe","id":"5"}` + "\n", protocol.CodeInvalidFrame},
		{"oversized", `{"op":"ping","pad":"` + strings.Repeat("x", 200_000) + `"}` + "\n", protocol.CodeFrameTooLarge},
		{"spoofed sender", `{"op":"send","id":"6","message":{"sender":"victim","recipient":"victim"}}` + "\n", protocol.CodeNotRegistered},
		{"too large message", `{"op":"send","id":"7","message":{"recipient":"victim","payload":"` + strings.Repeat("y", 4000) + `"}}` + "\n", protocol.CodeMessageTooLarge},
		{"crlf and blank lines", "\r\n\n{\"op\":\"fly\",\"id\":\"8\"}\r\n", protocol.CodeUnknownOp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.t = t
			r.write(tc.frame)
			f := r.read()
			require.Equal(t, protocol.OpError, f.Op)
			assert.Equal(t, tc.code, f.Code, f.Error)
		})
	}
	r.t = t
	r.write(`{"op":"ping","id":"9"}` + "\n")
	require.Equal(t, protocol.OpPong, r.read().Op, "the connection survived every bad frame")

	// A partial line, then disconnect: the daemon goes on serving.
	p := dialRaw(t, d.socket)
	p.write(`{"op":"hello","version":1`)
	require.NoError(t, p.c.Close())
	_, err := other.Ping(context.Background())
	require.NoError(t, err)
}

func TestSlowClientIsBackpressured(t *testing.T) {
	d := startDaemon(t, "--mailbox-size", "8", "--outbound-queue", "4", "--backpressure-timeout", "200ms")
	// A client that registers and then never reads.
	slow := dialRaw(t, d.socket)
	slow.write(`{"op":"hello","id":"1","version":1}` + "\n" + `{"op":"register","id":"2","agent":"slow"}` + "\n")
	require.Equal(t, protocol.OpWelcome, slow.read().Op)
	require.Equal(t, protocol.OpOK, slow.read().Op)
	fast := dialClient(t, d.socket)
	ctx := context.Background()
	payload := []byte(`"` + strings.Repeat("z", 60_000) + `"`)
	var sent int
	var err error
	for sent = 0; sent < 10_000; sent++ {
		m := agentbus.NewMessage(agentbus.TypeDirect, "", payload)
		m.Recipient = "slow"
		if _, err = fast.Send(ctx, m); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, agentbus.ErrBackpressureTimeout, "after %d messages", sent)
	// The slow client's backlog is bounded: socket buffers, 4 queued
	// frames, one in the handler, 8 in the mailbox.
	assert.Less(t, sent, 200)
	// It disconnects: what was queued for it is dead-lettered.
	require.NoError(t, slow.c.Close())
	require.Eventually(t, func() bool {
		letters, err := fast.DeadLetters(ctx, client.LetterFilter{Reason: "transport_closed"})
		return err == nil && len(letters) >= 8
	}, 10*time.Second, 10*time.Millisecond)
}

func TestMetricsEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	d := startDaemon(t, "--metrics", addr)
	c := dialClient(t, d.socket)
	_, err = c.Publish(context.Background(), "nobody.home", []byte(`1`))
	require.NoError(t, err)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	require.Eventually(t, func() bool {
		code, body := get("/metrics")
		return code == 200 && strings.Contains(body, `agentbus_dead_letters_total{reason="no_subscribers"} 1`)
	}, 10*time.Second, 10*time.Millisecond)
	_, body := get("/metrics")
	for _, family := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total",
		"process_resident_memory_bytes"} {
		assert.Contains(t, body, "\n"+family+" ", "the standard Go and process collectors")
	}
	code, body := get("/healthz")
	assert.Equal(t, 200, code)
	assert.Equal(t, "ok\n", body)
}
