package supervisor

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
)

// panicked returns the failure an agent reports for a handler panic.
func panicked(v any) error { return &actors.HandlerPanicError{Agent: "a", Value: v} }

func TestConstructors(t *testing.T) {
	tests := []struct {
		name string
		give Strategy
		want Strategy
	}{
		{
			name: "default",
			give: Default(),
			want: Strategy{directive: Restart, maxRestarts: DefaultMaxRestarts, within: DefaultWithin},
		},
		{
			name: "restarting",
			give: Restarting(3, time.Minute),
			want: Strategy{directive: Restart, maxRestarts: 3, within: time.Minute},
		},
		{
			name: "restarting forever",
			give: Restarting(0, 0),
			want: Strategy{directive: Restart},
		},
		{
			name: "backoff",
			give: Backoff(5, time.Hour, time.Millisecond, time.Second),
			want: Strategy{directive: Restart, maxRestarts: 5, within: time.Hour, initial: time.Millisecond, max: time.Second},
		},
		{name: "resuming", give: Resuming(), want: Strategy{directive: Resume, maxRestarts: DefaultMaxRestarts, within: DefaultWithin}},
		{name: "stopping", give: Stopping(), want: Strategy{directive: Stop, maxRestarts: DefaultMaxRestarts, within: DefaultWithin}},
		{name: "escalating", give: Escalating(), want: Strategy{directive: Escalate, maxRestarts: DefaultMaxRestarts, within: DefaultWithin}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.give)
			assert.Equal(t, tt.want.directive, tt.give.Directive())
			require.NoError(t, tt.give.Validate())
			assert.Equal(t, tt.give, tt.give.orDefault(), "a built strategy is its own default")
		})
	}
}

func TestZeroStrategyIsDefault(t *testing.T) {
	var zero Strategy
	assert.Equal(t, Restart, zero.Directive())
	require.NoError(t, zero.Validate())
	assert.Equal(t, Default(), zero.orDefault())

	for _, failure := range []error{panicked("boom"), errors.New("handler error")} {
		want, wantErr := Default().Decide(failure)
		got, err := zero.Decide(failure)
		assert.Equal(t, want, got, "%v", failure)
		assert.Equal(t, wantErr, err)
	}

	// A decider on the zero Strategy survives defaulting.
	s := Strategy{}.WithDecider(func(error) Directive { return Stop })
	d, err := s.Decide(errors.New("x"))
	require.NoError(t, err)
	assert.Equal(t, Stop, d)
	def := s.orDefault()
	assert.Equal(t, Restart, def.directive)
	assert.Equal(t, DefaultMaxRestarts, def.maxRestarts)
	assert.Equal(t, DefaultWithin, def.within)
	assert.NotNil(t, def.decider)
}

func TestWithDeciderKeepsLimits(t *testing.T) {
	base := Backoff(4, time.Minute, time.Millisecond, time.Second)
	s := base.WithDecider(func(error) Directive { return Resume })
	assert.NotNil(t, s.decider)
	assert.Nil(t, base.decider, "WithDecider does not change its receiver")
	s.decider = nil
	assert.Equal(t, base, s)
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		give    Strategy
		wantErr error
	}{
		{name: "zero", give: Strategy{}},
		{name: "default", give: Default()},
		{name: "no restarts", give: Restarting(0, time.Second)},
		{name: "no window", give: Restarting(3, 0)},
		{name: "backoff", give: Backoff(3, time.Minute, time.Millisecond, time.Second)},
		{name: "backoff max equals initial", give: Backoff(3, time.Minute, time.Second, time.Second)},
		{name: "backoff without delay", give: Backoff(3, time.Minute, 0, 0)},
		{name: "backoff only a max", give: Backoff(3, time.Minute, 0, time.Second)},
		{name: "resuming", give: Resuming()},
		{name: "stopping", give: Stopping()},
		{name: "escalating", give: Escalating()},
		{name: "negative max restarts", give: Restarting(-1, time.Second), wantErr: ErrInvalidStrategy},
		{name: "negative window", give: Restarting(1, -time.Second), wantErr: ErrInvalidStrategy},
		{name: "negative initial", give: Backoff(1, time.Second, -time.Millisecond, time.Second), wantErr: ErrInvalidStrategy},
		{name: "negative max", give: Backoff(1, time.Second, 0, -time.Second), wantErr: ErrInvalidStrategy},
		{name: "max below initial", give: Backoff(1, time.Second, time.Second, time.Millisecond), wantErr: ErrInvalidStrategy},
		{name: "backoff without a max", give: Backoff(1, time.Second, time.Second, 0), wantErr: ErrInvalidStrategy},
		{name: "unknown directive", give: Strategy{directive: Escalate + 1}, wantErr: ErrInvalidStrategy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.give.Validate()
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			assert.Contains(t, err.Error(), "agentbus: invalid strategy: ")
		})
	}
}

