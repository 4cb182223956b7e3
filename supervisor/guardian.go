package supervisor

import (
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Event reports one supervision decision.
type Event struct {
	Agent     string        // the failed agent
	Failure   error         // what failed: a handler panic or error
	Directive Directive     // what was done
	Restarts  int           // failures within the strategy's window, this one included
	Delay     time.Duration // for a backoff restart, how long until it happens
	Stopped   error         // for a stop: ErrRestartLimit or ErrStoppedBySupervisor
	Note      error         // e.g. ErrDeciderPanicked; nil normally
	Time      time.Time
}

// Failure is the reason a failing agent passes to its supervisor: the error
// (or *actors.HandlerPanicError) and, when the agent already asked its
// strategy, the directive it got.
type Failure struct {
	Err       error
	Directive Directive // 0: not decided yet
}

// Error returns the failure's error text.
func (f *Failure) Error() string { return f.Err.Error() }

// Unwrap returns the failure's error.
func (f *Failure) Unwrap() error { return f.Err }

// Supervisor is the protoactor supervisor strategy of a bus's agents. Agents
// are added with their Strategy when spawned and removed when stopped. It is
// safe for concurrent use. Backoff restarts run on timers that Close stops.
type Supervisor struct {
	onEvent func(Event)

	mu       sync.Mutex
	children map[string]*child // by PID id
	closed   bool
	timers   sync.WaitGroup
}

type child struct {
	name       string
	strategy   Strategy
	failures   []time.Time // within the window, oldest first; at most maxRestarts+1
	timer      *time.Timer
	stopReason error
}

var _ actor.SupervisorStrategy = (*Supervisor)(nil)

// New returns a Supervisor that reports each decision to onEvent (called
// without locks held, on the supervising goroutine; it must not block).
func New(onEvent func(Event)) *Supervisor {
	if onEvent == nil {
		onEvent = func(Event) {}
	}
	return &Supervisor{onEvent: onEvent, children: make(map[string]*child)}
}

// Add registers the agent name, whose PID id is id, under strategy. Add it
// before spawning, so that it is known by its first failure.
func (s *Supervisor) Add(id, name string, strategy Strategy) {
	s.mu.Lock()
	s.children[id] = &child{name: name, strategy: strategy.orDefault()}
	s.mu.Unlock()
}

// Remove forgets the agent whose PID id is id and cancels a pending backoff
// restart. It returns the reason the supervisor stopped it (ErrRestartLimit,
// ErrStoppedBySupervisor), or nil if the supervisor did not.
func (s *Supervisor) Remove(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.children[id]
	if c == nil {
		return nil
	}
	delete(s.children, id)
	if c.timer != nil && c.timer.Stop() {
		s.timers.Done()
	}
	return c.stopReason
}

// Decide returns the directive the strategy of the agent whose PID id is id
// gives for failure, for an agent that wants to know whether a handler error
// should escalate. Unknown agents resume.
func (s *Supervisor) Decide(id string, failure error) Directive {
	s.mu.Lock()
	c := s.children[id]
	s.mu.Unlock()
	if c == nil {
		return Resume
	}
	d, _ := c.strategy.Decide(failure)
	return d
}

// Close cancels pending backoff restarts and waits for any that are running.
// Later failures stop their agents.
func (s *Supervisor) Close() {
	s.mu.Lock()
	s.closed = true
	for _, c := range s.children {
		if c.timer != nil && c.timer.Stop() {
			s.timers.Done()
		}
		c.timer = nil
	}
	s.mu.Unlock()
	s.timers.Wait()
}

// HandleFailure implements actor.SupervisorStrategy.
func (s *Supervisor) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, pid *actor.PID, _ *actor.RestartStatistics, reason, _ any) {
	decided, failure := asFailure(reason)
	ev := Event{Failure: failure, Time: time.Now()}

	s.mu.Lock()
	c := s.children[pid.Id]
	if c == nil || s.closed {
		s.mu.Unlock()
		sup.StopChildren(pid)
		return
	}
	ev.Agent = c.name
	d := decided
	switch {
	case d == 0:
		d, ev.Note = c.strategy.Decide(failure)
	case d > Escalate:
		// Acting on no directive would leave the child suspended for good.
		d, ev.Note = c.strategy.directive, fmt.Errorf("%w: failure directive %v", ErrInvalidStrategy, d)
	}
	ev.Directive = d
	switch d {
	case Restart:
		now := time.Now()
		c.failures = pruned(c.failures, now, c.strategy.within)
		c.failures = append(c.failures, now)
		ev.Restarts = len(c.failures)
		if len(c.failures) > c.strategy.maxRestarts {
			ev.Directive, ev.Stopped = Stop, ErrRestartLimit
			c.stopReason = ErrRestartLimit
			break
		}
		if delay := c.strategy.backoff(len(c.failures)); delay > 0 {
			ev.Delay = delay
			s.timers.Add(1)
			c.timer = time.AfterFunc(delay, func() {
				defer s.timers.Done()
				// Remove may have come too late to stop the timer: then
				// the name may belong to a new agent already, which must
				// not get the old one's restart.
				s.mu.Lock()
				current := s.children[pid.Id] == c
				s.mu.Unlock()
				if current {
					sup.RestartChildren(pid)
				}
			})
		}
	case Stop, Escalate:
		ev.Stopped = ErrStoppedBySupervisor
		c.stopReason = ErrStoppedBySupervisor
	}
	s.mu.Unlock()

	switch {
	case ev.Directive == Resume:
		sup.ResumeChildren(pid)
	case ev.Directive == Restart && ev.Delay == 0:
		sup.RestartChildren(pid)
	case ev.Stopped != nil:
		sup.StopChildren(pid)
	}
	s.onEvent(ev)
}

// pruned drops the failures older than within (none if within is 0).
func pruned(failures []time.Time, now time.Time, within time.Duration) []time.Time {
	if within <= 0 {
		return failures
	}
	i := 0
	for i < len(failures) && now.Sub(failures[i]) > within {
		i++
	}
	return append(failures[:0], failures[i:]...)
}

func asFailure(reason any) (Directive, error) {
	switch r := reason.(type) {
	case *Failure:
		return r.Directive, r.Err
	case error:
		return 0, r
	default:
		return 0, fmt.Errorf("agentbus: failure: %v", r)
	}
}
