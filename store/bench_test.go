package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/store"
)

// benchSenders is how many goroutines send at once in BenchmarkDurableSend:
// a daemon serves many clients, and group commit is for them.
const benchSenders = 32

var benchPayload = []byte(`{"task":"review","repo":"agentbus","pr":1234,"files":["durable.go","store/disk.go"]}`)

// parallel runs send from benchSenders goroutines, once for each iteration
// of b.Loop, and reports msgs/s.
func parallel(b *testing.B, send func() error) {
	b.Helper()
	work := make(chan struct{})
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range benchSenders {
		wg.Go(func() {
			for range work {
				if err := send(); err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	b.ReportAllocs()
	for b.Loop() {
		work <- struct{}{}
	}
	b.StartTimer() // the sends still in flight count too
	close(work)
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkDurableSend measures sends to an agent whose messages are kept
// on disk, from 32 senders at once, each waiting for its message to be
// committed, while the agent handles (and so deletes) them:
//
//   - bus: agentbus, a durable agent, the disk store with the batch policy
//     (group commit: every Send returns once fsync'd);
//   - memory: the same agent, not durable (nothing is written);
//   - jetstream: nats-server embedded, a work-queue stream on file storage
//     with sync_interval always (fsync before each publish is acknowledged:
//     the same guarantee as batch), a consumer acking each message;
//   - bus-none and jetstream-nosync: both without fsync (bus: --commit
//     none; jetstream: its default, fsync every 2 minutes).
func BenchmarkDurableSend(b *testing.B) {
	b.Run("bus", func(b *testing.B) { benchBus(b, true, store.Batch) })
	b.Run("memory", func(b *testing.B) { benchBus(b, false, store.Batch) })
	b.Run("jetstream", func(b *testing.B) { benchJetStream(b, true) })
	b.Run("bus-none", func(b *testing.B) { benchBus(b, true, store.None) })
	b.Run("jetstream-nosync", func(b *testing.B) { benchJetStream(b, false) })
}

func benchBus(b *testing.B, durable bool, policy store.Policy) {
	st, err := store.Open(filepath.Join(b.TempDir(), "data"), store.Options{Policy: policy})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	bus, err := agentbus.New(agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := bus.Shutdown(ctx); err != nil {
			b.Error(err)
		}
	}()
	var opts []agentbus.SpawnOption
	if durable {
		opts = append(opts, agentbus.WithDurable())
	}
	handle := agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil })
	if _, err := bus.Spawn("worker", handle, opts...); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	parallel(b, func() error {
		_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "bench", benchPayload).WithRecipient("worker"))
		return err
	})
}

func benchJetStream(b *testing.B, syncAlways bool) {
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: b.TempDir(), SyncAlways: syncAlways, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WORK", Subjects: []string{"work.>"},
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		b.Fatal(err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "worker",
		AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack() })
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	var n atomic.Uint64
	parallel(b, func() error {
		// A new message ID each time, as agentbus gives each message.
		_, err := js.Publish(ctx, "work.review", benchPayload, jetstream.WithMsgID(fmt.Sprint(n.Add(1))))
		return err
	})
}

// BenchmarkRecovery measures a restart with a backlog: opening the disk
// store (which checks every record) and recovering it in agentbus.New (the
// durable agents, detached, with every message queued again). The backlog
// is 10,000 messages over 100 durable agents; AGENTBUS_RECOVERY_MESSAGES
// sets another size (docs/durability.md gives the figure for 1,000,000).
func BenchmarkRecovery(b *testing.B) {
	n := 10_000
	if s := os.Getenv("AGENTBUS_RECOVERY_MESSAGES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 100 {
			b.Fatalf("AGENTBUS_RECOVERY_MESSAGES=%q: want a number of at least 100", s)
		}
		n = v
	}
	const agents = 100
	cfg := agentbus.Config{MailboxSize: n/agents + 1, Backpressure: agentbus.BackpressureConfig{MaxPending: n + agents}}
	// AGENTBUS_RECOVERY_DIR keeps the filled store for the next run (with
	// the same AGENTBUS_RECOVERY_MESSAGES).
	dir := os.Getenv("AGENTBUS_RECOVERY_DIR")
	if dir == "" {
		dir = filepath.Join(b.TempDir(), "data")
	}
	if _, err := os.Stat(filepath.Join(dir, store.FileName)); err != nil {
		fill(b, dir, cfg, n, agents)
	}
	b.Run(fmt.Sprintf("messages=%d", n), func(b *testing.B) {
		var opening, recovering time.Duration
		for b.Loop() {
			start := time.Now()
			st, err := store.Open(dir, store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			opened := time.Now()
			cfg.Durability.Store = st
			bus, err := agentbus.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			opening, recovering = opening+opened.Sub(start), recovering+time.Since(opened)
			b.StopTimer()
			if got := bus.Accounting().InFlight; got != n {
				b.Fatalf("recovered %d messages, want %d", got, n)
			}
			if err := bus.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			if err := st.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		b.ReportMetric(opening.Seconds()/float64(b.N), "open-s")
		b.ReportMetric(recovering.Seconds()/float64(b.N), "recover-s")
	})
}

// fill stores n messages for agents durable agents, none handled, through
// the bus (with the none policy, to be quick).
func fill(b *testing.B, dir string, cfg agentbus.Config, n, agents int) {
	b.Helper()
	st, err := store.Open(dir, store.Options{Policy: store.None})
	if err != nil {
		b.Fatal(err)
	}
	cfg.Durability.Store = st
	bus, err := agentbus.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	for i := range agents {
		name := fmt.Sprintf("agent-%03d", i)
		if _, err := bus.Spawn(name, agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil }),
			agentbus.WithDurable()); err != nil {
			b.Fatal(err)
		}
		if err := bus.Detach(name, nil); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, benchSenders)
	for range benchSenders {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				m := agentbus.NewMessage(agentbus.TypeDirect, "bench", benchPayload).
					WithRecipient(fmt.Sprintf("agent-%03d", i%int64(agents))).WithPriority(uint8(i % 101))
				if _, err := bus.Send(context.Background(), m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	if err := bus.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
}
