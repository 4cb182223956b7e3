package agentbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/testutil"
)

// TestStory walks the foundation end to end: spawn, send, priority order,
// request/response, backpressure, TTL expiry, dead letters, shutdown.
func TestStory(t *testing.T) {
	bus := newBus(t, agentbus.Config{
		Backpressure:   agentbus.BackpressureConfig{Timeout: 50 * time.Millisecond, WaitDuration: 10 * time.Millisecond},
		RequestTimeout: 5 * time.Second,
	})
	ctx := t.Context()

	// Spawn: a worker that records what it handles, behind a gate.
	rec := newRecorder(64)
	worker := newGate(rec)
	pid, err := bus.Spawn("worker", worker, agentbus.WithMailboxSize(8))
	require.NoError(t, err)
	got, ok := bus.PID("worker")
	require.True(t, ok)
	assert.Equal(t, pid, got)

	// Send: the first message enters the handler and holds it.
	_, err = bus.Send(ctx, direct("worker", `"hold"`))
	require.NoError(t, err)
	<-worker.Entered

	// Priority order: higher first, FIFO within a level.
	for _, p := range []struct {
		prio uint8
		body string
	}{{10, `"low"`}, {90, `"high-1"`}, {50, `"normal"`}, {90, `"high-2"`}, {0, `"lowest"`}} {
		_, err := bus.Send(ctx, direct("worker", p.body).WithPriority(p.prio))
		require.NoError(t, err)
	}
	// TTL: this one expires while queued (after the backpressure check
	// below, which would otherwise reap it to make room).
	expiring := direct("worker", `"stale"`).WithTTL(500 * time.Millisecond).WithPriority(100)
	_, err = bus.Send(ctx, expiring)
	require.NoError(t, err)

	// Backpressure: the mailbox holds 8; fill it and the next Send times out.
	assert.Equal(t, 6, bus.Backpressure().Pending())
	for i := range 2 {
		_, err := bus.Send(ctx, direct("worker", fmt.Sprintf(`"fill-%d"`, i)).WithPriority(1))
		require.NoError(t, err)
	}
	_, err = bus.Send(ctx, direct("worker", `"overflow"`))
	require.ErrorIs(t, err, agentbus.ErrBackpressureTimeout)
	require.ErrorIs(t, err, agentbus.ErrMailboxFull)

	require.Eventually(t, func() bool { return time.Now().After(expiring.Deadline()) }, 5*time.Second, time.Millisecond)
	close(worker.Open)
	var order []string
	for range 7 {
		order = append(order, string(rec.next(t).Payload))
	}
	assert.Equal(t, []string{`"high-1"`, `"high-2"`, `"normal"`, `"low"`, `"fill-0"`, `"fill-1"`, `"lowest"`}, order)

	// Dead letters: the expired message is there with its reason.
	letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.Expired})
	require.Len(t, letters, 1)
	assert.Equal(t, expiring.ID, letters[0].Message.ID)
	assert.Equal(t, "worker", letters[0].Agent)

	// Request/response: an echo agent replies.
	_, err = bus.Spawn("echo", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Reply(ctx, m, m.Payload)
		return err
	}))
	require.NoError(t, err)
	resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "tester", []byte(`{"q":1}`)).WithRecipient("echo"))
	require.NoError(t, err)
	assert.Equal(t, agentbus.TypeResponse, resp.Type)
	assert.Equal(t, "echo", resp.Sender)
	assert.JSONEq(t, `{"q":1}`, string(resp.Payload))

	// Shutdown: idempotent, and the bus refuses work afterwards.
	require.NoError(t, bus.Shutdown(ctx))
	require.NoError(t, bus.Shutdown(ctx))
	_, err = bus.Send(ctx, direct("worker", `"late"`))
	require.ErrorIs(t, err, agentbus.ErrClosed)
	_, err = bus.Spawn("again", rec)
	require.ErrorIs(t, err, agentbus.ErrClosed)
}

