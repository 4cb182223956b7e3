package crossbench_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/testutil"
	"github.com/descartes/agentbus/transport/transporttest"
)

func TestMain(m *testing.M) {
	runRole() // a re-executed test binary plays its role and exits here
	goleak.VerifyTestMain(m)
}

// payload is the 126-byte JSON payload of every message, as in the
// baseline runs (shared/research/baseline.md).
var payload = []byte(`{"task":"summarize","doc":"reports/q3-revenue.md","budget":{"tokens":4000,"seconds":30},"tags":["finance","urgent","q3-ends"]}`)

// wireMsg is the envelope a NATS user sends: the fields of the bus's
// message that the benchmark's messages use, JSON-encoded per message at
// the sender and decoded and checked at the receiver, as a user of NATS
// must do.
type wireMsg struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Sender    string          `json:"sender"`
	Recipient string          `json:"recipient"`
	Priority  uint8           `json:"priority"`
	Timestamp time.Time       `json:"timestamp"`
	Payload   json.RawMessage `json:"payload"`
}

func newID() string { return uuid.NewString() }

func natsMsg(typ, to string) []byte {
	b, _ := json.Marshal(&wireMsg{ID: newID(), Type: typ, Sender: "producer", Recipient: to, Priority: 50,
		Timestamp: time.Now().UTC(), Payload: payload})
	return b
}

// proc is a re-executed test binary playing a role (see runRole).
type proc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	addr string // what it printed after "ready"
}

// start runs role with arg and waits until it is ready; the process ends
// (its stdin closes) when b does.
func start(b *testing.B, role, arg string) *proc {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role, argEnv+"="+arg)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	require.NoError(b, err)
	out, err := cmd.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, cmd.Start())
	p := &proc{cmd: cmd, in: in, out: bufio.NewReader(out)}
	b.Cleanup(func() {
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := p.out.ReadString('\n')
	require.NoError(b, err, "%s did not start", role)
	ready, addr, _ := strings.Cut(strings.TrimSpace(line), " ")
	require.Equal(b, "ready", ready, "%s said %q", role, line)
	p.addr = addr
	return p
}

// ask sends a command and returns the answer.
func (p *proc) ask(b *testing.B, cmd string) string {
	_, err := fmt.Fprintln(p.in, cmd)
	require.NoError(b, err)
	line, err := p.out.ReadString('\n')
	require.NoError(b, err)
	return strings.TrimSpace(line)
}

func (p *proc) cpu(b *testing.B) time.Duration {
	n, err := strconv.ParseInt(p.ask(b, "cpu"), 10, 64)
	require.NoError(b, err)
	return time.Duration(n)
}

// cpuMeter reads the CPU time of this process, a server and a receiver.
type cpuMeter struct {
	srv, recv          *proc
	self0, srv0, recv0 time.Duration
}

func meter(b *testing.B, srv, recv *proc) *cpuMeter {
	return &cpuMeter{srv: srv, recv: recv, self0: testutil.CPUTime(), srv0: srv.cpu(b), recv0: recv.cpu(b)}
}

// report reports the CPU each side spent per message, in ns.
func (m *cpuMeter) report(b *testing.B, msgs int) {
	self, srv, recv := testutil.CPUTime()-m.self0, m.srv.cpu(b)-m.srv0, m.recv.cpu(b)-m.recv0
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(msgs) }
	b.ReportMetric(per(self), "sender-cpu-ns/msg")
	b.ReportMetric(per(srv), "server-cpu-ns/msg")
	b.ReportMetric(per(recv), "receiver-cpu-ns/msg")
	b.ReportMetric(per(self+srv+recv), "cpu-ns/msg")
}

// reportLatency reports the median and the 99th percentile of lat.
func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// streamBatch is how many messages one iteration of a stream benchmark
// sends; it then waits until the receiver has them all.
const streamBatch = 5000

