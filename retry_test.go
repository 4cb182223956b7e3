package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// flaky fails the first failures deliveries of each message, then records it.
type flaky struct {
	failures int32
	panics   bool
	seen     atomic.Int32
	got      chan *agentbus.Message
}

func (f *flaky) Handle(_ context.Context, m *agentbus.Message) error {
	f.seen.Add(1)
	if m.RequiresAck && m.Attempts <= int(f.failures) {
		if f.panics {
			panic(fmt.Sprintf("attempt %d", m.Attempts))
		}
		return fmt.Errorf("attempt %d failed", m.Attempts)
	}
	f.got <- m
	return nil
}

func quickRetries(cfg agentbus.Config) agentbus.Config {
	cfg.Retry = agentbus.RetryConfig{MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}
	return cfg
}

func TestRequiresAckIsRedeliveredUntilHandled(t *testing.T) {
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("panics=%v", panics), func(t *testing.T) {
			bus := newBus(t, quickRetries(agentbus.Config{}))
			f := &flaky{failures: 2, panics: panics, got: make(chan *agentbus.Message, 4)}
			_, err := bus.Spawn("w", f)
			require.NoError(t, err)
			id, err := bus.Send(t.Context(), direct("w", `"job"`).RequireAck())
			require.NoError(t, err)
			m := recv(t, f.got)
			assert.Equal(t, id, m.ID)
			assert.Equal(t, 3, m.Attempts, "the handler sees it is a redelivery")
			assert.Zero(t, bus.DeadLetters().Len(), "failed attempts that were retried are not dead letters")
			require.Eventually(t, func() bool { return bus.Accounting().Balanced() }, 5*time.Second, time.Millisecond)
			assert.EqualValues(t, 2, bus.Accounting().Retried)
		})
	}
}

func TestRetriesExhausted(t *testing.T) {
	bus := newBus(t, quickRetries(agentbus.Config{}))
	f := &flaky{failures: 100, got: make(chan *agentbus.Message, 1)}
	_, err := bus.Spawn("w", f)
	require.NoError(t, err)
	id, err := bus.Send(t.Context(), direct("w", `"doomed"`).RequireAck())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.RetriesExhausted})) == 1
	}, 5*time.Second, time.Millisecond)
	l := bus.DeadLetters().List(deadletter.Filter{})
	require.Len(t, l, 1, "one letter, not one per attempt")
	assert.Equal(t, id, l[0].Message.ID)
	assert.Equal(t, 3, l[0].Attempts)
	assert.Contains(t, l[0].Err, "attempt 3 failed")
	assert.EqualValues(t, 3, f.seen.Load())
}

func TestAckCancelsRedeliveryAndRetriesDoNotBlock(t *testing.T) {
	cfg := agentbus.Config{Retry: agentbus.RetryConfig{Backoff: time.Hour, MaxBackoff: time.Hour}}
	bus := newBus(t, cfg)
	f := &flaky{failures: 1, got: make(chan *agentbus.Message, 4)}
	_, err := bus.Spawn("w", f)
	require.NoError(t, err)
	job, err := bus.Send(t.Context(), direct("w", `"job"`).RequireAck())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.PendingRetries() == 1 }, 5*time.Second, time.Millisecond)

	// The mailbox is free while the redelivery waits.
	_, err = bus.Send(t.Context(), direct("w", `"other"`))
	require.NoError(t, err)
	assert.Equal(t, `"other"`, string(recv(t, f.got).Payload))

	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeAck, "w", nil).WithRequestID(job))
	require.NoError(t, err)
	assert.Zero(t, bus.PendingRetries())
	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeAck, "w", nil).WithRequestID(job))
	require.ErrorIs(t, err, agentbus.ErrNotPending, "an ack for nothing pending is an error")
	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeAck, "w", nil).WithRequestID("unknown"))
	require.ErrorIs(t, err, agentbus.ErrNotPending)
	// Balanced once the handler that signalled "other" has returned.
	require.Eventually(t, func() bool { return bus.Accounting().Balanced() }, 5*time.Second, time.Millisecond)
}

