package mailbox

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

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

// streamInvoker counts deliveries across goroutines and signals when it has
// seen want of them.
type streamInvoker struct {
	n, want atomic.Int64
	done    chan struct{}
}

func (c *streamInvoker) InvokeSystemMessage(any) {}
func (c *streamInvoker) InvokeUserMessage(any) {
	if c.n.Add(1) == c.want.Load() {
		c.done <- struct{}{}
	}
}
func (c *streamInvoker) EscalateFailure(any, any) {}

// BenchmarkMailboxStream posts from one goroutine to a mailbox whose actor
// runs on protoactor's goroutine dispatcher, timed until every message is
// delivered: the mailbox alone, without the bus, against protoactor's own
// unbounded mailbox doing the same. mailbox is bounded (1024), shares a
// limit and times latency, as the bus configures it.
func BenchmarkMailboxStream(b *testing.B) {
	run := func(b *testing.B, m actor.Mailbox, post func()) {
		inv := &streamInvoker{done: make(chan struct{}, 1)}
		m.RegisterHandlers(inv, actor.NewDefaultDispatcher(300))
		m.Start()
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			post()
			n++
		}
		inv.want.Store(int64(n))
		if inv.n.Load() < int64(n) {
			<-inv.done
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
	msg := &item{prio: DefaultPriority}
	b.Run("mailbox", func(b *testing.B) {
		m := New(Config{Capacity: 1024, Shared: NewLimit(10_000), Latency: &Latency{}})
		defer m.Close(nil)
		run(b, m, func() {
			if err := m.Post(context.Background(), msg, Patience{Wait: time.Minute}); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("protoactor", func(b *testing.B) {
		m := actor.Unbounded()()
		run(b, m, func() { m.PostUserMessage(msg) })
	})
}
