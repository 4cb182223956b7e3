package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
)

// call is one call a Supervisor made on its actor.Supervisor.
type call struct {
	op  string // "restart", "stop", "resume" or "escalate"
	ids []string
}

// fakeParent is the actor.Supervisor a Supervisor acts on (protoactor's
// guardian, in a bus). It records every call on a channel.
type fakeParent struct {
	calls chan call
	hold  chan struct{} // if not nil, RestartChildren waits until it is closed
}

var _ actor.Supervisor = (*fakeParent)(nil)

func newFakeParent() *fakeParent { return &fakeParent{calls: make(chan call, 100)} }

func (p *fakeParent) record(op string, pids []*actor.PID) {
	c := call{op: op}
	for _, pid := range pids {
		c.ids = append(c.ids, pid.Id)
	}
	p.calls <- c
}

func (p *fakeParent) Children() []*actor.PID             { return nil }
func (p *fakeParent) EscalateFailure(_, _ any)           { p.record("escalate", nil) }
func (p *fakeParent) StopChildren(pids ...*actor.PID)    { p.record("stop", pids) }
func (p *fakeParent) ResumeChildren(pids ...*actor.PID)  { p.record("resume", pids) }
func (p *fakeParent) RestartChildren(pids ...*actor.PID) { p.wait(); p.record("restart", pids) }
func (p *fakeParent) wait() {
	if p.hold != nil {
		<-p.hold
	}
}

// next returns the call made so far that was recorded first. A Supervisor
// calls its parent before HandleFailure returns (or on a timer the caller
// waited for), so the call must be there already.
func (p *fakeParent) next(t *testing.T) call {
	t.Helper()
	select {
	case c := <-p.calls:
		return c
	default:
		require.FailNow(t, "no call on the parent")
		return call{}
	}
}

// none asserts that no call was made.
func (p *fakeParent) none(t *testing.T) {
	t.Helper()
	select {
	case c := <-p.calls:
		assert.Failf(t, "unexpected call on the parent", "%+v", c)
	default:
	}
}

// newTestSupervisor returns a Supervisor that records its events.
func newTestSupervisor() (*Supervisor, chan Event) {
	events := make(chan Event, 100)
	return New(func(e Event) { events <- e }), events
}

// nextEvent returns the first recorded event; HandleFailure reports it
// before it returns.
func nextEvent(t *testing.T, events chan Event) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	default:
		require.FailNow(t, "no event")
		return Event{}
	}
}

func noEvent(t *testing.T, events chan Event) {
	t.Helper()
	select {
	case e := <-events:
		assert.Failf(t, "unexpected event", "%+v", e)
	default:
	}
}

// fail reports reason as the failure of the child whose PID id is id.
func fail(s *Supervisor, p actor.Supervisor, id string, reason any) {
	s.HandleFailure(nil, p, actor.NewPID("nonhost", id), nil, reason, "the message")
}

