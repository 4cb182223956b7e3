package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/supervisor"
)

// crasher panics on payload "panic", fails on "fail", records the rest.
type crasher struct{ got chan string }

func (c *crasher) Handle(_ context.Context, m *agentbus.Message) error {
	switch p := string(m.Payload); p {
	case `"panic"`:
		panic("crash on " + p)
	case `"fail"`:
		return errBadInput
	default:
		c.got <- p
		return nil
	}
}

var errBadInput = errors.New("bad input")

// nextEvent returns the next event of kind from sub, skipping others.
func nextEvent(t *testing.T, sub *agentbus.Subscription, kind agentbus.EventKind) agentbus.Event {
	t.Helper()
	for {
		select {
		case e, ok := <-sub.C():
			require.True(t, ok, "subscription closed")
			if e.Kind == kind {
				return e
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %v event within 10s", kind)
		}
	}
}

func TestSupervisionStrategies(t *testing.T) {
	tests := []struct {
		name          string
		strategy      supervisor.Strategy
		wantDirective supervisor.Directive
		wantRestart   bool // the agent comes back
		wantStopped   error
	}{
		{"default restarts", supervisor.Default(), supervisor.Restart, true, nil},
		{"restart", supervisor.Restarting(3, time.Minute), supervisor.Restart, true, nil},
		{"backoff", supervisor.Backoff(3, time.Minute, 20*time.Millisecond, time.Second), supervisor.Restart, true, nil},
		{"resume", supervisor.Resuming(), supervisor.Resume, false, nil},
		{"stop", supervisor.Stopping(), supervisor.Stop, false, supervisor.ErrStoppedBySupervisor},
		{"escalate", supervisor.Escalating(), supervisor.Escalate, false, supervisor.ErrStoppedBySupervisor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bus := newBus(t, agentbus.Config{})
			events, err := bus.Events(64)
			require.NoError(t, err)
			c := &crasher{got: make(chan string, 8)}
			_, err = bus.Spawn("w", c, agentbus.WithSupervisor(tt.strategy))
			require.NoError(t, err)
			nextEvent(t, events, agentbus.EventStarted)

			crash := direct("w", `"panic"`)
			_, err = bus.Send(t.Context(), crash)
			require.NoError(t, err)
			e := nextEvent(t, events, agentbus.EventSupervised)
			assert.Equal(t, "w", e.Agent)
			assert.Equal(t, tt.wantDirective, e.Supervision.Directive)
			require.ErrorIs(t, e.Supervision.Failure, agentbus.ErrHandlerPanic)
			if tt.name == "backoff" {
				assert.Equal(t, 20*time.Millisecond, e.Supervision.Delay)
			}

			// The message that crashed the agent is a dead letter.
			l := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerPanic})
			require.Len(t, l, 1)
			assert.Equal(t, crash.ID, l[0].Message.ID)
			assert.Contains(t, l[0].Err, "crash on")

			if tt.wantRestart {
				r := nextEvent(t, events, agentbus.EventRestarted)
				assert.Equal(t, 1, r.Restarts)
			}
			if tt.wantStopped != nil {
				s := nextEvent(t, events, agentbus.EventStopped)
				require.ErrorIs(t, s.Err, tt.wantStopped)
				_, ok := bus.PID("w")
				assert.False(t, ok)
				return
			}
			_, err = bus.Send(t.Context(), direct("w", `"after"`))
			require.NoError(t, err)
			assert.Equal(t, `"after"`, recv(t, c.got))
		})
	}
}

func TestRestartLimitStopsAndDeadLettersTheQueue(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	g := newGate(&crasher{got: make(chan string, 8)})
	_, err := bus.Spawn("w", g, agentbus.WithSupervisor(supervisor.Restarting(1, time.Minute)))
	require.NoError(t, err)
	sub, err := bus.Watch("w", 64)
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("w", `"hold"`))
	require.NoError(t, err)
	<-g.Entered
	// Queued behind the gate: two crashes, then work that never runs.
	for _, p := range []string{`"panic"`, `"panic"`, `"a"`, `"b"`} {
		_, err = bus.Send(t.Context(), direct("w", p).WithPriority(50))
		require.NoError(t, err)
	}
	close(g.Open)
	e := nextEvent(t, sub, agentbus.EventSupervised)
	assert.Equal(t, supervisor.Restart, e.Supervision.Directive)
	e = nextEvent(t, sub, agentbus.EventSupervised)
	assert.Equal(t, supervisor.Stop, e.Supervision.Directive)
	require.ErrorIs(t, e.Supervision.Stopped, supervisor.ErrRestartLimit)
	s := nextEvent(t, sub, agentbus.EventStopped)
	require.ErrorIs(t, s.Err, supervisor.ErrRestartLimit)

	letters := bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.RestartLimit})
	require.Len(t, letters, 2)
	assert.Equal(t, `"a"`, string(letters[0].Message.Payload))
	assert.Len(t, bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerPanic}), 2)
	_, err = bus.Spawn("w", newRecorder(1)) // the name is free again
	require.NoError(t, err)
}