func TestSendRejectsBadInput(t *testing.T) {
	bus := newBus(t, agentbus.Config{MaxMessageSize: 1024})
	_, err := bus.Spawn("a", newRecorder(8))
	require.NoError(t, err)

	tests := []struct {
		name    string
		msg     *agentbus.Message
		wantErr error
	}{
		{"nil message", nil, agentbus.ErrInvalidMessage},
		{"oversized", direct("a", `"`+strings.Repeat("x", 2000)+`"`), agentbus.ErrMessageTooLarge},
		{"priority above 100", direct("a", `1`).WithPriority(101), agentbus.ErrInvalidMessage},
		{"missing recipient", agentbus.NewMessage(agentbus.TypeDirect, "t", []byte(`1`)), agentbus.ErrInvalidMessage},
		{"publish without topic", agentbus.NewMessage(agentbus.TypePublish, "t", []byte(`1`)), agentbus.ErrInvalidMessage},
		{"response without request id", agentbus.NewMessage(agentbus.TypeResponse, "t", nil), agentbus.ErrInvalidMessage},
		{"non-JSON payload", direct("a", `{not json`), agentbus.ErrInvalidMessage},
		{"zero type", &agentbus.Message{Recipient: "a"}, agentbus.ErrInvalidMessage},
		{"negative ttl", direct("a", `1`).WithTTL(-time.Second), agentbus.ErrInvalidMessage},
		{"expired ttl", func() *agentbus.Message {
			m := direct("a", `1`).WithTTL(time.Second)
			m.Timestamp = time.Now().Add(-time.Minute)
			return m
		}(), agentbus.ErrExpired},
		{"unknown recipient", direct("nobody", `1`), agentbus.ErrNoRecipient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := bus.Send(t.Context(), tt.msg)
			require.ErrorIs(t, err, tt.wantErr)
			assert.Empty(t, id)
		})
	}
	assert.Zero(t, bus.DeadLetters().Len(), "a refused message is the caller's, not a dead letter")
}

func TestSpawnRejectsBadInput(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	_, err := bus.Spawn("taken", newRecorder(1))
	require.NoError(t, err)
	tests := []struct {
		name    string
		agent   string
		h       agentbus.Handler
		opts    []agentbus.SpawnOption
		wantErr error
	}{
		{"duplicate name", "taken", newRecorder(1), nil, agentbus.ErrAgentExists},
		{"name of a system process", "deadletter", newRecorder(1), nil, agentbus.ErrAgentExists},
		{"empty name", "", newRecorder(1), nil, agentbus.ErrInvalidAgent},
		{"reserved prefix", "$topic", newRecorder(1), nil, agentbus.ErrInvalidAgent},
		{"slash", "a/b", newRecorder(1), nil, agentbus.ErrInvalidAgent},
		{"space", "a b", newRecorder(1), nil, agentbus.ErrInvalidAgent},
		{"too long", strings.Repeat("n", 257), newRecorder(1), nil, agentbus.ErrInvalidAgent},
		{"nil handler", "x", nil, nil, agentbus.ErrInvalidAgent},
		{"nil HandlerFunc", "x", agentbus.HandlerFunc(nil), nil, agentbus.ErrInvalidAgent},
		{"nil pointer handler", "x", (*recorder)(nil), nil, agentbus.ErrInvalidAgent},
		{"zero mailbox", "x", newRecorder(1), []agentbus.SpawnOption{agentbus.WithMailboxSize(0)}, agentbus.ErrInvalidAgent},
		{"nil option", "x", newRecorder(1), []agentbus.SpawnOption{nil}, agentbus.ErrInvalidAgent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid, err := bus.Spawn(tt.agent, tt.h, tt.opts...)
			require.ErrorIs(t, err, tt.wantErr)
			assert.Nil(t, pid)
		})
	}
	assert.Equal(t, []string{"taken"}, bus.Agents())
}

