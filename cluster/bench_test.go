package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/descartes/agentbus"
)

// benchPayload is a ~128-byte JSON payload, like an agent's task message.
var benchPayload = []byte(`{"task":"summarize","doc":"reports/q3-revenue.md","budget":{"tokens":4000,"seconds":30},"tags":["finance","urgent"]}`)

// benchPeer is a node process with a bus agent "bench" (counts messages,
// answers requests) and a raw protoactor actor "raw" on its own remote
// (counts BytesValue, answers StringValue with the count so far, echoes
// anything else), and, in this process, a bus node joined to it and a raw
// protoactor system with remote: the two nodes on 127.0.0.1, measured
// against each other in the same run.
type benchPeer struct {
	proc   *proc
	bus    *agentbus.Bus
	raw    *actor.ActorSystem
	rem    *remote.Remote
	rawPID *actor.PID
}

var (
	benchOnce sync.Once
	benchErr  error
	bench     benchPeer
)

func peer(b *testing.B) *benchPeer {
	benchOnce.Do(func() { benchErr = startBenchPeer(b) })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return &bench
}

// startBenchPeer starts the peer process; it lives until the test binary
// exits (its stdin closes then).
func startBenchPeer(b *testing.B) error {
	name := fmt.Sprintf("bench-%d", os.Getpid())
	p, err := startProc(name, "peer", "")
	if p != nil {
		bench.proc = p
	}
	if err != nil {
		return err
	}
	if r, err := p.call(command{Op: "spawn", Name: "bench", Kind: "bench"}); err != nil || r.Err != "" {
		return fmt.Errorf("spawn: %v %s", err, r.Err)
	}
	r, err := p.call(command{Op: "raw"})
	if err != nil || r.Err != "" {
		return fmt.Errorf("raw: %v %s", err, r.Err)
	}
	bus, err := agentbus.New(agentbus.Config{Cluster: &agentbus.ClusterConfig{Name: name, NodeName: "local", Window: 8192,
		Seeds: []string{p.info.Addr}}})
	if err != nil {
		return err
	}
	// Setup, outside any measurement: poll until the peer's agent is known.
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if m, ok := bus.Cluster().Where("bench"); ok && !m.Self {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			return fmt.Errorf("the peer's agent is not visible")
		}
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	rem := remote.NewRemote(sys, remote.Configure("127.0.0.1", 0))
	rem.Start() // a second remote in this process: benchmarks do not run under the race detector
	bench.bus, bench.raw, bench.rem, bench.rawPID = bus, sys, rem, actor.NewPID(r.Remote, "raw")
	return nil
}

// stopBenchPeer stops what the benchmarks started, if they ran.
func stopBenchPeer() {
	if bench.bus != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bench.bus.Shutdown(ctx)
	}
	if bench.rem != nil {
		bench.rem.Shutdown(true)
		bench.raw.Shutdown()
	}
	if bench.proc != nil {
		bench.proc.stop()
	}
}

func sendMsg() *agentbus.Message {
	return agentbus.NewMessage(agentbus.TypeDirect, "bench", benchPayload).WithRecipient("bench")
}

// BenchmarkClusterSend measures one-way messages from this node to an agent
// on another node process, on 127.0.0.1, until all are delivered: the bus
// (Send; delivered once the peer's agent handled them) against raw
// protoactor remote (Send of a BytesValue between the same two hosts'
// actor systems) and NATS (publish to a subscriber, embedded server over
// TCP loopback).
func BenchmarkClusterSend(b *testing.B) {
	p := peer(b)
	b.Run("bus", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.bus.Send(ctx, sendMsg()); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		// A request behind them in the same mailbox: answered once every
		// message before it was handled.
		if _, err := p.bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "bench", nil).WithRecipient("bench")); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("protoactor", func(b *testing.B) {
		msg := &wrapperspb.BytesValue{Value: benchPayload}
		b.ReportAllocs()
		for b.Loop() {
			p.raw.Root.Send(p.rawPID, msg)
		}
		b.StartTimer()
		if _, err := p.raw.Root.RequestFuture(p.rawPID, &wrapperspb.StringValue{}, time.Minute).Result(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("nats", func(b *testing.B) {
		pub, sub := natsPair(b)
		var got atomic.Int64
		done := make(chan struct{}, 1)
		want := int64(0)
		s, err := sub.Subscribe("bench", func(*nats.Msg) {
			if got.Add(1) == atomic.LoadInt64(&want) {
				done <- struct{}{}
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		_ = s.SetPendingLimits(-1, -1)
		if err := sub.Flush(); err != nil {
			b.Fatal(err)
		}
		atomic.StoreInt64(&want, int64(b.N))
		b.ReportAllocs()
		for b.Loop() {
			if err := pub.Publish("bench", benchPayload); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if got.Load() < int64(b.N) {
			select {
			case <-done:
			case <-time.After(time.Minute):
				b.Fatalf("%d of %d", got.Load(), b.N)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}

// BenchmarkClusterRequest measures sequential request/response round trips
// to an agent on another node process: the bus (Request/Reply) against raw
// protoactor remote (RequestFuture of a BytesValue, echoed) and NATS
// (Request to a responder on another connection).
func BenchmarkClusterRequest(b *testing.B) {
	p := peer(b)
	run := func(b *testing.B, once func() error) {
		lat := make([]time.Duration, 0, 1<<16)
		b.ReportAllocs()
		for b.Loop() {
			t0 := time.Now()
			if err := once(); err != nil {
				b.Fatal(err)
			}
			if len(lat) < cap(lat) {
				lat = append(lat, time.Since(t0))
			}
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("bus", func(b *testing.B) {
		ctx := context.Background()
		run(b, func() error {
			_, err := p.bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "bench", benchPayload).
				WithRecipient("bench"))
			return err
		})
	})
	b.Run("protoactor", func(b *testing.B) {
		msg := &wrapperspb.BytesValue{Value: benchPayload}
		run(b, func() error {
			_, err := p.raw.Root.RequestFuture(p.rawPID, msg, 10*time.Second).Result()
			return err
		})
	})
	b.Run("nats", func(b *testing.B) {
		cli, srv := natsPair(b)
		if _, err := srv.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			b.Fatal(err)
		}
		if err := srv.Flush(); err != nil {
			b.Fatal(err)
		}
		run(b, func() error {
			_, err := cli.Request("echo", benchPayload, 10*time.Second)
			return err
		})
	})
}

// natsPair starts an embedded nats-server on a free 127.0.0.1 port and
// returns two connections to it over TCP; all stop when b ends.
func natsPair(b *testing.B) (*nats.Conn, *nats.Conn) {
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server did not start")
	}
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	conns := make([]*nats.Conn, 2)
	for i := range conns {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		conns[i] = nc
	}
	return conns[0], conns[1]
}
