// Command ipc_example tours the basics of agentbus: direct messages,
// request/response, priorities, backpressure, TTL expiry and dead letters.
//
//	go run ./examples/ipc_example
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ipc_example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer) error {
	bus, err := agentbus.New(agentbus.Config{
		Backpressure: agentbus.BackpressureConfig{Timeout: 50 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	defer bus.Shutdown(ctx)

	// 1. Direct message: a coder agent prints what it is asked to do.
	fmt.Fprintln(w, "== direct message")
	done := make(chan struct{})
	if _, err := bus.Spawn("coder", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		fmt.Fprintf(w, "coder got %s from %s\n", m.Payload, m.Sender)
		close(done)
		return nil
	})); err != nil {
		return err
	}
	id, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "planner", []byte(`{"action":"start"}`)).WithRecipient("coder"))
	if err != nil {
		return err
	}
	<-done
	fmt.Fprintf(w, "sent message %s… (UUIDv7, sorts by time)\n", id[:8])

	// 2. Request/response: a reviewer answers; the caller waits for it.
	fmt.Fprintln(w, "== request/response")
	if _, err := bus.Spawn("reviewer", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Reply(ctx, m, []byte(`{"verdict":"approved"}`))
		return err
	})); err != nil {
		return err
	}
	resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "planner", []byte(`{"method":"review"}`)).WithRecipient("reviewer"))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "reviewer answered %s\n", resp.Payload)

	// 3. Priorities: while the runner is busy, messages queue up; they come
	// out highest priority first.
	fmt.Fprintln(w, "== priorities")
	busy, release, drained := make(chan struct{}), make(chan struct{}), make(chan struct{})
	if _, err := bus.Spawn("runner", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		switch string(m.Payload) {
		case `"busy"`:
			close(busy)
			<-release
		case `"end"`:
			close(drained)
		default:
			fmt.Fprintf(w, "runner handles %s (priority %d)\n", m.Payload, m.Priority)
		}
		return nil
	}), agentbus.WithMailboxSize(5)); err != nil {
		return err
	}
	send := func(body string, prio uint8, ttl time.Duration) error {
		_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "planner", []byte(body)).
			WithRecipient("runner").WithPriority(prio).WithTTL(ttl))
		return err
	}
	stale := agentbus.NewMessage(agentbus.TypeDirect, "planner", []byte(`"stale status"`)).
		WithRecipient("runner").WithPriority(70).WithTTL(200 * time.Millisecond)
	if err := send(`"busy"`, 50, 0); err != nil {
		return err
	}
	<-busy
	for _, m := range []struct {
		body string
		prio uint8
	}{{`"lint"`, 10}, {`"hotfix"`, 90}, {`"tests"`, 50}} {
		if err := send(m.body, m.prio, 0); err != nil {
			return err
		}
	}
	if _, err := bus.Send(ctx, stale); err != nil {
		return err
	}

	// 4. Backpressure: the runner's mailbox holds 5. The sixth send waits
	// for room (50 ms here), then gives up with ErrBackpressureTimeout; the
	// sender keeps its message.
	fmt.Fprintln(w, "== backpressure")
	if err := send(`"end"`, 0, 0); err != nil {
		return err
	}
	fmt.Fprintf(w, "pending: %d of %d\n", bus.Backpressure().Pending(), bus.Backpressure().MaxPending())
	err = send(`"one too many"`, 50, 0)
	fmt.Fprintf(w, "sixth send: backpressure timeout = %v\n", errors.Is(err, agentbus.ErrBackpressureTimeout))

	// 5. TTL: the stale status message expires in the queue (200 ms) and is
	// never delivered.
	time.Sleep(time.Until(stale.Deadline())) // the demo lets its TTL run out
	close(release)
	<-drained

	// 6. Dead letters: everything that was accepted but not delivered is
	// kept with its reason.
	fmt.Fprintln(w, "== dead letters")
	if _, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeResponse, "ghost", []byte(`1`)).WithRequestID("never-asked")); err != nil {
		return err
	}
	for _, l := range bus.DeadLetters().List(deadletter.Filter{}) {
		fmt.Fprintf(w, "dead letter: %s %s (agent %q)\n", l.Reason, l.Message.Payload, l.Agent)
	}
	return bus.Shutdown(ctx)
}