func TestHandleFailureUnknownChild(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, s *Supervisor)
	}{
		{name: "never added", setup: func(*testing.T, *Supervisor) {}},
		{name: "other added", setup: func(_ *testing.T, s *Supervisor) { s.Add("other", "other", Default()) }},
		{name: "removed", setup: func(t *testing.T, s *Supervisor) {
			s.Add("a", "a", Default())
			require.NoError(t, s.Remove("a"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, events := newTestSupervisor()
			p := newFakeParent()
			tt.setup(t, s)

			fail(s, p, "a", panicked("boom"))
			assert.Equal(t, call{op: "stop", ids: []string{"a"}}, p.next(t))
			p.none(t)
			noEvent(t, events)
			assert.NoError(t, s.Remove("a"), "not stopped as a known agent")
		})
	}
}

func TestHandleFailure(t *testing.T) {
	always := func(d Directive) Decider { return func(error) Directive { return d } }
	panicErr := panicked("boom")
	plainErr := errors.New("handler error")
	tests := []struct {
		name        string
		strategy    Strategy
		reason      any
		wantOp      string
		wantEvent   Event // Agent and Time are checked apart
		wantNote    error
		wantDecided int   // decider calls
		wantRemove  error // what Remove returns afterwards
	}{
		{
			name: "default restarts a panic", strategy: Default(), reason: panicErr,
			wantOp: "restart", wantEvent: Event{Failure: panicErr, Directive: Restart, Restarts: 1}, wantDecided: 1,
		},
		{
			name: "zero strategy restarts a panic", strategy: Strategy{}, reason: panicErr,
			wantOp: "restart", wantEvent: Event{Failure: panicErr, Directive: Restart, Restarts: 1}, wantDecided: 1,
		},
		{
			name: "default resumes an error", strategy: Default(), reason: plainErr,
			wantOp: "resume", wantEvent: Event{Failure: plainErr, Directive: Resume}, wantDecided: 1,
		},
		{
			name: "resuming resumes a panic", strategy: Resuming(), reason: panicErr,
			wantOp: "resume", wantEvent: Event{Failure: panicErr, Directive: Resume}, wantDecided: 1,
		},
		{
			name: "stopping stops", strategy: Stopping(), reason: panicErr, wantOp: "stop",
			wantEvent:   Event{Failure: panicErr, Directive: Stop, Stopped: ErrStoppedBySupervisor},
			wantDecided: 1, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "escalating stops", strategy: Escalating(), reason: panicErr, wantOp: "stop",
			wantEvent:   Event{Failure: panicErr, Directive: Escalate, Stopped: ErrStoppedBySupervisor},
			wantDecided: 1, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "no restart allowed", strategy: Restarting(0, time.Minute), reason: panicErr, wantOp: "stop",
			wantEvent:   Event{Failure: panicErr, Directive: Stop, Restarts: 1, Stopped: ErrRestartLimit},
			wantDecided: 1, wantRemove: ErrRestartLimit,
		},
		{
			name: "custom decider", strategy: Default().WithDecider(always(Escalate)), reason: plainErr, wantOp: "stop",
			wantEvent:   Event{Failure: plainErr, Directive: Escalate, Stopped: ErrStoppedBySupervisor},
			wantDecided: 1, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "decided stop", strategy: Default(), reason: &Failure{Err: panicErr, Directive: Stop}, wantOp: "stop",
			wantEvent:   Event{Failure: panicErr, Directive: Stop, Stopped: ErrStoppedBySupervisor},
			wantDecided: 0, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "decided escalate", strategy: Resuming(), reason: &Failure{Err: plainErr, Directive: Escalate}, wantOp: "stop",
			wantEvent:   Event{Failure: plainErr, Directive: Escalate, Stopped: ErrStoppedBySupervisor},
			wantDecided: 0, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "decided resume", strategy: Stopping(), reason: &Failure{Err: panicErr, Directive: Resume},
			wantOp: "resume", wantEvent: Event{Failure: panicErr, Directive: Resume}, wantDecided: 0,
		},
		{
			name: "decided restart", strategy: Restarting(1, time.Minute), reason: &Failure{Err: plainErr, Directive: Restart},
			wantOp: "restart", wantEvent: Event{Failure: plainErr, Directive: Restart, Restarts: 1}, wantDecided: 0,
		},
		{
			// An out-of-range directive must not leave the child suspended:
			// the strategy's own applies, as for a decider's.
			name: "decided nonsense", strategy: Stopping(), reason: &Failure{Err: plainErr, Directive: 99}, wantOp: "stop",
			wantEvent:   Event{Failure: plainErr, Directive: Stop, Stopped: ErrStoppedBySupervisor},
			wantNote:    ErrInvalidStrategy,
			wantDecided: 0, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "decided nonsense on a restarting agent", strategy: Default(), reason: &Failure{Err: plainErr, Directive: Escalate + 1},
			wantOp: "restart", wantEvent: Event{Failure: plainErr, Directive: Restart, Restarts: 1}, wantNote: ErrInvalidStrategy,
		},
		{
			name: "undecided failure", strategy: Stopping(), reason: &Failure{Err: panicErr}, wantOp: "stop",
			wantEvent:   Event{Failure: panicErr, Directive: Stop, Stopped: ErrStoppedBySupervisor},
			wantDecided: 1, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "decider panics", strategy: Stopping().WithDecider(func(error) Directive { panic("bug") }),
			reason: plainErr, wantOp: "stop",
			wantEvent:   Event{Failure: plainErr, Directive: Stop, Stopped: ErrStoppedBySupervisor},
			wantNote:    ErrDeciderPanicked,
			wantDecided: 1, wantRemove: ErrStoppedBySupervisor,
		},
		{
			name: "decider returns nonsense", strategy: Resuming().WithDecider(always(0)),
			reason: panicErr, wantOp: "resume",
			wantEvent: Event{Failure: panicErr, Directive: Resume}, wantNote: ErrInvalidStrategy, wantDecided: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, events := newTestSupervisor()
			p := newFakeParent()

			// Count the decider's calls, whichever decider it is.
			decided := 0
			st := tt.strategy.orDefault()
			inner := st.decider
			if inner == nil {
				inner = defaultDecider(st.directive)
			}
			st.decider = func(f error) Directive {
				decided++
				return inner(f)
			}
			s.Add("pid-1", "worker", st)

			before := time.Now()
			fail(s, p, "pid-1", tt.reason)
			assert.Equal(t, call{op: tt.wantOp, ids: []string{"pid-1"}}, p.next(t))
			p.none(t)
			assert.Equal(t, tt.wantDecided, decided, "decider calls")

			ev := nextEvent(t, events)
			noEvent(t, events)
			assert.Equal(t, "worker", ev.Agent, "the agent's name, not its PID id")
			assert.False(t, ev.Time.Before(before))
			if tt.wantNote == nil {
				assert.NoError(t, ev.Note)
			} else {
				assert.ErrorIs(t, ev.Note, tt.wantNote)
			}
			ev.Agent, ev.Time, ev.Note = "", time.Time{}, nil
			assert.Equal(t, tt.wantEvent, ev)

			assert.Equal(t, tt.wantRemove, s.Remove("pid-1"))
			assert.NoError(t, s.Remove("pid-1"), "removed")
		})
	}
}

