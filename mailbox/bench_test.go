package mailbox

import (
	"fmt"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

// BenchmarkQueue pushes and pops one message per iteration at mixed
// priorities, with depth messages already queued.
func BenchmarkQueue(b *testing.B) {
	for _, depth := range []int{0, 100, 10000} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			var q queue
			for i := range depth {
				q.push(i%levels, entry{v: i})
			}
			v := any(1) // boxed once, so allocations are the queue's own
			p := 0
			b.ReportAllocs()
			for b.Loop() {
				p = (p + 37) % levels
				q.push(p, entry{v: v})
				if _, ok := q.pop(); !ok {
					b.Fatal("empty queue")
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// countInvoker counts what a mailbox delivers.
type countInvoker struct{ n int }

func (c *countInvoker) InvokeSystemMessage(any)  {}
func (c *countInvoker) InvokeUserMessage(any)    { c.n++ }
func (c *countInvoker) EscalateFailure(any, any) {}

// BenchmarkMailbox posts one message per iteration through a synchronized
// dispatcher, which delivers it on the posting goroutine: the cost of a
// post, a dequeue and the bookkeeping around them.
func BenchmarkMailbox(b *testing.B) {
	for _, shared := range []bool{false, true} {
		b.Run(fmt.Sprintf("shared=%t", shared), func(b *testing.B) {
			inv := &countInvoker{}
			cfg := Config{Capacity: 1024}
			if shared {
				cfg.Shared = NewLimit(1024)
			}
			m := New(cfg)
			m.RegisterHandlers(inv, actor.NewSynchronizedDispatcher(300))
			m.Start()
			msg := &item{prio: DefaultPriority}
			b.ReportAllocs()
			for b.Loop() {
				if err := m.TryPost(msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			if inv.n != b.N {
				b.Fatalf("delivered %d of %d", inv.n, b.N)
			}
		})
	}
}