func TestConfigRejectsNegativeValues(t *testing.T) {
	tests := []struct {
		name string
		cfg  agentbus.Config
	}{
		{"MaxMessageSize", agentbus.Config{MaxMessageSize: -1}},
		{"RequestTimeout", agentbus.Config{RequestTimeout: -time.Second}},
		{"MailboxSize", agentbus.Config{MailboxSize: -5}},
		{"MaxPending", agentbus.Config{Backpressure: agentbus.BackpressureConfig{MaxPending: -1}}},
		{"WaitDuration", agentbus.Config{Backpressure: agentbus.BackpressureConfig{WaitDuration: -1}}},
		{"Timeout", agentbus.Config{Backpressure: agentbus.BackpressureConfig{Timeout: -1}}},
		{"DLQMaxSize", agentbus.Config{DLQMaxSize: -1}},
		{"DLQMaxBytes", agentbus.Config{DLQMaxBytes: -1}},
		{"MaxHistorySize", agentbus.Config{MaxHistorySize: -1}},
		{"Observers[0]", agentbus.Config{Observers: []agentbus.Observer{nil}}},
		{"Observers[1]", agentbus.Config{Observers: []agentbus.Observer{&outcomeLog{}, agentbus.ObserverFunc(nil)}}},
		{"Stampers[0]", agentbus.Config{Stampers: []agentbus.Stamper{agentbus.StamperFunc(nil)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus, err := agentbus.New(tt.cfg)
			require.ErrorIs(t, err, agentbus.ErrInvalidConfig)
			assert.ErrorContains(t, err, tt.name)
			assert.Nil(t, bus)
		})
	}
}

func TestRequest(t *testing.T) {
	bus := newBus(t, agentbus.Config{RequestTimeout: 200 * time.Millisecond})
	held := make(chan *agentbus.Message, 4)
	_, err := bus.Spawn("svc", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		switch string(m.Payload) {
		case `"reply"`:
			_, err := bus.Reply(ctx, m, []byte(`"ok"`))
			return err
		case `"send-response"`: // the seed's pattern: a Response sent through Send
			_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeResponse, "svc", []byte(`"sent"`)).WithRequestID(m.RequestID))
			return err
		case `"fail"`:
			return errors.New("cannot do that")
		case `"panic"`:
			panic("boom")
		default: // hold it: answer later, or never
			held <- m
			return nil
		}
	}))
	require.NoError(t, err)
	req := func(body string) *agentbus.Message {
		return agentbus.NewMessage(agentbus.TypeRequest, "client", []byte(body)).WithRecipient("svc")
	}

	t.Run("handler replies", func(t *testing.T) {
		resp, err := bus.Request(t.Context(), req(`"reply"`))
		require.NoError(t, err)
		assert.Equal(t, `"ok"`, string(resp.Payload))
		assert.Equal(t, "client", resp.Recipient)
	})
	t.Run("response sent through Send", func(t *testing.T) {
		resp, err := bus.Request(t.Context(), req(`"send-response"`))
		require.NoError(t, err)
		assert.Equal(t, `"sent"`, string(resp.Payload))
	})
	t.Run("handler error fails the request at once", func(t *testing.T) {
		_, err := bus.Request(t.Context(), req(`"fail"`))
		require.ErrorContains(t, err, "cannot do that")
		assert.NotErrorIs(t, err, agentbus.ErrRequestTimeout)
	})
	t.Run("handler panic fails the request at once", func(t *testing.T) {
		_, err := bus.Request(t.Context(), req(`"panic"`))
		require.ErrorIs(t, err, agentbus.ErrHandlerPanic)
		var pe *agentbus.HandlerPanicError
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "boom", pe.Value)
		assert.NotEmpty(t, pe.Stack)
	})
	t.Run("timeout, then the late response is dead-lettered", func(t *testing.T) {
		r := req(`"hold"`)
		_, err := bus.Request(t.Context(), r)
		require.ErrorIs(t, err, agentbus.ErrRequestTimeout)
		m := <-held
		_, err = bus.Reply(context.Background(), m, []byte(`"too late"`))
		require.NoError(t, err)
		letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.LateResponse})
		require.Len(t, letters, 1)
		assert.Equal(t, r.RequestID, letters[0].Message.RequestID)
	})
	t.Run("ctx deadline is a timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		_, err := bus.Request(ctx, req(`"hold"`))
		require.ErrorIs(t, err, agentbus.ErrRequestTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		<-held
	})
	t.Run("ctx cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		go func() { <-held; cancel() }()
		_, err := bus.Request(ctx, req(`"hold"`))
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("orphan response", func(t *testing.T) {
		id, err := bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeResponse, "x", []byte(`1`)).WithRequestID("never-asked"))
		require.NoError(t, err)
		letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.OrphanResponse})
		require.Len(t, letters, 1)
		assert.Equal(t, id, letters[0].Message.ID)
	})
	t.Run("unknown recipient", func(t *testing.T) {
		_, err := bus.Request(t.Context(), req(`1`).WithRecipient("nobody"))
		require.ErrorIs(t, err, agentbus.ErrNoRecipient)
	})
	t.Run("duplicate pending request id", func(t *testing.T) {
		first := req(`"hold"`).WithRequestID("same")
		errc := make(chan error, 1)
		go func() { _, err := bus.Request(context.Background(), first); errc <- err }()
		m := <-held
		_, err := bus.Request(t.Context(), req(`1`).WithRequestID("same"))
		require.ErrorIs(t, err, agentbus.ErrInvalidMessage)
		_, err = bus.Reply(context.Background(), m, []byte(`"done"`))
		require.NoError(t, err)
		require.NoError(t, recv(t, errc))
	})
	assert.Zero(t, bus.PendingRequests(), "no pending request may leak")
}

