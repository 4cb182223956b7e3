// Package supervisor decides what happens to an agent whose handler fails:
// restart it (at most so many times within a window, optionally after an
// exponential backoff), resume it, stop it, or escalate. A Strategy is chosen
// per agent; a Decider can pick the directive from the failure itself.
//
// Supervisor is the one protoactor SupervisorStrategy behind every agent of a
// bus: protoactor gives a top-level actor only the strategy of its guardian,
// and a guardian per agent would never be freed, so Supervisor keeps each
// agent's Strategy and restart history itself and applies it per child.
package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/internal/backoff"
)

// Directive is what a supervisor does with a failed agent.
type Directive uint8

// The directives.
const (
	Restart  Directive = iota + 1 // a fresh actor takes over the agent's mailbox
	Resume                        // the agent goes on with its next message
	Stop                          // the agent stops; what it had queued is dead-lettered
	Escalate                      // the agent stops and the failure is reported as escalated
)

// String returns the directive's name, such as "restart".
func (d Directive) String() string {
	switch d {
	case Restart:
		return "restart"
	case Resume:
		return "resume"
	case Stop:
		return "stop"
	case Escalate:
		return "escalate"
	}
	return fmt.Sprintf("Directive(%d)", uint8(d))
}

var (
	// ErrInvalidStrategy means a Strategy has an unusable limit.
	ErrInvalidStrategy = errors.New("agentbus: invalid strategy")
	// ErrRestartLimit is the reason an agent stopped after failing more
	// often than its strategy allows.
	ErrRestartLimit = errors.New("agentbus: restart limit reached")
	// ErrStoppedBySupervisor is the reason an agent stopped by a Stop or
	// Escalate directive.
	ErrStoppedBySupervisor = errors.New("agentbus: stopped by its supervisor")
	// ErrDeciderPanicked is reported when a Decider panics; the strategy's
	// own directive is used instead.
	ErrDeciderPanicked = errors.New("agentbus: decider panicked")
)

// Decider picks the directive for a failure: a *actors.HandlerPanicError for
// a panic, or the handler's error. It runs on the supervisor's goroutine and
// must not block. A Decider that panics is not trusted: the strategy's own
// directive applies, and the event says so.
type Decider func(failure error) Directive

// Strategy says how an agent is supervised. Build one with Restarting,
// Backoff, Resuming, Stopping or Escalating; the zero Strategy is Default.
type Strategy struct {
	directive   Directive
	maxRestarts int           // Restart: failures allowed within the window
	within      time.Duration // the window; 0 means forever
	initial     time.Duration // Backoff: the first delay (0: restart at once)
	max         time.Duration // Backoff: the longest delay
	decider     Decider
}

// Defaults of Default.
const (
	DefaultMaxRestarts = 10
	DefaultWithin      = 10 * time.Second
)

// Default restarts a failing agent at once, at most DefaultMaxRestarts times
// within DefaultWithin, then stops it; handler errors resume it (only panics
// restart), as the default decider says.
func Default() Strategy { return Restarting(DefaultMaxRestarts, DefaultWithin) }

// Restarting restarts a failed agent at once, at most maxRestarts times
// within the window within (0: ever); one failure more stops it, and its
// queued messages are dead-lettered as restart_limit.
func Restarting(maxRestarts int, within time.Duration) Strategy {
	return Strategy{directive: Restart, maxRestarts: maxRestarts, within: within}
}

// Backoff restarts like Restarting, but waits before each restart: initial
// after the first failure in the window, doubling with each further one, up to
// max. While it waits, the agent's mailbox holds its messages.
func Backoff(maxRestarts int, within, initial, max time.Duration) Strategy {
	return Strategy{directive: Restart, maxRestarts: maxRestarts, within: within, initial: initial, max: max}
}

// Resuming lets a failed agent go on with its next message; the failing one
// is dead-lettered. (If a decider chooses Restart, Default's limits apply.)
func Resuming() Strategy {
	return Strategy{directive: Resume, maxRestarts: DefaultMaxRestarts, within: DefaultWithin}
}

// Stopping stops a failed agent. (If a decider chooses Restart, Default's
// limits apply.)
func Stopping() Strategy {
	return Strategy{directive: Stop, maxRestarts: DefaultMaxRestarts, within: DefaultWithin}
}

// Escalating stops a failed agent and reports the failure as escalated, for
// the operator (a bus has no supervisor above its agents). (If a decider
// chooses Restart, Default's limits apply.)
func Escalating() Strategy {
	return Strategy{directive: Escalate, maxRestarts: DefaultMaxRestarts, within: DefaultWithin}
}

// WithDecider returns s with d deciding per failure; s's own directive and
// limits still apply when d says Restart.
func (s Strategy) WithDecider(d Decider) Strategy { s.decider = d; return s }

// Directive returns the strategy's own directive.
func (s Strategy) Directive() Directive {
	if s.directive == 0 {
		return Default().directive
	}
	return s.directive
}

// Validate returns an error wrapping ErrInvalidStrategy for negative limits
// or a backoff whose max is below its initial delay.
func (s Strategy) Validate() error {
	switch {
	case s.maxRestarts < 0:
		return fmt.Errorf("%w: negative max restarts %d", ErrInvalidStrategy, s.maxRestarts)
	case s.within < 0:
		return fmt.Errorf("%w: negative window %v", ErrInvalidStrategy, s.within)
	case s.initial < 0 || s.max < 0:
		return fmt.Errorf("%w: negative backoff %v..%v", ErrInvalidStrategy, s.initial, s.max)
	case s.initial > 0 && s.max < s.initial:
		return fmt.Errorf("%w: backoff max %v below initial %v", ErrInvalidStrategy, s.max, s.initial)
	case s.directive > Escalate:
		return fmt.Errorf("%w: unknown directive %d", ErrInvalidStrategy, s.directive)
	}
	return nil
}

func (s Strategy) orDefault() Strategy {
	if s.directive == 0 {
		d := Default()
		d.decider = s.decider
		return d
	}
	return s
}

// defaultDecider restarts on panics and resumes on returned errors: an error
// is the handler's considered answer about one message, a panic means its
// state may be broken.
func defaultDecider(base Directive) Decider {
	return func(failure error) Directive {
		if errors.Is(failure, actors.ErrHandlerPanic) {
			return base
		}
		return Resume
	}
}

// Decide returns the directive for failure: the decider's, or the strategy's
// own when there is no decider or it panicked (then err wraps
// ErrDeciderPanicked).
func (s Strategy) Decide(failure error) (d Directive, err error) {
	s = s.orDefault()
	decide := s.decider
	if decide == nil {
		decide = defaultDecider(s.directive)
	}
	defer func() {
		if r := recover(); r != nil {
			d, err = s.directive, fmt.Errorf("%w: %v", ErrDeciderPanicked, r)
		}
	}()
	d = decide(failure)
	if d < Restart || d > Escalate {
		return s.directive, fmt.Errorf("%w: decider returned %v", ErrInvalidStrategy, d)
	}
	return d, nil
}

// backoff returns the delay before restart number n (1-based) in the window.
func (s Strategy) backoff(n int) time.Duration {
	return min(backoff.Policy{Initial: s.initial, Max: s.max}.Delay(n), s.max)
}