func TestShutdownDeadLettersPendingRetries(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{Retry: agentbus.RetryConfig{Backoff: time.Hour, MaxBackoff: time.Hour}})
	require.NoError(t, err)
	f := &flaky{failures: 1, got: make(chan *agentbus.Message, 1)}
	_, err = bus.Spawn("w", f)
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("w", `"job"`).RequireAck())
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.PendingRetries() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, bus.Shutdown(t.Context()))
	require.Len(t, bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.Shutdown}), 1)
	a := bus.Accounting()
	assert.True(t, a.Balanced(), "%+v", a)
	assert.Zero(t, a.InFlight)
}

func TestReplay(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	var fail atomic.Bool
	fail.Store(true)
	got := make(chan *agentbus.Message, 4)
	h := agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		if fail.Load() {
			return errors.New("not yet")
		}
		got <- m
		return nil
	})
	_, err := bus.Spawn("w", h)
	require.NoError(t, err)
	other := newRecorder(4)
	_, err = bus.Spawn("other", other)
	require.NoError(t, err)

	id, err := bus.Send(t.Context(), direct("w", `"job"`).WithTTL(time.Hour))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.DeadLetters().Len() == 1 }, 5*time.Second, time.Millisecond)
	seq := bus.DeadLetters().List(deadletter.Filter{})[0].Seq

	fail.Store(false)
	rid, err := bus.Replay(t.Context(), seq, "")
	require.NoError(t, err)
	assert.Equal(t, id, rid, "a replay is the same message")
	m := recv(t, got)
	assert.Equal(t, 2, m.Attempts)
	l, ok := bus.DeadLetters().Get(seq)
	require.True(t, ok)
	assert.Equal(t, 1, l.Replays)
	assert.Equal(t, "w", l.ReplayedTo)

	_, err = bus.Replay(t.Context(), seq, "other") // to another agent
	require.NoError(t, err)
	assert.Equal(t, "other", other.next(t).Recipient)

	_, err = bus.Replay(t.Context(), 999, "")
	require.ErrorIs(t, err, agentbus.ErrUnknownLetter)
	_, err = bus.Replay(t.Context(), seq, "nobody")
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)

	// A letter that holds no agentbus message cannot be replayed.
	bus.ActorSystem().Root.Send(bus.DeadLetterPID(), 42)
	require.Eventually(t, func() bool { return bus.DeadLetters().Len() == 2 }, 5*time.Second, time.Millisecond)
	_, err = bus.Replay(t.Context(), seq+1, "")
	require.ErrorIs(t, err, agentbus.ErrInvalidMessage)
}

func TestReplayPublishAfterSubscribing(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	_, err := bus.Publish(t.Context(), "late.news", "x", []byte(`"extra"`))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.DeadLetters().Len() == 1 }, 5*time.Second, time.Millisecond)
	rec := newRecorder(1)
	_, err = bus.Spawn("reader", rec)
	require.NoError(t, err)
	require.NoError(t, bus.Subscribe("late.*", "reader"))
	_, err = bus.Replay(t.Context(), bus.DeadLetters().List(deadletter.Filter{})[0].Seq, "")
	require.NoError(t, err)
	assert.Equal(t, "late.news", rec.next(t).Topic)
}

