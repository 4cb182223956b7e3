package agentbus_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/testutil"
)

// benchPayload is a ~128-byte JSON payload, like an agent's task message.
var benchPayload = []byte(`{"task":"summarize","doc":"reports/q3-revenue.md","budget":{"tokens":4000,"seconds":30},"tags":["finance","urgent"]}`)

// counter is a handler (and protoactor actor) that counts messages and
// signals when it has seen want of them.
type counter struct {
	n    atomic.Int64
	want atomic.Int64
	done chan struct{}
}

func newCounter() *counter { return &counter{done: make(chan struct{}, 1)} }

func (c *counter) expect(n int) { c.n.Store(0); c.want.Store(int64(n)) }

func (c *counter) hit() {
	if c.n.Add(1) == c.want.Load() {
		c.done <- struct{}{}
	}
}

func (c *counter) Handle(context.Context, *agentbus.Message) error { c.hit(); return nil }

func (c *counter) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*agentbus.Message); ok {
		c.hit()
	}
}

// drain waits, with the timer running, until c has counted every message.
func (c *counter) drain(b *testing.B) {
	b.StartTimer()
	if c.n.Load() < c.want.Load() {
		select {
		case <-c.done:
		case <-time.After(time.Minute):
			b.Fatalf("only %d of %d messages handled", c.n.Load(), c.want.Load())
		}
	}
	b.StopTimer()
}

func newBenchBus(b *testing.B) *agentbus.Bus {
	bus, err := agentbus.New(agentbus.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := bus.Shutdown(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return bus
}

func newProtoSystem(b *testing.B) *actor.ActorSystem {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(discardLogger))
	b.Cleanup(sys.Shutdown)
	return sys
}

func benchMessage() *agentbus.Message {
	return agentbus.NewMessage(agentbus.TypeDirect, "bench", benchPayload).WithRecipient("sink")
}

func msgsPerSec(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// cpuPerMsg reports the CPU time the process used since the reading start,
// sender, agent and collector together, per message of n: what a message
// costs the machine, beside the time per message, which also depends on
// how much of the sender's and the agent's work overlaps.
func cpuPerMsg(b *testing.B, start time.Duration, n int) {
	if n > 0 {
		b.ReportMetric(float64(testutil.CPUTime()-start)/float64(n), "cpu-ns/msg")
	}
}

// BenchmarkSend sends from one goroutine to one agent, timed until every
// message is handled. bus sends one prebuilt message, as protoactor does;
// bus-new builds and validates a fresh message (UUIDv7, JSON check) per send.
func BenchmarkSend(b *testing.B) {
	bus := func(next func() *agentbus.Message) func(*testing.B) {
		return func(b *testing.B) {
			bus, c := newBenchBus(b), newCounter()
			if _, err := bus.Spawn("sink", c); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			c.expect(0)
			runtime.GC() // untimed (b.Loop starts the clock): the garbage of the sub-benchmark before is not collected on this one's time
			cpu := testutil.CPUTime()
			n := 0
			for b.Loop() {
				if _, err := bus.Send(ctx, next()); err != nil {
					b.Fatal(err)
				}
				n++
			}
			c.want.Store(int64(n))
			c.drain(b)
			msgsPerSec(b)
			cpuPerMsg(b, cpu, n)
		}
	}
	msg := benchMessage()
	b.Run("bus", bus(func() *agentbus.Message { return msg }))
	b.Run("bus-new", bus(benchMessage))
	b.Run("protoactor", protoSend())
}

// protoSend is BenchmarkSend's protoactor side: one sender, one actor built
// with opts, timed until every message is handled.
func protoSend(opts ...actor.PropsOption) func(*testing.B) {
	return func(b *testing.B) {
		sys, c := newProtoSystem(b), newCounter()
		pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return c }, opts...))
		msg := benchMessage()
		b.ReportAllocs()
		c.expect(0)
		runtime.GC() // untimed, as on the bus side
		cpu := testutil.CPUTime()
		n := 0
		for b.Loop() {
			sys.Root.Send(pid, msg)
			n++
		}
		c.want.Store(int64(n))
		c.drain(b)
		msgsPerSec(b)
		cpuPerMsg(b, cpu, n)
	}
}

// BenchmarkSendBounded is BenchmarkSend's protoactor side on protoactor's own
// bounded mailbox (capacity 1024, as an agent's), for comparison: a full
// Bounded mailbox makes the sender spin instead of park, and it has no
// priorities.
func BenchmarkSendBounded(b *testing.B) { protoSend(actor.WithMailbox(actor.Bounded(1024)))(b) }

// BenchmarkSendParallel sends from two goroutines to one agent.
func BenchmarkSendParallel(b *testing.B) {
	run := func(b *testing.B, send func()) {
		b.ReportAllocs()
		b.SetParallelism(1) // GOMAXPROCS senders: two on the reference machine
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				send()
			}
		})
	}
	b.Run("bus", func(b *testing.B) {
		bus, c := newBenchBus(b), newCounter()
		if _, err := bus.Spawn("sink", c); err != nil {
			b.Fatal(err)
		}
		msg, ctx := benchMessage(), context.Background()
		c.expect(b.N)
		run(b, func() {
			if _, err := bus.Send(ctx, msg); err != nil {
				b.Error(err)
			}
		})
		b.StopTimer()
		c.drain(b)
		msgsPerSec(b)
	})
	b.Run("protoactor", func(b *testing.B) {
		sys, c := newProtoSystem(b), newCounter()
		pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return c }))
		msg := benchMessage()
		c.expect(b.N)
		run(b, func() { sys.Root.Send(pid, msg) })
		b.StopTimer()
		c.drain(b)
		msgsPerSec(b)
	})
}