func TestRequestBetweenAgentsAndCycles(t *testing.T) {
	bus := newBus(t, agentbus.Config{RequestTimeout: 5 * time.Second})
	cycleErr := make(chan error, 1)
	_, err := bus.Spawn("a", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		if m.Type == agentbus.TypeRequest { // b asks a back while a waits on b
			_, err := bus.Reply(ctx, m, []byte(`"a"`))
			return err
		}
		resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`"q"`)).WithRecipient("b"))
		if err != nil {
			return err
		}
		cycleErr <- fmt.Errorf("a got %s", resp.Payload)
		return nil
	}))
	require.NoError(t, err)
	_, err = bus.Spawn("b", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`"back"`)).WithRecipient("a"))
		if errors.Is(err, agentbus.ErrRequestCycle) {
			cycleErr <- err
		}
		_, rerr := bus.Reply(ctx, m, []byte(`"b"`))
		return rerr
	}))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("a", `"go"`))
	require.NoError(t, err)
	require.ErrorIs(t, recv(t, cycleErr), agentbus.ErrRequestCycle, "b must be told at once instead of waiting out the timeout")
	assert.EqualError(t, recv(t, cycleErr), `a got "b"`)
}

func TestSharedPendingLimitWakesWaitingSender(t *testing.T) {
	bus := newBus(t, agentbus.Config{Backpressure: agentbus.BackpressureConfig{MaxPending: 3, Timeout: 10 * time.Second}})
	rec := newRecorder(16)
	g1, g2 := newGate(rec), newGate(rec)
	_, err := bus.Spawn("one", g1)
	require.NoError(t, err)
	_, err = bus.Spawn("two", g2)
	require.NoError(t, err)
	ctx := t.Context()
	_, err = bus.Send(ctx, direct("one", `"hold"`))
	require.NoError(t, err)
	<-g1.Entered
	for i := range 3 { // fills the bus-wide limit across two agents
		_, err = bus.Send(ctx, direct([]string{"one", "two"}[i%2], fmt.Sprint(i)))
		require.NoError(t, err)
	}
	<-g2.Entered // "two" took its message out of the queue: one slot is free
	_, err = bus.Send(ctx, direct("one", `3`))
	require.NoError(t, err)
	assert.Equal(t, 3, bus.Backpressure().Pending())

	done := make(chan error, 1)
	go func() { _, err := bus.Send(ctx, direct("two", `"waited"`)); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("send did not wait for room: %v", err)
	default:
	}
	close(g1.Open) // "one" drains, freeing slots: the parked sender is woken
	require.NoError(t, <-done)
	close(g2.Open)
	for range 4 {
		rec.next(t)
	}
}

func TestAgentsFloodingEachOtherMakeProgress(t *testing.T) {
	bus := newBus(t, agentbus.Config{
		MailboxSize:  4,
		Backpressure: agentbus.BackpressureConfig{WaitDuration: 5 * time.Millisecond},
	})
	const rounds = 50
	var handled atomic.Int64
	flood := func(peer string) agentbus.Handler {
		return agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
			handled.Add(1)
			if string(m.Payload) != `"start"` {
				return nil
			}
			for i := range rounds { // far more than the peer's mailbox holds
				_, err := bus.Send(ctx, direct(peer, fmt.Sprint(i)))
				if err != nil && !errors.Is(err, agentbus.ErrMailboxFull) {
					return err
				}
			}
			return nil
		})
	}
	_, err := bus.Spawn("ping", flood("pong"))
	require.NoError(t, err)
	_, err = bus.Spawn("pong", flood("ping"))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("ping", `"start"`))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("pong", `"start"`))
	require.NoError(t, err)

	// Every one of the 2×50 flood messages is handled or dead-lettered.
	require.Eventually(t, func() bool {
		full := len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.MailboxFull}))
		return handled.Load()-2+int64(full) == 2*rounds
	}, 10*time.Second, time.Millisecond)
}