func TestDecide(t *testing.T) {
	always := func(d Directive) Decider { return func(error) Directive { return d } }
	tests := []struct {
		name    string
		give    Strategy
		failure error
		want    Directive
		wantErr error
		wantMsg string // in the error
	}{
		{name: "default restarts a panic", give: Default(), failure: panicked("boom"), want: Restart},
		{name: "default restarts a panic with an error", give: Default(), failure: panicked(errors.New("x")), want: Restart},
		{name: "default restarts a wrapped panic", give: Default(), failure: fmt.Errorf("w: %w", panicked(1)), want: Restart},
		{name: "default resumes an error", give: Default(), failure: errors.New("handler error"), want: Resume},
		{name: "default resumes a nil failure", give: Default(), failure: nil, want: Resume},
		{name: "zero restarts a panic", give: Strategy{}, failure: panicked("boom"), want: Restart},
		{name: "zero resumes an error", give: Strategy{}, failure: errors.New("x"), want: Resume},
		{name: "backoff restarts a panic", give: Backoff(1, 0, time.Millisecond, time.Second), failure: panicked(1), want: Restart},
		{name: "stopping stops a panic", give: Stopping(), failure: panicked(1), want: Stop},
		{name: "stopping resumes an error", give: Stopping(), failure: errors.New("x"), want: Resume},
		{name: "escalating escalates a panic", give: Escalating(), failure: panicked(1), want: Escalate},
		{name: "resuming resumes a panic", give: Resuming(), failure: panicked(1), want: Resume},
		{name: "custom decider", give: Restarting(1, 0).WithDecider(always(Stop)), failure: errors.New("x"), want: Stop},
		{name: "custom decider overrides resuming", give: Resuming().WithDecider(always(Escalate)), failure: errors.New("x"), want: Escalate},
		{name: "custom decider on a panic", give: Default().WithDecider(always(Resume)), failure: panicked(1), want: Resume},
		{name: "custom decider on zero", give: Strategy{}.WithDecider(always(Escalate)), failure: errors.New("x"), want: Escalate},
		{
			name:    "decider panics",
			give:    Stopping().WithDecider(func(error) Directive { panic("decider bug") }),
			failure: errors.New("x"), want: Stop, wantErr: ErrDeciderPanicked, wantMsg: "decider bug",
		},
		{
			name:    "decider panics on zero",
			give:    Strategy{}.WithDecider(func(error) Directive { panic(errors.New("oops")) }),
			failure: panicked(1), want: Restart, wantErr: ErrDeciderPanicked, wantMsg: "oops",
		},
		{
			name:    "decider panics with nil",
			give:    Escalating().WithDecider(func(error) Directive { panic(nil) }),
			failure: errors.New("x"), want: Escalate, wantErr: ErrDeciderPanicked,
		},
		{
			name:    "decider returns zero",
			give:    Resuming().WithDecider(always(0)),
			failure: errors.New("x"), want: Resume, wantErr: ErrInvalidStrategy, wantMsg: "Directive(0)",
		},
		{
			name:    "decider returns unknown",
			give:    Stopping().WithDecider(always(99)),
			failure: panicked(1), want: Stop, wantErr: ErrInvalidStrategy, wantMsg: "Directive(99)",
		},
		{
			name:    "decider returns one past escalate",
			give:    Default().WithDecider(always(Escalate + 1)),
			failure: panicked(1), want: Restart, wantErr: ErrInvalidStrategy,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.give.Decide(tt.failure)
			assert.Equal(t, tt.want, d)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			assert.Contains(t, err.Error(), tt.wantMsg)
		})
	}
}