// TestAccountingBalancedThroughARetry checks the accounting identity at every
// step of a redelivery's life: while it waits for its timer (then acked, or
// cut by shutdown), while it is queued again and handled, and after.
func TestAccountingBalancedThroughARetry(t *testing.T) {
	settled := func(t *testing.T, bus *agentbus.Bus, want agentbus.Accounting) {
		t.Helper()
		require.Eventually(t, func() bool { return bus.Accounting() == want }, 5*time.Second, time.Millisecond,
			"want %+v, have %+v", want, bus.Accounting())
		assert.True(t, want.Balanced())
	}
	ack := func(id string) *agentbus.Message {
		return agentbus.NewMessage(agentbus.TypeAck, "w", nil).WithRequestID(id)
	}
	slow := agentbus.RetryConfig{Backoff: time.Hour, MaxBackoff: time.Hour}

	t.Run("waiting, then acked", func(t *testing.T) {
		bus := newBus(t, agentbus.Config{Retry: slow})
		_, err := bus.Spawn("w", &flaky{failures: 1, got: make(chan *agentbus.Message, 1)})
		require.NoError(t, err)
		id, err := bus.Send(t.Context(), direct("w", `"job"`).RequireAck())
		require.NoError(t, err)
		settled(t, bus, agentbus.Accounting{Accepted: 1, Retried: 1, Scheduled: 1})
		assert.False(t, bus.Accounting().Idle(), "a redelivery is scheduled")

		_, err = bus.Send(t.Context(), ack(id))
		require.NoError(t, err)
		settled(t, bus, agentbus.Accounting{Accepted: 2, Handled: 1, Retried: 1})
		assert.True(t, bus.Accounting().Idle())
	})
	t.Run("waiting, then shut down", func(t *testing.T) {
		bus, err := agentbus.New(agentbus.Config{Retry: slow})
		require.NoError(t, err)
		_, err = bus.Spawn("w", &flaky{failures: 1, got: make(chan *agentbus.Message, 1)})
		require.NoError(t, err)
		_, err = bus.Send(t.Context(), direct("w", `"job"`).RequireAck())
		require.NoError(t, err)
		settled(t, bus, agentbus.Accounting{Accepted: 1, Retried: 1, Scheduled: 1})
		require.NoError(t, bus.Shutdown(t.Context()))
		assert.Equal(t, agentbus.Accounting{Accepted: 2, Retried: 1, DeadLettered: 1}, bus.Accounting())
	})
	t.Run("queued again and handled", func(t *testing.T) {
		bus := newBus(t, quickRetries(agentbus.Config{}))
		entered, release := make(chan struct{}), make(chan struct{})
		_, err := bus.Spawn("w", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
			if m.Attempts == 1 {
				return errors.New("first attempt fails")
			}
			close(entered)
			<-release
			return nil
		}))
		require.NoError(t, err)
		_, err = bus.Send(t.Context(), direct("w", `"job"`).RequireAck())
		require.NoError(t, err)
		<-entered // the redelivery is being handled: still in its mailbox's count
		settled(t, bus, agentbus.Accounting{Accepted: 2, Retried: 1, InFlight: 1})
		close(release)
		settled(t, bus, agentbus.Accounting{Accepted: 2, Handled: 1, Retried: 1})
	})
	t.Run("waiting, then its agent is gone", func(t *testing.T) {
		bus := newBus(t, quickRetries(agentbus.Config{}))
		stopped := make(chan struct{})
		_, err := bus.Spawn("w", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
			go func() { // from outside the handler, which Stop would wait for
				_ = bus.Stop(context.Background(), "w")
				close(stopped)
			}()
			return errors.New("fails, and its agent stops")
		}))
		require.NoError(t, err)
		_, err = bus.Send(t.Context(), direct("w", `"job"`).RequireAck())
		require.NoError(t, err)
		<-stopped
		settled(t, bus, agentbus.Accounting{Accepted: 2, Retried: 1, DeadLettered: 1})
		// The redelivery is dead-lettered as no_recipient if its timer
		// fires after the stop, as agent_stopped if it was queued before.
		letters := bus.DeadLetters().List(deadletter.Filter{})
		require.Len(t, letters, 1)
		assert.Contains(t, []deadletter.Reason{deadletter.NoRecipient, deadletter.AgentStopped}, letters[0].Reason)
	})
}