func TestProtoactorInterop(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	rec := newRecorder(16)
	g := newGate(rec)
	pid, err := bus.Spawn("worker", g, agentbus.WithMailboxSize(4))
	require.NoError(t, err)
	root := bus.ActorSystem().Root

	// A plain protoactor actor sends to the agent's PID, with and without
	// envelopes: priority order holds for both.
	sender := root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*agentbus.Message); ok {
			if m.Priority == 90 {
				c.Request(pid, m) // wrapped in a MessageEnvelope with a sender
			} else {
				c.Send(pid, m)
			}
		}
	}))
	defer root.Stop(sender)
	root.Send(pid, direct("worker", `"hold"`))
	<-g.Entered
	root.Send(sender, direct("worker", `"low"`).WithPriority(10))
	root.Send(sender, direct("worker", `"high"`).WithPriority(90))
	require.Eventually(t, func() bool { return bus.Backpressure().Pending() == 2 }, 5*time.Second, time.Millisecond)

	// Bounds hold too: the mailbox has 4 slots; a RequestFuture that finds
	// none fails at once instead of blocking its sender.
	root.Send(pid, direct("worker", `"fill-1"`).WithPriority(1))
	root.Send(pid, direct("worker", `"fill-2"`).WithPriority(1))
	f := root.RequestFuture(pid, direct("worker", `"overflow"`), 5*time.Second)
	_, err = f.Result()
	require.ErrorIs(t, err, actor.ErrDeadLetter)
	letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.MailboxFull})
	require.Len(t, letters, 1)
	assert.Equal(t, `"overflow"`, string(letters[0].Message.Payload))

	close(g.Open)
	var order []string
	for range 4 {
		order = append(order, string(rec.next(t).Payload))
	}
	assert.Equal(t, []string{`"high"`, `"low"`, `"fill-1"`, `"fill-2"`}, order)

	// RequestFuture gets the handler's Reply.
	_, err = bus.Spawn("echo", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Reply(ctx, m, []byte(`"pong"`))
		return err
	}))
	require.NoError(t, err)
	echo, _ := bus.PID("echo")
	res, err := root.RequestFuture(echo, direct("echo", `"ping"`), 5*time.Second).Result()
	require.NoError(t, err)
	require.IsType(t, &agentbus.Message{}, res)
	assert.Equal(t, `"pong"`, string(res.(*agentbus.Message).Payload))

	// A message agents cannot handle is dead-lettered, and its future fails.
	_, err = root.RequestFuture(echo, "not a message", 5*time.Second).Result()
	require.ErrorIs(t, err, actor.ErrDeadLetter)
	require.Len(t, bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.UnsupportedMessage}), 1)
}

func TestStopDeadLettersQueuedMessages(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	g := newGate(newRecorder(8))
	_, err := bus.Spawn("w", g)
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("w", `"hold"`))
	require.NoError(t, err)
	<-g.Entered
	var ids []string
	for i := range 3 {
		id, err := bus.Send(t.Context(), direct("w", fmt.Sprint(i)))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	pid, _ := bus.PID("w")
	bus.ActorSystem().Root.Stop(pid) // queued before the gate opens: stop comes first
	close(g.Open)
	require.Eventually(t, func() bool { _, ok := bus.PID("w"); return !ok }, 5*time.Second, time.Millisecond)

	letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.AgentStopped})
	var got []string
	for _, l := range letters {
		got = append(got, l.Message.ID)
	}
	assert.ElementsMatch(t, ids, got)
	assert.Zero(t, bus.Backpressure().Pending())

	_, err = bus.Send(t.Context(), direct("w", `"after"`))
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)
	_, err = bus.Spawn("w", newRecorder(1)) // the name is free again
	require.NoError(t, err)
	require.ErrorIs(t, bus.Stop(t.Context(), "nobody"), agentbus.ErrNoRecipient)
}

func TestShutdownDrainsQueuedMessages(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	var handled atomic.Int64
	_, err = bus.Spawn("w", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		handled.Add(1)
		return nil
	}))
	require.NoError(t, err)
	for i := range 500 {
		_, err := bus.Send(t.Context(), direct("w", fmt.Sprint(i)))
		require.NoError(t, err)
	}
	require.NoError(t, bus.Shutdown(t.Context()))
	assert.EqualValues(t, 500, handled.Load())
	assert.Zero(t, bus.DeadLetters().Len())
	a := bus.Accounting()
	assert.Equal(t, agentbus.Accounting{Accepted: 500, Handled: 500}, a, "nothing lost across shutdown")
}

func TestShutdownDeadLettersWhatItCannotDrain(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	g := newGate(newRecorder(8))
	_, err = bus.Spawn("w", g)
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("w", `"hold"`))
	require.NoError(t, err)
	<-g.Entered
	for i := range 3 {
		_, err := bus.Send(t.Context(), direct("w", fmt.Sprint(i)))
		require.NoError(t, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, bus.Shutdown(ctx), context.DeadlineExceeded)
	assert.Len(t, bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.Shutdown}), 3)
	close(g.Open) // let the handler return so its goroutine ends
	require.Eventually(t, func() bool { return len(bus.Agents()) == 0 }, 5*time.Second, time.Millisecond)
	a := bus.Accounting()
	assert.Equal(t, agentbus.Accounting{Accepted: 4, Handled: 1, DeadLettered: 3}, a, "nothing lost across shutdown")
}

