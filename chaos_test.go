package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/supervisor"
)

// busySink keeps busyWork from being optimized away.
var busySink atomic.Uint64

// busyWork spends CPU for a while: n rounds of a cheap hash.
func busyWork(n int) {
	h := uint64(14695981039346656037)
	for i := range n {
		h = (h ^ uint64(i)) * 1099511628211
	}
	busySink.Add(h & 1)
}

// TestChaosAccounting runs a hostile workload and then proves that every
// delivery the bus accepted was handled or dead-lettered with a reason (or,
// for a message that requires acknowledgement, retried as a new delivery):
// 60 agents with random panics and errors, floods into small mailboxes, TTLs
// that expire in queues, redeliveries, agents stopped and respawned
// mid-stream, requests that time out, and pub/sub with subscribers that come
// and go.
//
// CHAOS_SEED=n replays a run; CHAOS_DURATION (a Go duration, default 3s)
// changes its length.
func TestChaosAccounting(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seed = v
	}
	duration := 3 * time.Second
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err)
		duration = d
	}
	t.Logf("CHAOS_SEED=%d CHAOS_DURATION=%v", seed, duration)
	defer func() {
		if t.Failed() {
			t.Logf("replay with: CHAOS_SEED=%d go test -race -run TestChaosAccounting .", seed)
		}
	}()

	bus, err := agentbus.New(agentbus.Config{
		MailboxSize:    8,
		RequestTimeout: 20 * time.Millisecond,
		DLQMaxSize:     100_000,
		Retry:          agentbus.RetryConfig{MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond},
		Backpressure: agentbus.BackpressureConfig{
			MaxPending:   400,
			WaitDuration: 2 * time.Millisecond,
			Timeout:      10 * time.Millisecond,
		},
	})
	require.NoError(t, err)

	const agents = 60
	name := func(i int) string { return fmt.Sprintf("agent-%02d", i) }
	var handlerCalls atomic.Int64
	handler := agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		handlerCalls.Add(1)
		switch string(m.Payload) {
		case `"panic"`:
			panic("chaos panic")
		case `"error"`:
			return errors.New("chaos error")
		case `"slow"`:
			busyWork(50_000) // a slow handler, so that small mailboxes fill
		case `"forward"`: // a handler that sends on, into small mailboxes
			_, _ = bus.Send(ctx, direct(m.Recipient, `"ok"`))
		}
		if m.Type == agentbus.TypeRequest && string(m.Payload) != `"ignore"` {
			_, _ = bus.Reply(ctx, m, []byte(`"pong"`))
		}
		return nil
	})
	strategies := []supervisor.Strategy{
		supervisor.Default(),
		supervisor.Restarting(3, time.Second),
		supervisor.Backoff(5, time.Second, time.Millisecond, 5*time.Millisecond),
		supervisor.Resuming(),
	}
	var spawnMu sync.Mutex
	spawn := func(i int, r *rand.Rand) {
		spawnMu.Lock()
		defer spawnMu.Unlock()
		_, err := bus.Spawn(name(i), handler, agentbus.WithSupervisor(strategies[r.IntN(len(strategies))]))
		if err != nil && !errors.Is(err, agentbus.ErrAgentExists) {
			t.Errorf("spawn: %v", err)
		}
	}
	setup := rand.New(rand.NewPCG(seed, 0))
	for i := range agents {
		spawn(i, setup)
	}

	payloads := []string{`"ok"`, `"ok"`, `"ok"`, `"panic"`, `"error"`, `"slow"`, `"forward"`, `"ignore"`}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	var sent, refused atomic.Int64
	worker := func(w int) {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, uint64(w)+1))
		for ctx.Err() == nil {
			target := name(r.IntN(agents))
			body := payloads[r.IntN(len(payloads))]
			var err error
			switch op := r.IntN(100); {
			case op < 45: // direct, random priority, sometimes a TTL that expires in a queue
				m := direct(target, body).WithPriority(uint8(r.IntN(101)))
				if r.IntN(5) == 0 {
					m = m.RequireAck() // failures are redelivered
				}
				if r.IntN(4) == 0 {
					m = m.WithTTL(time.Duration(1+r.IntN(3)) * time.Millisecond)
				}
				_, err = bus.Send(ctx, m)
			case op < 55: // requests, some of which time out
				_, err = bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "chaos", []byte(body)).WithRecipient(target))
				if errors.Is(err, agentbus.ErrRequestTimeout) || errors.Is(err, agentbus.ErrHandlerPanic) {
					err = nil
				}
			case op < 75: // publish on topics whose subscribers come and go
				_, err = bus.Publish(ctx, fmt.Sprintf("chaos.%d.event", r.IntN(5)), "chaos", []byte(body))
			case op < 85:
				_ = bus.Subscribe(fmt.Sprintf("chaos.%d.*", r.IntN(5)), target)
			case op < 90:
				_ = bus.Unsubscribe(fmt.Sprintf("chaos.%d.*", r.IntN(5)), target)
			case op < 95: // broadcasts
				_, err = bus.Send(ctx, agentbus.NewMessage(agentbus.TypeBroadcast, "chaos", []byte(`"ok"`)))
			case op < 98: // stop an agent mid-stream; it comes back
				i := r.IntN(agents)
				_ = bus.Stop(ctx, name(i))
				spawn(i, r)
			default: // a late, unknown response
				_, err = bus.Send(ctx, agentbus.NewMessage(agentbus.TypeResponse, "chaos", nil).WithRequestID("unknown"))
			}
			sent.Add(1)
			if err != nil {
				refused.Add(1) // refused at the door (backpressure, stopped agent, ctx): the caller's, not the bus's
			}
		}
	}
	for w := range 4 {
		wg.Add(1)
		go worker(w)
	}
	wg.Wait()
	start := time.Now()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	require.NoError(t, bus.Shutdown(shutdownCtx))
	drain := time.Since(start)

	acct := bus.Accounting()
	counts := bus.DeadLetters().Counts()
	var reasons []string
	for r, n := range counts {
		reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
	}
	slices.Sort(reasons)
	t.Logf("operations %d (refused at the door %d), handler calls %d", sent.Load(), refused.Load(), handlerCalls.Load())
	t.Logf("accounting %+v; shutdown drain %v", acct, drain)
	t.Logf("dead letters by reason: %v", reasons)

	assert.Zero(t, acct.InFlight)
	assert.Zero(t, acct.Scheduled)
	assert.Equal(t, acct.Accepted, acct.Handled+acct.DeadLettered+acct.Retried,
		"every accepted delivery is handled, dead-lettered or retried")
	assert.Positive(t, acct.Retried, "the workload redelivered something")
	assert.Zero(t, bus.DeadLetters().Evicted(), "the queue must hold every letter for this check")
	known := map[deadletter.Reason]bool{}
	for _, r := range deadletter.Reasons {
		known[r] = true
	}
	var total uint64
	for _, l := range bus.DeadLetters().List(deadletter.Filter{}) {
		if !known[l.Reason] {
			t.Errorf("dead letter %d has no known reason: %q", l.Seq, l.Reason)
		}
		if l.Message != nil {
			total++
		}
	}
	assert.GreaterOrEqual(t, total, acct.DeadLettered, "every counted dead letter is in the queue")
	assert.Greater(t, acct.Accepted, uint64(1000), "the workload did something")
}
