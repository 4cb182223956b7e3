package actors

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clockSlack is how far now may be from time.Now in these tests: the two
// read the clocks at different instants, and nothing steps the wall clock
// while they run.
const clockSlack = 5 * time.Millisecond

// requireNear checks that got is a UTC time without a monotonic reading,
// between before and after (time.Now readings) give or take clockSlack.
func requireNear(t *testing.T, before, got, after time.Time) {
	t.Helper()
	require.Equal(t, time.UTC, got.Location())
	require.Equal(t, got, got.Round(0), "now carries no monotonic reading, as time.Now().UTC()")
	require.False(t, got.Before(before.Add(-clockSlack)), "now %v is before %v", got, before)
	require.False(t, got.After(after.Add(clockSlack)), "now %v is after %v", got, after)
}

func TestNowFollowsTheWallClock(t *testing.T) {
	for range 1000 {
		before := time.Now()
		got := now()
		requireNear(t, before, got, time.Now())
	}
}

func TestNowKeepsAFreshBase(t *testing.T) {
	now()
	base := clockBase.Load()
	require.NotNil(t, base)
	if time.Since(*base) < clockRebase/2 { // else the base may expire in between
		now()
		assert.Same(t, base, clockBase.Load(), "a base younger than clockRebase serves again")
	}
}

func TestNowReplacesABaseItCannotUse(t *testing.T) {
	cases := []struct {
		name  string
		shift time.Duration // of the base's wall and monotonic readings
	}{
		{"too old", -2 * clockRebase},
		{"just too old", -clockRebase},
		{"from the future", time.Hour},
		{"just in the future", time.Millisecond},
		{"far in the past", -24 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stale := time.Now().Add(tc.shift)
			clockBase.Store(&stale)
			before := time.Now()
			got := now()
			requireNear(t, before, got, time.Now())
			require.NotSame(t, &stale, clockBase.Load(), "the unusable base is replaced")
		})
	}
}

// TestNowInsideAndOutsideABubble checks that a bubble's fake clock and the
// real one do not leak into each other through the shared base.
func TestNowInsideAndOutsideABubble(t *testing.T) {
	now() // a real base
	synctest.Test(t, func(t *testing.T) {
		for range 3 {
			require.Equal(t, time.Now().UTC(), now(), "inside a bubble, now is the bubble's time")
			<-time.After(time.Second) // the bubble's clock moves on at once
		}
	})
	before := time.Now()
	got := now() // the base is the bubble's: it must not serve
	requireNear(t, before, got, time.Now())
}

func TestNowConcurrent(t *testing.T) {
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 2000 {
				before := time.Now()
				got := now()
				if got.Before(before.Add(-clockSlack)) || got.After(time.Now().Add(clockSlack)) {
					t.Errorf("now %v far from %v", got, before)
					return
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

// BenchmarkNow compares now with the time.Now().UTC() it replaces.
func BenchmarkNow(b *testing.B) {
	var sink time.Time
	b.Run("impl=now", func(b *testing.B) {
		for b.Loop() {
			sink = now()
		}
	})
	b.Run("impl=time.Now", func(b *testing.B) {
		for b.Loop() {
			sink = time.Now().UTC()
		}
	})
	_ = sink
}