func TestDeadLetterActor(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	root := bus.ActorSystem().Root
	pid := bus.DeadLetterPID()
	root.Send(pid, &deadletter.Letter{Message: direct("x", `1`), Reason: deadletter.RetriesExhausted, Agent: "x"})
	root.Send(pid, direct("y", `2`))
	root.Send(pid, 42)
	res, err := root.RequestFuture(pid, &deadletter.Query{}, 5*time.Second).Result()
	require.NoError(t, err)
	letters := res.(*deadletter.Letters).Letters
	require.Len(t, letters, 3)
	assert.Equal(t, deadletter.RetriesExhausted, letters[0].Reason)
	assert.Equal(t, deadletter.NoRecipient, letters[1].Reason)
	assert.Equal(t, deadletter.UnsupportedMessage, letters[2].Reason)
	assert.Equal(t, 42, letters[2].Value)
}

func TestSendToStoppedPIDIsRecorded(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	pid, err := bus.Spawn("gone", newRecorder(1))
	require.NoError(t, err)
	require.NoError(t, bus.Stop(t.Context(), "gone"))
	_, err = bus.ActorSystem().Root.RequestFuture(pid, direct("gone", `"hello?"`), 5*time.Second).Result()
	require.ErrorIs(t, err, actor.ErrDeadLetter)
	letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.NoRecipient})
	require.Len(t, letters, 1)
	assert.Equal(t, "gone", letters[0].Agent)
}

func TestBroadcast(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	recs := map[string]*recorder{}
	for _, name := range []string{"a", "b", "c"} {
		recs[name] = newRecorder(4)
		_, err := bus.Spawn(name, recs[name])
		require.NoError(t, err)
	}
	id, err := bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeBroadcast, "a", []byte(`"all"`)))
	require.NoError(t, err)
	for _, name := range []string{"b", "c"} {
		m := recs[name].next(t)
		assert.Equal(t, id, m.ID)
		assert.Equal(t, name, m.Recipient)
	}
	select {
	case m := <-recs["a"].got:
		t.Fatalf("the sender got its own broadcast: %v", m.ID)
	default:
	}
}

func TestHistory(t *testing.T) {
	bus := newBus(t, agentbus.Config{EnableHistory: true, MaxHistorySize: 3})
	_, err := bus.Spawn("a", newRecorder(8))
	require.NoError(t, err)
	var ids []string
	for i := range 5 {
		id, err := bus.Send(t.Context(), direct("a", fmt.Sprint(i)))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	var got []string
	for _, m := range bus.History(0) {
		got = append(got, m.ID)
	}
	assert.Equal(t, []string{ids[4], ids[3], ids[2]}, got)
	assert.Len(t, bus.History(1), 1)

	off := newBus(t, agentbus.Config{})
	assert.Nil(t, off.History(10))
}

func TestMessageJSONThroughTheBus(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	rec := newRecorder(1)
	_, err := bus.Spawn("a", rec)
	require.NoError(t, err)
	var m agentbus.Message
	require.NoError(t, json.Unmarshal([]byte(`{"type":"direct","sender":"py","recipient":"a","payload":{"x": 1}}`), &m))
	id, err := bus.Send(t.Context(), &m)
	require.NoError(t, err)
	got := rec.next(t)
	assert.Equal(t, id, got.ID)
	assert.EqualValues(t, 50, got.Priority)
	assert.Equal(t, `{"x":1}`, string(got.Payload))
}

func TestShutdownFromAHandler(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	done := make(chan error, 1)
	_, err = bus.Spawn("boss", agentbus.HandlerFunc(func(ctx context.Context, _ *agentbus.Message) error {
		done <- bus.Shutdown(ctx)
		return nil
	}))
	require.NoError(t, err)
	_, err = bus.Spawn("other", newRecorder(1))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("boss", `"quit"`))
	require.NoError(t, err)
	require.NoError(t, recv(t, done), "the handler's own agent does not block its Shutdown")
	require.Eventually(t, func() bool { return len(bus.Agents()) == 0 }, 5*time.Second, time.Millisecond)
}

