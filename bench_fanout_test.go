package agentbus_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus"
)

// deliveries counts deliveries across many subscribers and lets a publisher
// wait, without spinning, until a count is reached.
type deliveries struct {
	n      atomic.Int64
	target atomic.Int64
	tick   chan struct{}
}

func newDeliveries() *deliveries { return &deliveries{tick: make(chan struct{}, 1)} }

func (d *deliveries) hit() {
	if d.n.Add(1) == d.target.Load() {
		select {
		case d.tick <- struct{}{}:
		default:
		}
	}
}

// await blocks until at least want deliveries happened.
func (d *deliveries) await(b *testing.B, want int64) {
	d.target.Store(want)
	for d.n.Load() < want {
		select {
		case <-d.tick:
		case <-time.After(time.Minute):
			if d.n.Load() < want {
				b.Fatalf("only %d of %d deliveries after a minute", d.n.Load(), want)
			}
		}
	}
}

func (d *deliveries) Handle(context.Context, *agentbus.Message) error { d.hit(); return nil }

func (d *deliveries) Receive(c actor.Context) {
	if _, ok := c.Message().(*agentbus.Message); ok {
		d.hit()
	}
}

// BenchmarkFanout publishes from one goroutine to subs subscribers through a
// topic actor, timed until every delivery is handled; msgs/s counts
// deliveries. protoactor is a plain actor that sends each message to the same
// number of PIDs. Both keep at most window publishes in flight, so that
// neither the bus's bounded mailboxes (which would dead-letter the overflow)
// nor protoactor's unbounded ones (which would grow) decide the result.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{10, 100} {
		window := 5000 / subs // publishes in flight; at most window+1 after a send
		b.Run(fmt.Sprintf("subs=%d/bus", subs), func(b *testing.B) {
			bus, d := newBenchBus(b), newDeliveries()
			for i := range subs {
				name := fmt.Sprintf("sub-%d", i)
				// The window bounds outstanding deliveries in total, so
				// one lagging subscriber may hold up to (window+1)×subs.
				if _, err := bus.Spawn(name, d, agentbus.WithMailboxSize((window+1)*subs)); err != nil {
					b.Fatal(err)
				}
				if err := bus.Subscribe("bench.fanout", name); err != nil {
					b.Fatal(err)
				}
			}
			msg := agentbus.NewMessage(agentbus.TypePublish, "bench", benchPayload).WithTopic("bench.fanout")
			ctx := context.Background()
			b.ReportAllocs()
			var sent int64
			for b.Loop() {
				if sent >= int64(window) {
					d.await(b, (sent-int64(window))*int64(subs))
				}
				if _, err := bus.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
				sent++
			}
			b.StartTimer()
			d.await(b, sent*int64(subs))
			b.StopTimer()
			if n := bus.DeadLetters().Len(); n > 0 {
				b.Fatalf("%d dead letters", n)
			}
			b.ReportMetric(float64(sent*int64(subs))/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(fmt.Sprintf("subs=%d/protoactor", subs), func(b *testing.B) {
			sys, d := newProtoSystem(b), newDeliveries()
			pids := make([]*actor.PID, subs)
			for i := range pids {
				pids[i] = sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return d }))
			}
			topic := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
				if m, ok := c.Message().(*agentbus.Message); ok {
					for _, pid := range pids {
						c.Send(pid, m)
					}
				}
			}))
			msg := agentbus.NewMessage(agentbus.TypePublish, "bench", benchPayload).WithTopic("bench.fanout")
			b.ReportAllocs()
			var sent int64
			for b.Loop() {
				if sent >= int64(window) {
					d.await(b, (sent-int64(window))*int64(subs))
				}
				sys.Root.Send(topic, msg)
				sent++
			}
			b.StartTimer()
			d.await(b, sent*int64(subs))
			b.StopTimer()
			b.ReportMetric(float64(sent*int64(subs))/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