func TestHandleFailureNonErrorReason(t *testing.T) {
	tests := []struct {
		name    string
		reason  any
		wantMsg string
	}{
		{name: "string", reason: "boom", wantMsg: "agentbus: failure: boom"},
		{name: "int", reason: 42, wantMsg: "agentbus: failure: 42"},
		{name: "nil", reason: nil, wantMsg: "agentbus: failure: <nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, events := newTestSupervisor()
			p := newFakeParent()
			var got error
			s.Add("a", "a", Default().WithDecider(func(f error) Directive {
				got = f
				return Restart
			}))

			fail(s, p, "a", tt.reason)
			require.EqualError(t, got, tt.wantMsg, "the decider gets an error")
			assert.Equal(t, "restart", p.next(t).op)
			ev := nextEvent(t, events)
			assert.Same(t, got, ev.Failure)
		})
	}
}

func TestHandleFailureDefaultDeciderOnNonError(t *testing.T) {
	// A raw protoactor panic value is no *actors.HandlerPanicError: the
	// default decider takes it for a handler error and resumes.
	s, events := newTestSupervisor()
	p := newFakeParent()
	s.Add("a", "a", Default())
	fail(s, p, "a", "boom")
	assert.Equal(t, call{op: "resume", ids: []string{"a"}}, p.next(t))
	ev := nextEvent(t, events)
	assert.Equal(t, Resume, ev.Directive)
	assert.EqualError(t, ev.Failure, "agentbus: failure: boom")
}