func TestDeciderSeesFailure(t *testing.T) {
	failure := panicked("boom")
	var got []error
	s := Restarting(1, 0).WithDecider(func(f error) Directive {
		got = append(got, f)
		return Resume
	})
	d, err := s.Decide(failure)
	require.NoError(t, err)
	assert.Equal(t, Resume, d)
	require.Len(t, got, 1)
	assert.Same(t, failure, got[0])
}

func TestDirectiveString(t *testing.T) {
	tests := []struct {
		give Directive
		want string
	}{
		{give: Restart, want: "restart"},
		{give: Resume, want: "resume"},
		{give: Stop, want: "stop"},
		{give: Escalate, want: "escalate"},
		{give: 0, want: "Directive(0)"},
		{give: Escalate + 1, want: "Directive(5)"},
		{give: 255, want: "Directive(255)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.give.String())
		})
	}
}

func TestBackoffDelays(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name string
		give Strategy
		want []time.Duration // backoff(n) for n = 0, 1, 2, ...
	}{
		{
			name: "doubling to the max",
			give: Backoff(100, 0, 10*ms, 80*ms),
			want: []time.Duration{0, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 80 * ms, 80 * ms, 80 * ms, 80 * ms, 80 * ms, 80 * ms},
		},
		{
			name: "max not a power of two",
			give: Backoff(100, 0, 10*ms, 50*ms),
			want: []time.Duration{0, 10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms},
		},
		{
			name: "max equals initial",
			give: Backoff(100, 0, 10*ms, 10*ms),
			want: []time.Duration{0, 10 * ms, 10 * ms, 10 * ms},
		},
		{
			name: "no initial delay",
			give: Backoff(100, 0, 0, 80*ms),
			want: []time.Duration{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		},
		{
			name: "restarting",
			give: Restarting(100, time.Minute),
			want: []time.Duration{0, 0, 0, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make([]time.Duration, len(tt.want))
			for n := range got {
				got[n] = tt.give.backoff(n)
			}
			assert.Equal(t, tt.want, got)
		})
	}

	t.Run("large n does not overflow", func(t *testing.T) {
		s := Backoff(1<<30, 0, time.Nanosecond, time.Hour)
		for _, n := range []int{63, 64, 1000, 1 << 30} {
			assert.Equal(t, time.Hour, s.backoff(n), "n=%d", n)
		}
		assert.Equal(t, time.Duration(0), s.backoff(-1))
	})
}

func TestPruned(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(ds ...time.Duration) []time.Time {
		out := make([]time.Time, 0, len(ds))
		for _, d := range ds {
			out = append(out, now.Add(-d))
		}
		return out
	}
	tests := []struct {
		name   string
		give   []time.Time
		within time.Duration
		want   []time.Time
	}{
		{name: "window 0 keeps all", give: ago(time.Hour, time.Minute, 0), within: 0, want: ago(time.Hour, time.Minute, 0)},
		{name: "negative window keeps all", give: ago(time.Hour), within: -time.Second, want: ago(time.Hour)},
		{name: "empty", give: nil, within: time.Minute, want: nil},
		{name: "all within", give: ago(30*time.Second, 0), within: time.Minute, want: ago(30*time.Second, 0)},
		{name: "old dropped", give: ago(3*time.Minute, 2*time.Minute, time.Minute, 0), within: 90 * time.Second, want: ago(time.Minute, 0)},
		{name: "exactly the window is kept", give: ago(time.Minute+1, time.Minute), within: time.Minute, want: ago(time.Minute)},
		{name: "all dropped", give: ago(3*time.Minute, 2*time.Minute), within: time.Minute, want: []time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pruned(tt.give, now, tt.within)
			assert.Equal(t, tt.want, got)
		})
	}
}