func TestQueryHistory(t *testing.T) {
	bus := newBus(t, agentbus.Config{EnableHistory: true, MaxHistorySize: 100})
	spawnRecorders(t, bus, "a", "b")
	require.NoError(t, bus.Subscribe("jobs.*", "b"))
	start := time.Now()
	var ids []string
	for i, m := range []*agentbus.Message{
		agentbus.NewMessage(agentbus.TypeDirect, "x", []byte(`1`)).WithRecipient("a"),
		agentbus.NewMessage(agentbus.TypeDirect, "y", []byte(`2`)).WithRecipient("b"),
		agentbus.NewMessage(agentbus.TypePublish, "x", []byte(`3`)).WithTopic("jobs.new"),
		agentbus.NewMessage(agentbus.TypeDirect, "x", []byte(`4`)).WithRecipient("b"),
	} {
		id, err := bus.Send(t.Context(), m)
		require.NoError(t, err, i)
		ids = append(ids, id)
	}
	idsOf := func(ms []*agentbus.Message) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	tests := []struct {
		name string
		q    agentbus.HistoryQuery
		want []string
	}{
		{"all, newest first", agentbus.HistoryQuery{}, []string{ids[3], ids[2], ids[1], ids[0]}},
		{"sender", agentbus.HistoryQuery{Sender: "x"}, []string{ids[3], ids[2], ids[0]}},
		{"recipient", agentbus.HistoryQuery{Recipient: "b"}, []string{ids[3], ids[1]}},
		{"type", agentbus.HistoryQuery{Type: agentbus.TypePublish}, []string{ids[2]}},
		{"topic pattern", agentbus.HistoryQuery{Topic: "jobs.>"}, []string{ids[2]}},
		{"exact topic", agentbus.HistoryQuery{Topic: "jobs.new"}, []string{ids[2]}},
		{"limit", agentbus.HistoryQuery{Sender: "x", Limit: 2}, []string{ids[3], ids[2]}},
		{"absurd limit", agentbus.HistoryQuery{Limit: 1 << 40}, []string{ids[3], ids[2], ids[1], ids[0]}},
		{"since", agentbus.HistoryQuery{Since: start}, []string{ids[3], ids[2], ids[1], ids[0]}},
		{"until", agentbus.HistoryQuery{Until: start}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, idsOf(bus.QueryHistory(tt.q)))
		})
	}
}

func TestAuditLogging(t *testing.T) {
	var out testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	bus := newBus(t, agentbus.Config{Logger: logger})
	rec := newRecorder(1)
	_, err := bus.Spawn("a", rec)
	require.NoError(t, err)
	id, err := bus.Send(t.Context(), direct("a", `1`))
	require.NoError(t, err)
	rec.next(t)
	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeResponse, "x", nil).WithRequestID("nobody"))
	require.NoError(t, err)
	logs := out.String()
	assert.Contains(t, logs, `level=INFO msg="agent spawned" agent=a`)
	assert.Contains(t, logs, `level=DEBUG msg="message queued" msg_id=`+id)
	assert.Contains(t, logs, `level=WARN msg="dead letter"`)
	assert.Contains(t, logs, "reason=orphan_response")
}

// A handler may answer a protoactor RequestFuture by sending a Response
// through the bus, as a socket client must.
func TestResponseThroughSendReachesProtoactorRequester(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	pid, err := bus.Spawn("svc", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypeResponse, "", []byte(`"sent"`)).WithRequestID(m.ID))
		return err
	}))
	require.NoError(t, err)
	res, err := bus.ActorSystem().Root.RequestFuture(pid, direct("svc", `"q"`), 5*time.Second).Result()
	require.NoError(t, err)
	require.IsType(t, &agentbus.Message{}, res)
	assert.Equal(t, `"sent"`, string(res.(*agentbus.Message).Payload))
	assert.Zero(t, bus.DeadLetters().Len())
}

// TestSendReachesTheAgentNowHoldingAName checks that the bus never delivers
// to a stale agent after a name changed hands, and that names sharing a slot
// of the bus's lookup cache (same length, first, middle and last byte) each
// reach their own agent when sends alternate between them.
func TestSendReachesTheAgentNowHoldingAName(t *testing.T) {
	ctx := context.Background()
	b := newBus(t, agentbus.Config{})
	send := func(to string) {
		t.Helper()
		_, err := b.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "test", nil).WithRecipient(to))
		require.NoError(t, err)
	}
	recv := func(r *recorder, want string) {
		t.Helper()
		select {
		case m := <-r.got:
			assert.Equal(t, want, m.Recipient)
		case <-time.After(10 * time.Second):
			t.Fatalf("nothing reached the agent %q", want)
		}
	}

	for round := range 3 { // the same name, a new agent each round
		r := newRecorder(4)
		_, err := b.Spawn("holder", r)
		require.NoError(t, err)
		send("holder")
		send("holder")
		recv(r, "holder")
		recv(r, "holder")
		require.NoError(t, b.Stop(ctx, "holder"), "round %d", round)
		_, err = b.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "test", nil).WithRecipient("holder"))
		require.ErrorIs(t, err, agentbus.ErrNoRecipient, "a stopped agent is no recipient")
	}

	r1, r2 := newRecorder(100), newRecorder(100)
	_, err := b.Spawn("agent-a-1", r1)
	require.NoError(t, err)
	_, err = b.Spawn("agent-b-1", r2)
	require.NoError(t, err)
	for range 50 {
		send("agent-a-1")
		send("agent-b-1")
	}
	for range 50 {
		recv(r1, "agent-a-1")
		recv(r2, "agent-b-1")
	}
}

