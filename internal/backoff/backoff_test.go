package backoff

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestDelay(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		n    int
		want time.Duration
	}{
		{name: "first", p: Policy{Initial: 100 * time.Millisecond, Max: time.Second}, n: 1, want: 100 * time.Millisecond},
		{name: "doubles", p: Policy{Initial: 100 * time.Millisecond, Max: time.Second}, n: 3, want: 400 * time.Millisecond},
		{name: "capped", p: Policy{Initial: 100 * time.Millisecond, Max: time.Second}, n: 5, want: time.Second},
		{name: "far past the cap", p: Policy{Initial: time.Millisecond, Max: time.Hour}, n: 1 << 30, want: time.Hour},
		{name: "huge cap does not overflow", p: Policy{Initial: time.Second, Max: math.MaxInt64}, n: 200,
			want: math.MaxInt64},
		{name: "max below initial", p: Policy{Initial: time.Second, Max: time.Millisecond}, n: 4, want: time.Second},
		{name: "no attempt", p: Policy{Initial: time.Second, Max: time.Minute}, n: 0, want: 0},
		{name: "zero policy", p: Policy{}, n: 3, want: 0},
		{name: "negative initial", p: Policy{Initial: -time.Second, Max: time.Minute}, n: 2, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.p.Delay(tt.n))
		})
	}
}

func TestNext(t *testing.T) {
	p := Policy{Initial: 10 * time.Millisecond, Max: 70 * time.Millisecond}
	var got []time.Duration
	for d := time.Duration(0); len(got) < 6; {
		d = p.Next(d)
		got = append(got, d)
	}
	assert.Equal(t, []time.Duration{10e6, 20e6, 40e6, 70e6, 70e6, 70e6}, got)
	assert.Equal(t, time.Duration(math.MaxInt64), Policy{Initial: 1, Max: math.MaxInt64}.Next(math.MaxInt64/2+1))
	assert.Equal(t, time.Second, Policy{Max: time.Millisecond}.Next(time.Second), "never shorter than d")
}

func TestJitter(t *testing.T) {
	for range 1000 {
		d := Jitter(time.Second)
		assert.GreaterOrEqual(t, d, 500*time.Millisecond)
		assert.LessOrEqual(t, d, time.Second)
	}
	assert.Zero(t, Jitter(0))
	assert.Zero(t, Jitter(-time.Second))
	assert.LessOrEqual(t, Jitter(1), time.Duration(1))
}
