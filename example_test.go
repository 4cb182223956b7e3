package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/supervisor"
)

// An agent that answers requests, and a caller that asks it.
func Example() {
	ctx := context.Background()
	bus, err := agentbus.New(agentbus.Config{})
	if err != nil {
		panic(err)
	}
	defer bus.Shutdown(ctx)

	_, err = bus.Spawn("greeter", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		var who string
		if err := m.DecodePayload(&who); err != nil {
			return err
		}
		_, err := bus.Reply(ctx, m, fmt.Appendf(nil, "%q", "hello, "+who))
		return err
	}))
	if err != nil {
		panic(err)
	}

	req := agentbus.NewMessage(agentbus.TypeRequest, "main", []byte(`"planner"`)).WithRecipient("greeter")
	resp, err := bus.Request(ctx, req)
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Sender, "says", string(resp.Payload))
	// Output: greeter says "hello, planner"
}

// Messages queued for a busy agent are delivered highest priority first.
func ExampleBus_Send() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)

	busy, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	_, _ = bus.Spawn("worker", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		switch string(m.Payload) {
		case `"warm-up"`:
			close(busy)
			<-release // hold the agent while the others queue up
		case `"last"`:
			close(done)
		default:
			fmt.Println(string(m.Payload), m.Priority)
		}
		return nil
	}))
	send := func(body string, prio uint8) {
		msg := agentbus.NewMessage(agentbus.TypeDirect, "main", []byte(body)).WithRecipient("worker").WithPriority(prio)
		if _, err := bus.Send(ctx, msg); err != nil {
			fmt.Println(err)
		}
	}
	send(`"warm-up"`, 50)
	<-busy
	send(`"routine"`, 10)
	send(`"urgent"`, 95)
	send(`"normal"`, 50)
	send(`"last"`, 0)
	close(release)
	<-done
	// Output:
	// "urgent" 95
	// "normal" 50
	// "routine" 10
}

// A request whose handler fails returns the failure at once, and the
// message is kept in the dead-letter queue with its reason.
func ExampleBus_Request() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{RequestTimeout: 5 * time.Second})
	defer bus.Shutdown(ctx)

	_, _ = bus.Spawn("flaky", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		return errors.New("model quota exceeded")
	}))
	_, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "main", nil).WithRecipient("flaky"))
	fmt.Println(errors.Unwrap(err)) // the cause, without the request ID
	for _, l := range bus.DeadLetters().List(deadletter.Filter{}) {
		fmt.Println(l.Reason, l.Agent)
	}
	// Output:
	// agentbus: handler of "flaky" failed: model quota exceeded
	// handler_error flaky
}

// Subscribers with wildcards receive what is published on matching subjects.
func ExampleBus_Publish() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)

	got := make(chan string, 1)
	_, _ = bus.Spawn("monitor", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		got <- m.Topic + " " + string(m.Payload)
		return nil
	}))
	_ = bus.Subscribe("agents.*.done", "monitor")
	_, _ = bus.Publish(ctx, "agents.coder.done", "coder", []byte(`{"ok":true}`))
	fmt.Println(<-got)
	fmt.Println(bus.Subscribers("agents.coder.done"))
	// Output:
	// agents.coder.done {"ok":true}
	// [monitor]
}

// A crashing agent is restarted by its supervisor, and the decision can be
// watched.
func ExampleWithSupervisor() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)

	events, _ := bus.Events(16)
	_, _ = bus.Spawn("fragile", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		panic("out of memory")
	}), agentbus.WithSupervisor(supervisor.Restarting(3, time.Minute)))
	_, _ = bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "main", nil).WithRecipient("fragile"))

	for e := range events.C() {
		switch e.Kind {
		case agentbus.EventSupervised:
			fmt.Println(e.Agent, e.Supervision.Directive, e.Supervision.Restarts)
		case agentbus.EventRestarted:
			fmt.Println(e.Agent, "restarted")
			return
		}
	}
	// Output:
	// fragile restart 1
	// fragile restarted
}

// A dead letter can be sent again once the cause is fixed.
func ExampleBus_Replay() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)

	ready := false
	done := make(chan int, 1)
	_, _ = bus.Spawn("worker", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		if !ready {
			ready = true // fails once
			return errors.New("tool unavailable")
		}
		done <- m.Attempts
		return nil
	}))
	events, _ := bus.Events(16)
	_, _ = bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "main", []byte(`"job"`)).WithRecipient("worker"))

	var letter *deadletter.Letter
	for e := range events.C() {
		if e.Kind == agentbus.EventDeadLetter {
			letter = e.Letter
			break
		}
	}
	fmt.Println(letter.Reason, letter.Err)
	_, _ = bus.Replay(ctx, letter.Seq, "")
	fmt.Println("attempts:", <-done)
	// Output:
	// handler_error tool unavailable
	// attempts: 2
}

// Statistics are counted as messages flow, without a lock on the send path,
// and read as one snapshot. Stats marshals to JSON as it is, and
// Bus.Collector exposes it to Prometheus.
func ExampleBus_Stats() {
	ctx := context.Background()
	bus, _ := agentbus.New(agentbus.Config{})
	defer bus.Shutdown(ctx)

	_, _ = bus.Spawn("coder", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil }))
	_ = bus.Subscribe("agents.*.done", "coder")
	for range 3 {
		_, _ = bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "planner", nil).WithRecipient("coder"))
	}
	_, _ = bus.Publish(ctx, "agents.coder.done", "coder", []byte(`{"ok":true}`))
	_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "planner", nil).WithRecipient("reviewer"))
	fmt.Println(err)

	s := bus.Stats()
	fmt.Println("sent:", s.Totals.Sent, "direct:", s.Types[agentbus.TypeDirect], "publish:", s.Types[agentbus.TypePublish])
	fmt.Println("per sender:", s.Senders) // sorted by name
	fmt.Println("per topic:", s.Topics.Map())
	fmt.Println("rejected:", s.Totals.Rejected, "no_recipient:", s.Rejected["no_recipient"])
	for _, a := range s.Agents {
		fmt.Println("agent:", a.Name, "capacity", a.Capacity)
	}
	// Output:
	// agentbus: no such recipient: "reviewer"
	// sent: 4 direct: 3 publish: 1
	// per sender: [{coder 1} {planner 3}]
	// per topic: map[agents.coder.done:1]
	// rejected: 1 no_recipient: 1
	// agent: coder capacity 1024
}

// An observer is told what happened to every message: here, why messages
// were dead-lettered.
func ExampleObserver() {
	ctx := context.Background()
	letters := make(chan agentbus.Outcome, 1)
	watch := agentbus.ObserverFunc(func(o agentbus.Outcome) {
		if o.Kind == agentbus.OutcomeDeadLettered {
			letters <- o // quick and non-blocking: the buffer has room
		}
	})
	bus, _ := agentbus.New(agentbus.Config{Observers: []agentbus.Observer{watch}})
	defer bus.Shutdown(ctx)

	_, _ = bus.Publish(ctx, "reviews.done", "coder", []byte(`"ok"`)) // nobody subscribed
	o := <-letters
	fmt.Println(o.Kind, o.Letter.Reason, o.Message.Topic)
	// Output: dead_lettered no_subscribers reviews.done
}
