// Package backoff is the one exponential backoff of agentbus: a delay that
// starts at Initial and doubles for each further attempt, up to Max. Retries
// of unacknowledged messages, supervisor restarts, senders waiting for room
// and the client's reconnects all use it.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is a capped exponential backoff. The zero value waits nothing.
type Policy struct {
	Initial time.Duration // the first delay
	Max     time.Duration // the cap; below Initial, Initial is the cap
}

// Delay returns the delay before attempt n (1-based): Initial for the
// first, doubling for each further one, at most Max. It returns 0 for n < 1
// or a non-positive Initial. It does not overflow for any n.
func (p Policy) Delay(n int) time.Duration {
	if p.Initial <= 0 || n < 1 {
		return 0
	}
	d := p.Initial
	for i := 1; i < n && d < p.Max; i++ {
		d = p.Next(d)
	}
	return d
}

// Next returns the delay that follows d: twice d, at most Max (and at least
// d, if Max is below it). A non-positive d is followed by Initial.
func (p Policy) Next(d time.Duration) time.Duration {
	if d <= 0 {
		return max(p.Initial, 0)
	}
	if d >= p.Max || d > p.Max/2 {
		return max(d, p.Max)
	}
	return 2 * d
}

// Jitter returns a random delay in [d/2, d], so that many waiters that
// started together do not retry together. It returns 0 for d <= 0.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}
