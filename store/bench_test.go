package store_test

import (
	"context"
	"fmt"
	"path/filepath"
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
	close(work)
	wg.Wait()
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