// TestSendFromHandlerToFullMailbox checks that a handler's send that the bus
// accepted and then dead-lettered (its recipient had no room) is told from a
// refused one: its ID and an error wrapping ErrDeadLettered and the cause.
func TestSendFromHandlerToFullMailbox(t *testing.T) {
	bus := newBus(t, agentbus.Config{Backpressure: agentbus.BackpressureConfig{WaitDuration: time.Millisecond}})
	g := newGate(agentbus.HandlerFunc(sink))
	_, err := bus.Spawn("full", g, agentbus.WithMailboxSize(1))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("full", `"hold"`))
	require.NoError(t, err)
	<-g.Entered
	_, err = bus.Send(t.Context(), direct("full", `"fills it"`))
	require.NoError(t, err)

	type result struct {
		id  string
		err error
	}
	got := make(chan result, 2)
	_, err = bus.Spawn("sender", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		id, err := bus.Send(ctx, direct("full", `"overflow"`))
		got <- result{id, err}
		_, err = bus.Send(ctx, direct("nobody", `"refused"`))
		got <- result{"", err}
		return nil
	}))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("sender", `"go"`))
	require.NoError(t, err)

	dead := recv(t, got)
	require.NotEmpty(t, dead.id, "accepted: it has an ID")
	require.ErrorIs(t, dead.err, agentbus.ErrDeadLettered)
	require.ErrorIs(t, dead.err, agentbus.ErrMailboxFull)
	assert.Contains(t, dead.err.Error(), "mailbox_full")
	refused := recv(t, got)
	require.ErrorIs(t, refused.err, agentbus.ErrNoRecipient)
	assert.NotErrorIs(t, refused.err, agentbus.ErrDeadLettered)

	letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.MailboxFull})
	require.Len(t, letters, 1)
	assert.Equal(t, dead.id, letters[0].Message.ID)
	close(g.Open)
	quiet(t, bus)
	assert.EqualValues(t, 1, bus.Stats().Rejected["no_recipient"], "the dead-lettered one is not counted as refused")
	assert.EqualValues(t, 1, bus.Stats().Totals.Rejected)
}

// TestStopBusyAgent stops an agent whose handler is busy, with a deadline
// that ends first: the stop is in effect at once (no new message is taken,
// the queue is dead-lettered) and Stop says the agent is still finishing;
// it completes once the handler returns.
func TestStopBusyAgent(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	g := newGate(agentbus.HandlerFunc(sink))
	_, err := bus.Spawn("busy", g)
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("busy", `"hold"`))
	require.NoError(t, err)
	<-g.Entered
	queued, err := bus.Send(t.Context(), direct("busy", `"queued"`))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err = bus.Stop(ctx, "busy")
	require.ErrorIs(t, err, agentbus.ErrStopping)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	_, err = bus.Send(t.Context(), direct("busy", `"after"`))
	require.ErrorIs(t, err, agentbus.ErrNoRecipient, "the stop is in effect")
	letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.AgentStopped})
	require.Len(t, letters, 1)
	assert.Equal(t, queued, letters[0].Message.ID)

	again, cancel2 := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel2()
	require.ErrorIs(t, bus.Stop(again, "busy"), agentbus.ErrStopping, "still stopping, not gone")
	sub, err := bus.Watch("busy", 8)
	require.NoError(t, err)
	close(g.Open)
	assert.ErrorIs(t, nextEvent(t, sub, agentbus.EventStopped).Err, agentbus.ErrAgentStopped)
	_, ok := bus.PID("busy")
	assert.False(t, ok)
	_, err = bus.Spawn("busy", agentbus.HandlerFunc(sink))
	require.NoError(t, err, "the name is free")
}