func TestDeciderChoosesPerFailure(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	events, err := bus.Events(64)
	require.NoError(t, err)
	c := &crasher{got: make(chan string, 8)}
	decider := func(err error) supervisor.Directive {
		if errors.Is(err, errBadInput) {
			return supervisor.Restart // even a returned error restarts this agent
		}
		return supervisor.Resume
	}
	_, err = bus.Spawn("w", c, agentbus.WithSupervisor(supervisor.Restarting(5, time.Minute).WithDecider(decider)))
	require.NoError(t, err)

	_, err = bus.Send(t.Context(), direct("w", `"fail"`))
	require.NoError(t, err)
	e := nextEvent(t, events, agentbus.EventSupervised)
	assert.Equal(t, supervisor.Restart, e.Supervision.Directive)
	require.ErrorIs(t, e.Supervision.Failure, errBadInput)
	nextEvent(t, events, agentbus.EventRestarted)
	assert.Len(t, bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerError}), 1)

	_, err = bus.Send(t.Context(), direct("w", `"panic"`))
	require.NoError(t, err)
	e = nextEvent(t, events, agentbus.EventSupervised)
	assert.Equal(t, supervisor.Resume, e.Supervision.Directive)
}

func TestPanickingDeciderFallsBack(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	events, err := bus.Events(64)
	require.NoError(t, err)
	bad := func(error) supervisor.Directive { panic("decider bug") }
	_, err = bus.Spawn("w", &crasher{got: make(chan string, 1)}, agentbus.WithSupervisor(supervisor.Restarting(5, time.Minute).WithDecider(bad)))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("w", `"panic"`))
	require.NoError(t, err)
	e := nextEvent(t, events, agentbus.EventSupervised)
	assert.Equal(t, supervisor.Restart, e.Supervision.Directive, "the strategy's own directive applies")
	require.ErrorIs(t, e.Supervision.Note, supervisor.ErrDeciderPanicked)
}

func TestInvalidStrategies(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	for _, s := range []supervisor.Strategy{
		supervisor.Restarting(-1, time.Second),
		supervisor.Restarting(1, -time.Second),
		supervisor.Backoff(1, time.Second, -time.Millisecond, time.Second),
		supervisor.Backoff(1, time.Second, time.Second, time.Millisecond),
	} {
		_, err := bus.Spawn("w", newRecorder(1), agentbus.WithSupervisor(s))
		require.ErrorIs(t, err, agentbus.ErrInvalidAgent)
		require.ErrorIs(t, err, supervisor.ErrInvalidStrategy)
	}
}

func TestEventSubscribersNeverBlockTheBus(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	lazy, err := bus.Events(2) // never read
	require.NoError(t, err)
	rec := newRecorder(64)
	_, err = bus.Spawn("w", rec)
	require.NoError(t, err)
	for i := range 20 {
		_, err := bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeResponse, "x", nil).WithRequestID(fmt.Sprint("r", i)))
		require.NoError(t, err) // each an orphan_response dead letter, each an event
	}
	require.Eventually(t, func() bool { return lazy.Missed() >= 18 }, 5*time.Second, time.Millisecond)
	assert.Len(t, lazy.C(), 2)
	lazy.Close()
	lazy.Close() // idempotent

	_, err = bus.Watch("nobody", 1)
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)
}

func TestShutdownClosesEventSubscriptions(t *testing.T) {
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	sub, err := bus.Events(8)
	require.NoError(t, err)
	require.NoError(t, bus.Shutdown(t.Context()))
	for range sub.C() { // drains, then ends: the channel is closed
	}
	_, err = bus.Events(1)
	require.ErrorIs(t, err, agentbus.ErrClosed)
}

// TestSendToAgentStoppingBySupervisor checks that a send to an agent its
// supervisor is stopping (its mailbox closed, its name not yet free) is
// refused as for any stopped agent: ErrNoRecipient, counted as no_recipient.
// The send is made from an observer of the dead letters of the agent's queue,
// which the bus reports while the agent stops, so it lands in that window
// every time.
func TestSendToAgentStoppingBySupervisor(t *testing.T) {
	tests := []struct {
		name      string
		strategy  supervisor.Strategy
		crashes   int
		wantCause error
	}{
		{name: "stopping strategy", strategy: supervisor.Stopping(), crashes: 1, wantCause: supervisor.ErrStoppedBySupervisor},
		{name: "restart limit", strategy: supervisor.Restarting(1, time.Minute), crashes: 2, wantCause: supervisor.ErrRestartLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bus *agentbus.Bus
			sent := make(chan error, 1)
			during := agentbus.ObserverFunc(func(o agentbus.Outcome) {
				if o.Kind == agentbus.OutcomeDeadLettered && o.Dest == "w" && string(o.Message.Payload) == `"queued"` {
					_, err := bus.Send(context.Background(), direct("w", `"late"`))
					sent <- err
				}
			})
			bus = newBus(t, agentbus.Config{Observers: []agentbus.Observer{during}})
			g := newGate(&crasher{got: make(chan string, 8)})
			_, err := bus.Spawn("w", g, agentbus.WithSupervisor(tt.strategy))
			require.NoError(t, err)
			_, err = bus.Send(t.Context(), direct("w", `"hold"`))
			require.NoError(t, err)
			<-g.Entered
			for range tt.crashes {
				_, err = bus.Send(t.Context(), direct("w", `"panic"`))
				require.NoError(t, err)
			}
			_, err = bus.Send(t.Context(), direct("w", `"queued"`))
			require.NoError(t, err)
			close(g.Open)

			err = recv(t, sent)
			require.ErrorIs(t, err, agentbus.ErrNoRecipient)
			require.ErrorIs(t, err, tt.wantCause, "the cause is kept")
			s := bus.Stats()
			assert.EqualValues(t, 1, s.Rejected["no_recipient"])
			assert.Zero(t, s.Rejected["other"])
		})
	}
}