func TestRestartLimit(t *testing.T) {
	panicErr := panicked("boom")
	plainErr := errors.New("handler error")
	tests := []struct {
		name         string
		strategy     Strategy
		reasons      []any
		wantOps      []string
		wantRestarts []int
		wantRemove   error
	}{
		{
			name:         "third failure stops",
			strategy:     Restarting(2, time.Minute),
			reasons:      []any{panicErr, panicErr, panicErr},
			wantOps:      []string{"restart", "restart", "stop"},
			wantRestarts: []int{1, 2, 3},
			wantRemove:   ErrRestartLimit,
		},
		{
			name:         "resumed errors do not count",
			strategy:     Restarting(2, time.Minute),
			reasons:      []any{panicErr, plainErr, panicErr, plainErr, plainErr, panicErr},
			wantOps:      []string{"restart", "resume", "restart", "resume", "resume", "stop"},
			wantRestarts: []int{1, 0, 2, 0, 0, 3},
			wantRemove:   ErrRestartLimit,
		},
		{
			name:         "decided restarts count",
			strategy:     Restarting(1, 0),
			reasons:      []any{&Failure{Err: plainErr, Directive: Restart}, panicErr},
			wantOps:      []string{"restart", "stop"},
			wantRestarts: []int{1, 2},
			wantRemove:   ErrRestartLimit,
		},
		{
			name:         "within the limit",
			strategy:     Restarting(3, time.Minute),
			reasons:      []any{panicErr, panicErr, panicErr},
			wantOps:      []string{"restart", "restart", "restart"},
			wantRestarts: []int{1, 2, 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, events := newTestSupervisor()
			p := newFakeParent()
			s.Add("a", "a", tt.strategy)

			for i, reason := range tt.reasons {
				fail(s, p, "a", reason)
				assert.Equal(t, call{op: tt.wantOps[i], ids: []string{"a"}}, p.next(t), "failure %d", i+1)
				ev := nextEvent(t, events)
				assert.Equal(t, tt.wantRestarts[i], ev.Restarts, "failure %d", i+1)
				if tt.wantOps[i] == "stop" {
					assert.Equal(t, Stop, ev.Directive)
					assert.Equal(t, ErrRestartLimit, ev.Stopped)
				} else {
					assert.NoError(t, ev.Stopped)
				}
			}
			assert.Equal(t, tt.wantRemove, s.Remove("a"))
		})
	}
}

func TestRestartWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, events := newTestSupervisor()
		p := newFakeParent()
		s.Add("a", "a", Restarting(2, time.Minute))
		steps := []struct {
			after        time.Duration // since the previous failure
			wantOp       string
			wantRestarts int
		}{
			{after: 0, wantOp: "restart", wantRestarts: 1},                // t=0
			{after: 30 * time.Second, wantOp: "restart", wantRestarts: 2}, // t=30s
			{after: 31 * time.Second, wantOp: "restart", wantRestarts: 2}, // t=61s: t=0 is out
			{after: 60 * time.Second, wantOp: "restart", wantRestarts: 2}, // t=121s: t=30s is out, t=61s just in
			{after: 0, wantOp: "stop", wantRestarts: 3},                   // t=121s
		}
		for i, st := range steps {
			time.Sleep(st.after)
			fail(s, p, "a", panicked(i))
			assert.Equal(t, st.wantOp, p.next(t).op, "step %d", i)
			assert.Equal(t, st.wantRestarts, nextEvent(t, events).Restarts, "step %d", i)
		}
		assert.Equal(t, ErrRestartLimit, s.Remove("a"))
	})
}

func TestRestartWindowForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, events := newTestSupervisor()
		p := newFakeParent()
		s.Add("a", "a", Restarting(2, 0))
		for i, want := range []string{"restart", "restart", "stop"} {
			fail(s, p, "a", panicked(i))
			assert.Equal(t, want, p.next(t).op)
			assert.Equal(t, i+1, nextEvent(t, events).Restarts)
			time.Sleep(1000 * time.Hour)
		}
		assert.Equal(t, ErrRestartLimit, s.Remove("a"))
	})
}

