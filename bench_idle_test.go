package agentbus_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus"
)

// idleAgents is how many agents BenchmarkIdleAgent spawns per iteration.
const idleAgents = 10_000

// BenchmarkIdleAgent spawns idleAgents agents, sends each one message and
// waits until every one has handled it and gone idle, then reports what an
// idle agent holds: B/agent is the growth of the live heap and the goroutine
// stacks (after a full collection) from before the first spawn, divided by
// the number of agents. protoactor spawns as many named plain actors on one
// actor system, each handling one message, measured the same way. msgs/s
// counts the agents spawned and served in the timed loop.
func BenchmarkIdleAgent(b *testing.B) {
	names := make([]string, idleAgents)
	for i := range names {
		names[i] = fmt.Sprintf("idle-%d", i)
	}
	// measure runs setup (untimed), then the timed spawn of every agent,
	// then the memory reading; each is a fresh bus or actor system, so a
	// round leaves nothing to the next.
	// slack is how many goroutines may stay once every agent is idle: the
	// bus keeps up to agentbus.AgentIdleGoroutines of its dispatcher's
	// waiting (their stacks count in B/agent).
	measure := func(b *testing.B, slack int, setup func(hits *atomic.Int64) (spawn func(i int), teardown func())) {
		b.ReportAllocs()
		var hits atomic.Int64
		var perAgent float64
		served := 0
		for b.Loop() {
			b.StopTimer()
			hits.Store(0)
			spawn, teardown := setup(&hits)
			goroutines := runtime.NumGoroutine()
			before := heapInUse()
			b.StartTimer()
			for i := range names {
				spawn(i)
			}
			awaitIdle(b, &hits, idleAgents, goroutines+slack)
			b.StopTimer()
			perAgent = float64(int64(heapInUse())-int64(before)) / idleAgents
			served += idleAgents
			teardown()
			b.StartTimer()
		}
		b.ReportMetric(perAgent, "B/agent")
		b.ReportMetric(float64(served)/b.Elapsed().Seconds(), "msgs/s")
	}
	b.Run("bus", func(b *testing.B) {
		measure(b, agentbus.AgentIdleGoroutines, func(hits *atomic.Int64) (func(int), func()) {
			bus, err := agentbus.New(agentbus.Config{})
			if err != nil {
				b.Fatal(err)
			}
			h := agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { hits.Add(1); return nil })
			ctx := context.Background()
			return func(i int) {
					if _, err := bus.Spawn(names[i], h); err != nil {
						b.Fatal(err)
					}
					msg := agentbus.NewMessage(agentbus.TypeDirect, "bench", benchPayload).WithRecipient(names[i])
					if _, err := bus.Send(ctx, msg); err != nil {
						b.Fatal(err)
					}
				}, func() {
					if err := bus.Shutdown(ctx); err != nil {
						b.Fatal(err)
					}
				}
		})
	})
	b.Run("protoactor", func(b *testing.B) {
		measure(b, 0, func(hits *atomic.Int64) (func(int), func()) {
			sys := actor.NewActorSystem(actor.WithLoggerFactory(discardLogger))
			props := actor.PropsFromFunc(func(c actor.Context) {
				if _, ok := c.Message().(*agentbus.Message); ok {
					hits.Add(1)
				}
			})
			return func(i int) {
				pid, err := sys.Root.SpawnNamed(props, names[i])
				if err != nil {
					b.Fatal(err)
				}
				sys.Root.Send(pid, agentbus.NewMessage(agentbus.TypeDirect, "bench", benchPayload).WithRecipient(names[i]))
			}, sys.Shutdown
		})
	})
}

// awaitIdle waits until hits reaches n and the goroutines that ran
// them have exited (the count is back to goroutines), failing after a minute.
func awaitIdle(b *testing.B, hits *atomic.Int64, n int64, goroutines int) {
	deadline := time.Now().Add(time.Minute)
	for hits.Load() < n || runtime.NumGoroutine() > goroutines {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d handled, %d goroutines (want %d) after a minute", hits.Load(), n, runtime.NumGoroutine(), goroutines)
		}
		runtime.Gosched()
	}
}