// BenchmarkCrossProcess measures agentbus against NATS as users run them:
// each server is its own OS process (this test binary re-executed: the
// agentbus daemon with the defaults of `agentbus serve`, or nats-server's
// server with its defaults on loopback TCP), the receivers and responders
// are processes of their own, and the sender or requester is this
// process. Every message is built fresh (a new ID) with the same 126-byte
// JSON payload; NATS messages are JSON-encoded and decoded as a NATS user
// must.
//
//   - bus-stream: one sender, the pipelined client (SendAsync, then Flush
//     per batch of 5,000), to an agent of the receiver process; msgs/s.
//   - nats-stream: one sender, nats.go Publish, then Flush per batch, to a
//     subscription of the receiver process; msgs/s.
//   - bus-roundtrip, nats-roundtrip: Request to the responder process,
//     which answers without waiting for its server (ReplyAsync, Respond);
//     ns/op, p50-ns, p99-ns.
//
// Each also reports the CPU the sender, the server and the receiver spent
// per message (sender-, server-, receiver-cpu-ns/msg, and their sum). For
// the in-process floor of the daemon, see internal/server's
// BenchmarkSocket.
func BenchmarkCrossProcess(b *testing.B) {
	dir := transporttest.ShortDir(b)
	sock := filepath.Join(dir, "bus.sock")
	busSrv := start(b, "bus-server", sock)
	natsSrv := start(b, "nats-server", "")
	busRecv, busEcho := start(b, "bus-recv", sock), start(b, "bus-echo", sock)
	natsRecv, natsEcho := start(b, "nats-recv", natsSrv.addr), start(b, "nats-echo", natsSrv.addr)
	ctx := context.Background()
	bc, err := client.Dial(ctx, sock, client.Options{Name: "crossbench-sender"})
	require.NoError(b, err)
	b.Cleanup(func() { _ = bc.Close() })
	require.NoError(b, bc.Register(ctx, "producer", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil })))
	nc, err := nats.Connect(natsSrv.addr)
	require.NoError(b, err)
	b.Cleanup(nc.Close)

	b.Run("bus-stream", func(b *testing.B) {
		b.ReportAllocs()
		m := meter(b, busSrv, busRecv)
		for b.Loop() {
			for range streamBatch {
				msg := agentbus.NewMessage(agentbus.TypeDirect, "producer", payload).WithRecipient("consumer")
				if _, err := bc.SendAsync(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			if err := bc.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			busRecv.ask(b, "expect "+strconv.Itoa(streamBatch))
		}
		b.ReportMetric(float64(b.N*streamBatch)/b.Elapsed().Seconds(), "msgs/s")
		m.report(b, b.N*streamBatch)
	})
	b.Run("nats-stream", func(b *testing.B) {
		b.ReportAllocs()
		m := meter(b, natsSrv, natsRecv)
		for b.Loop() {
			for range streamBatch {
				if err := nc.Publish("consumer", natsMsg("direct", "consumer")); err != nil {
					b.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				b.Fatal(err)
			}
			natsRecv.ask(b, "expect "+strconv.Itoa(streamBatch))
		}
		b.ReportMetric(float64(b.N*streamBatch)/b.Elapsed().Seconds(), "msgs/s")
		m.report(b, b.N*streamBatch)
	})
	b.Run("bus-roundtrip", func(b *testing.B) {
		b.ReportAllocs()
		m := meter(b, busSrv, busEcho)
		lat := make([]time.Duration, 0, 1024)
		for b.Loop() {
			start := time.Now()
			msg := agentbus.NewMessage(agentbus.TypeRequest, "producer", payload).WithRecipient("echo")
			resp, err := bc.Request(ctx, msg)
			if err != nil {
				b.Fatal(err)
			}
			if len(resp.Payload) != len(payload) {
				b.Fatalf("response payload of %d bytes", len(resp.Payload))
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
		m.report(b, b.N)
	})
	b.Run("nats-roundtrip", func(b *testing.B) {
		b.ReportAllocs()
		m := meter(b, natsSrv, natsEcho)
		lat := make([]time.Duration, 0, 1024)
		for b.Loop() {
			start := time.Now()
			resp, err := nc.Request("echo", natsMsg("request", "echo"), 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			var out wireMsg
			if err := json.Unmarshal(resp.Data, &out); err != nil || len(out.Payload) != len(payload) {
				b.Fatalf("bad response %q: %v", resp.Data, err)
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
		m.report(b, b.N)
	})
}

// The benchmark's payload is the baseline's size.
func TestPayload(t *testing.T) {
	require.Len(t, payload, 126)
	require.True(t, json.Valid(payload))
}