func TestBackoff(t *testing.T) {
	const ms = time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		s, events := newTestSupervisor()
		p := newFakeParent()
		s.Add("a", "worker", Backoff(5, time.Hour, 10*ms, 40*ms))

		for i, want := range []time.Duration{10 * ms, 20 * ms, 40 * ms, 40 * ms, 40 * ms} {
			failed := time.Now()
			fail(s, p, "a", panicked(i))
			p.none(t) // no restart at once

			ev := nextEvent(t, events)
			assert.Equal(t, Restart, ev.Directive, "failure %d", i+1)
			assert.Equal(t, want, ev.Delay, "failure %d", i+1)
			assert.Equal(t, i+1, ev.Restarts)
			assert.Equal(t, "worker", ev.Agent)
			assert.Equal(t, failed, ev.Time)

			time.Sleep(want - 1)
			synctest.Wait()
			p.none(t)                   // not yet
			time.Sleep(time.Nanosecond) // the last nanosecond of the delay, in the bubble's fake time
			synctest.Wait()
			assert.Equal(t, call{op: "restart", ids: []string{"a"}}, p.next(t), "failure %d", i+1)
		}

		// The sixth failure within the window stops at once.
		fail(s, p, "a", panicked(6))
		assert.Equal(t, call{op: "stop", ids: []string{"a"}}, p.next(t))
		ev := nextEvent(t, events)
		assert.Equal(t, Stop, ev.Directive)
		assert.Zero(t, ev.Delay)
		assert.Equal(t, ErrRestartLimit, ev.Stopped)
		assert.Equal(t, 6, ev.Restarts)
		assert.Equal(t, ErrRestartLimit, s.Remove("a"))
		s.Close()
	})
}

func TestBackoffWindowResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, events := newTestSupervisor()
		p := newFakeParent()
		s.Add("a", "a", Backoff(5, time.Minute, time.Second, 8*time.Second))
		for i, want := range []time.Duration{time.Second, 2 * time.Second, time.Second} {
			fail(s, p, "a", panicked(i))
			assert.Equal(t, want, nextEvent(t, events).Delay, "failure %d", i+1)
			time.Sleep(want)
			synctest.Wait()
			assert.Equal(t, "restart", p.next(t).op)
			if i == 1 {
				time.Sleep(2 * time.Minute) // both failures leave the window
			}
		}
	})
}

func TestBackoffRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, events := newTestSupervisor()
		p := newFakeParent()

		// Removed before the timer fires: no restart.
		s.Add("a", "a", Backoff(3, time.Minute, time.Second, time.Second))
		fail(s, p, "a", panicked(1))
		assert.Equal(t, time.Second, nextEvent(t, events).Delay)
		require.NoError(t, s.Remove("a"))
		time.Sleep(time.Hour)
		synctest.Wait()
		p.none(t)

		// Removed after the timer fired: nothing to cancel.
		s.Add("b", "b", Backoff(3, time.Minute, time.Second, time.Second))
		fail(s, p, "b", panicked(1))
		assert.Equal(t, 1, nextEvent(t, events).Restarts)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, call{op: "restart", ids: []string{"b"}}, p.next(t))
		require.NoError(t, s.Remove("b"))

		// Re-added under the same id: a fresh history.
		s.Add("b", "b", Backoff(3, time.Minute, time.Second, time.Second))
		fail(s, p, "b", panicked(2))
		assert.Equal(t, 1, nextEvent(t, events).Restarts)
		time.Sleep(time.Second)
		synctest.Wait()
		assert.Equal(t, "restart", p.next(t).op)

		s.Close() // returns: no timer is counted twice or left behind
		p.none(t)
	})
}

func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, events := newTestSupervisor()
		p := newFakeParent()
		for _, id := range []string{"a", "b"} {
			s.Add(id, id, Backoff(3, time.Minute, time.Second, time.Second))
			fail(s, p, id, panicked(id))
			assert.Equal(t, time.Second, nextEvent(t, events).Delay)
		}
		s.Add("c", "c", Default())

		s.Close()
		time.Sleep(time.Hour)
		synctest.Wait()
		p.none(t) // the pending restarts were cancelled

		// Every later failure stops its agent, whatever its strategy.
		for _, reason := range []any{panicked(1), errors.New("x"), &Failure{Err: errors.New("x"), Directive: Resume}} {
			for _, id := range []string{"a", "c", "unknown"} {
				fail(s, p, id, reason)
				assert.Equal(t, call{op: "stop", ids: []string{id}}, p.next(t))
			}
		}
		s.Add("d", "d", Resuming())
		fail(s, p, "d", errors.New("x"))
		assert.Equal(t, call{op: "stop", ids: []string{"d"}}, p.next(t))
		noEvent(t, events)

		assert.NoError(t, s.Remove("a"))
		s.Close() // again
	})
}

func TestCloseWaitsForRunningRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, events := newTestSupervisor()
		p := newFakeParent()
		p.hold = make(chan struct{})
		s.Add("a", "a", Backoff(3, time.Minute, time.Second, time.Second))
		fail(s, p, "a", panicked(1))
		nextEvent(t, events)
		time.Sleep(time.Second)
		synctest.Wait() // the timer's RestartChildren is waiting on hold

		closed := make(chan struct{})
		go func() {
			s.Close()
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			require.FailNow(t, "Close returned while a restart was running")
		default:
		}

		close(p.hold)
		synctest.Wait()
		select {
		case <-closed:
		default:
			require.FailNow(t, "Close did not return after the restart")
		}
		assert.Equal(t, call{op: "restart", ids: []string{"a"}}, p.next(t))
	})
}

func TestSupervisorDecide(t *testing.T) {
	s, events := newTestSupervisor()
	s.Add("r", "r", Restarting(1, time.Minute))
	s.Add("s", "s", Stopping())
	s.Add("z", "z", Strategy{})
	s.Add("bad", "bad", Escalating().WithDecider(func(error) Directive { panic("bug") }))
	s.Add("gone", "gone", Stopping())
	require.NoError(t, s.Remove("gone"))

	tests := []struct {
		id      string
		failure error
		want    Directive
	}{
		{id: "r", failure: panicked(1), want: Restart},
		{id: "r", failure: errors.New("x"), want: Resume},
		{id: "s", failure: panicked(1), want: Stop},
		{id: "s", failure: errors.New("x"), want: Resume},
		{id: "z", failure: panicked(1), want: Restart},
		{id: "bad", failure: errors.New("x"), want: Escalate},
		{id: "unknown", failure: panicked(1), want: Resume},
		{id: "gone", failure: panicked(1), want: Resume},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %v", tt.id, tt.failure), func(t *testing.T) {
			assert.Equal(t, tt.want, s.Decide(tt.id, tt.failure))
		})
	}

	// Deciding neither counts a failure nor reports one.
	noEvent(t, events)
	p := newFakeParent()
	fail(s, p, "r", panicked(1))
	assert.Equal(t, "restart", p.next(t).op)
	assert.Equal(t, 1, nextEvent(t, events).Restarts)
}

// countingParent is an actor.Supervisor that only counts calls, for many
// goroutines.
type countingParent struct{ restarts, stops, resumes atomic.Int64 }

func (p *countingParent) Children() []*actor.PID             { return nil }
func (p *countingParent) EscalateFailure(_, _ any)           {}
func (p *countingParent) RestartChildren(pids ...*actor.PID) { p.restarts.Add(int64(len(pids))) }
func (p *countingParent) StopChildren(pids ...*actor.PID)    { p.stops.Add(int64(len(pids))) }
func (p *countingParent) ResumeChildren(pids ...*actor.PID)  { p.resumes.Add(int64(len(pids))) }