// latencies keeps the last samples of a benchmark without allocating.
type latencies struct {
	buf [1 << 16]time.Duration
	n   int
}

func (l *latencies) add(d time.Duration) { l.buf[l.n%len(l.buf)] = d; l.n++ }

func (l *latencies) report(b *testing.B) {
	s := slices.Clone(l.buf[:min(l.n, len(l.buf))])
	slices.Sort(s)
	if len(s) == 0 {
		return
	}
	b.ReportMetric(float64(s[len(s)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(s[len(s)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkRequest measures sequential request/response round trips.
func BenchmarkRequest(b *testing.B) {
	b.Run("bus", func(b *testing.B) {
		bus := newBenchBus(b)
		_, err := bus.Spawn("echo", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
			_, err := bus.Reply(ctx, m, m.Payload)
			return err
		}))
		if err != nil {
			b.Fatal(err)
		}
		ctx, lat := context.Background(), new(latencies)
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			_, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "bench", benchPayload).WithRecipient("echo"))
			if err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(start))
		}
		lat.report(b)
		msgsPerSec(b)
	})
	b.Run("protoactor", func(b *testing.B) {
		sys := newProtoSystem(b)
		pid := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			if m, ok := c.Message().(*agentbus.Message); ok {
				c.Respond(m)
			}
		}))
		lat := new(latencies)
		b.ReportAllocs()
		for b.Loop() {
			start := time.Now()
			msg := agentbus.NewMessage(agentbus.TypeRequest, "bench", benchPayload).WithRecipient("echo")
			if _, err := sys.Root.RequestFuture(pid, msg, 30*time.Second).Result(); err != nil {
				b.Fatal(err)
			}
			lat.add(time.Since(start))
		}
		lat.report(b)
		msgsPerSec(b)
	})
}

// heapInUse returns live heap plus stack bytes after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// BenchmarkQueuedMemory queues queuedN distinct messages (sharing one payload)
// behind a blocked agent and reports the memory each one holds: B/msg with the
// message itself, queue-B/msg for the queue's share alone.
func BenchmarkQueuedMemory(b *testing.B) {
	const queuedN = 100_000
	measure := func(b *testing.B, block func() (send func(*agentbus.Message), release func())) {
		var perMsg, perSlot float64
		for b.Loop() {
			b.StopTimer()
			msgs := make([]*agentbus.Message, queuedN)
			for i := range msgs {
				msgs[i] = benchMessage()
			}
			send, release := block()
			before := heapInUse()
			b.StartTimer()
			for _, m := range msgs {
				send(m)
			}
			b.StopTimer()
			after := heapInUse()
			perSlot = float64(after-before) / queuedN
			msgsSize := 0.0
			{ // the messages alone: what they hold when not queued
				before := heapInUse()
				extra := make([]*agentbus.Message, queuedN)
				for i := range extra {
					extra[i] = benchMessage()
				}
				msgsSize = float64(heapInUse()-before) / queuedN
				runtime.KeepAlive(extra)
			}
			perMsg = perSlot + msgsSize
			runtime.KeepAlive(msgs)
			release()
			b.StartTimer()
		}
		b.ReportMetric(perMsg, "B/msg")
		b.ReportMetric(perSlot, "queue-B/msg")
	}
	b.Run("bus", func(b *testing.B) {
		bus, err := agentbus.New(agentbus.Config{Backpressure: agentbus.BackpressureConfig{MaxPending: queuedN + 1}})
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Shutdown(context.Background())
		i := 0
		measure(b, func() (func(*agentbus.Message), func()) {
			i++
			name := fmt.Sprintf("sink-%d", i)
			g := newGate(newCounter())
			if _, err := bus.Spawn(name, g, agentbus.WithMailboxSize(queuedN+1)); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := bus.Send(ctx, benchMessage().WithRecipient(name)); err != nil {
				b.Fatal(err)
			}
			<-g.Entered
			return func(m *agentbus.Message) {
					if _, err := bus.Send(ctx, m.WithRecipient(name)); err != nil {
						b.Fatal(err)
					}
				}, func() {
					close(g.Open)
					if err := bus.Stop(ctx, name); err != nil {
						b.Fatal(err)
					}
				}
		})
	})
	b.Run("protoactor", func(b *testing.B) {
		sys := newProtoSystem(b)
		measure(b, func() (func(*agentbus.Message), func()) {
			entered, open := make(chan struct{}), make(chan struct{})
			first := true
			pid := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
				if _, ok := c.Message().(*agentbus.Message); ok && first {
					first = false
					close(entered)
					<-open
				}
			}))
			sys.Root.Send(pid, benchMessage())
			<-entered
			return func(m *agentbus.Message) { sys.Root.Send(pid, m) }, func() {
				close(open)
				_ = sys.Root.StopFuture(pid).Wait()
			}
		})
	})
}