func TestConcurrent(t *testing.T) {
	const workers, rounds = 8, 50
	var (
		mu     sync.Mutex
		byName = map[string]int{}
	)
	s := New(func(e Event) {
		mu.Lock()
		byName[e.Agent]++
		mu.Unlock()
	})
	p := &countingParent{}

	var wg sync.WaitGroup
	for w := range workers {
		// Each worker owns its ids, so what it sees is deterministic.
		wg.Go(func() {
			for r := range rounds {
				id := fmt.Sprintf("w%d-%d", w, r)
				s.Add(id, "owned", Restarting(2, time.Minute))
				for range 3 {
					fail(s, p, id, panicked(r))
				}
				assert.Equal(t, Resume, s.Decide(id, errors.New("x")))
				assert.Equal(t, ErrRestartLimit, s.Remove(id))
			}
		})
		// And all share one id, with backoff timers racing Remove.
		wg.Go(func() {
			for r := range rounds {
				s.Add("shared", "shared", Backoff(1000, time.Minute, time.Microsecond, time.Millisecond))
				fail(s, p, "shared", panicked(r))
				s.Decide("shared", panicked(r))
				_ = s.Remove("shared")
				fail(s, p, "shared", errors.New("x"))
			}
		})
	}
	wg.Wait()
	s.Close()

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, workers*rounds*3, byName["owned"])
	assert.GreaterOrEqual(t, p.stops.Load(), int64(workers*rounds), "every owned id stopped once")
	assert.GreaterOrEqual(t, p.restarts.Load(), int64(workers*rounds*2))
}

func TestWithProtoactor(t *testing.T) {
	system := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		// A dead letter starts a protoactor goroutine that lives for this
		// interval (1s by default), longer than goleak waits for it.
		actor.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	defer system.Shutdown()
	events := make(chan Event, 10)
	sup := New(func(e Event) { events <- e })
	defer sup.Close()

	const name = "worker"
	sup.Add(name, name, Restarting(1, time.Minute))
	got := make(chan any, 20)
	props := actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *actor.Started, *actor.Restarting, *actor.Stopping, *actor.Stopped:
			got <- m
		case string:
			if m == "panic" {
				panic(&actors.HandlerPanicError{Agent: name, Value: "boom"})
			}
			got <- m
		}
	}, actor.WithGuardian(sup))
	pid, err := system.Root.SpawnNamed(props, name)
	require.NoError(t, err)
	require.Equal(t, name, pid.Id)

	want := func(what any) {
		t.Helper()
		select {
		case m := <-got:
			require.IsType(t, what, m)
			if s, ok := what.(string); ok {
				require.Equal(t, s, m)
			}
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no message", "want %T", what)
		}
	}
	nextEv := func() Event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no event")
			return Event{}
		}
	}

	want(&actor.Started{})
	system.Root.Send(pid, "panic")
	want(&actor.Restarting{})
	want(&actor.Started{})
	first := nextEv()
	system.Root.Send(pid, "ping")
	want("ping") // the restarted actor handles messages

	system.Root.Send(pid, "panic")
	want(&actor.Stopping{})
	want(&actor.Stopped{})
	second := nextEv()

	assert.Equal(t, name, first.Agent)
	assert.Equal(t, Restart, first.Directive)
	assert.Equal(t, 1, first.Restarts)
	assert.ErrorIs(t, first.Failure, actors.ErrHandlerPanic)
	assert.NoError(t, first.Stopped)

	assert.Equal(t, name, second.Agent)
	assert.Equal(t, Stop, second.Directive)
	assert.Equal(t, 2, second.Restarts)
	assert.Equal(t, ErrRestartLimit, second.Stopped)
	assert.False(t, second.Time.Before(first.Time), "events in order")

	assert.Equal(t, ErrRestartLimit, sup.Remove(name))
	select {
	case e := <-events:
		assert.Failf(t, "unexpected event", "%+v", e)
	default:
	}
}

func TestFailureError(t *testing.T) {
	inner := panicked("boom")
	f := &Failure{Err: inner, Directive: Stop}
	assert.Equal(t, inner.Error(), f.Error())
	assert.Same(t, inner, errors.Unwrap(f))
	require.ErrorIs(t, f, actors.ErrHandlerPanic)
	var hp *actors.HandlerPanicError
	require.ErrorAs(t, f, &hp)
	assert.Equal(t, "boom", hp.Value)
}

func TestNewWithoutOnEvent(t *testing.T) {
	s := New(nil)
	p := newFakeParent()
	s.Add("a", "a", Default())
	fail(s, p, "a", panicked(1)) // reports to no one, without panicking
	assert.Equal(t, call{op: "restart", ids: []string{"a"}}, p.next(t))
	s.Close()
}
