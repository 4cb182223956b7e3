package topics

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

var (
	// ErrNotSubscribed means an unsubscribe named a subscription that does
	// not exist.
	ErrNotSubscribed = errors.New("agentbus: not subscribed")
	// ErrTooManySubscriptions means the registry is at its bound.
	ErrTooManySubscriptions = errors.New("agentbus: too many subscriptions")
)

// DefaultMaxSubscriptions bounds a Registry created with a non-positive max.
const DefaultMaxSubscriptions = 100_000

// Registry holds who is subscribed to what: (pattern, agent) pairs in a
// subject tree, plus each agent's patterns so that a stopped agent can leave
// all its topics at once. It is safe for concurrent use; matching takes a read
// lock only. Every change bumps Generation, which topic actors use to know
// when to re-resolve their subscribers.
type Registry struct {
	max int
	gen atomic.Uint64

	mu      sync.RWMutex
	tree    Tree[string]
	byAgent map[string][]string // agent → its patterns
}

// NewRegistry returns an empty registry holding at most max subscriptions
// (DefaultMaxSubscriptions if max < 1).
func NewRegistry(max int) *Registry {
	if max < 1 {
		max = DefaultMaxSubscriptions
	}
	return &Registry{max: max, byAgent: make(map[string][]string)}
}

// Subscribe subscribes agent to pattern (an exact subject or a wildcard
// pattern). Subscribing twice is a no-op that reports added=false. It returns
// an error wrapping ErrInvalidSubject for a bad pattern, or
// ErrTooManySubscriptions when the registry is full.
func (r *Registry) Subscribe(pattern, agent string) (added bool, err error) {
	if err := ValidatePattern(pattern); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.Contains(r.byAgent[agent], pattern) {
		return false, nil
	}
	if r.tree.Len() >= r.max {
		return false, fmt.Errorf("%w: %d", ErrTooManySubscriptions, r.max)
	}
	if _, err := r.tree.Insert(pattern, agent); err != nil {
		return false, err
	}
	r.byAgent[agent] = append(r.byAgent[agent], pattern)
	r.gen.Add(1)
	return true, nil
}

// Unsubscribe removes agent's subscription to pattern. It returns an error
// wrapping ErrNotSubscribed if there is none, or ErrInvalidSubject for a bad
// pattern.
func (r *Registry) Unsubscribe(pattern, agent string) error {
	if err := ValidatePattern(pattern); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.tree.Remove(pattern, agent) {
		return fmt.Errorf("%w: %q to %q", ErrNotSubscribed, agent, pattern)
	}
	r.dropPattern(agent, pattern)
	r.gen.Add(1)
	return nil
}

func (r *Registry) dropPattern(agent, pattern string) {
	ps := r.byAgent[agent]
	if i := slices.Index(ps, pattern); i >= 0 {
		ps = slices.Delete(ps, i, i+1)
	}
	if len(ps) == 0 {
		delete(r.byAgent, agent)
	} else {
		r.byAgent[agent] = ps
	}
}

// Leave removes every subscription of agent and returns the patterns it had.
func (r *Registry) Leave(agent string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.byAgent[agent]
	if len(ps) == 0 {
		return nil
	}
	for _, p := range ps {
		r.tree.Remove(p, agent)
	}
	delete(r.byAgent, agent)
	r.gen.Add(1)
	return ps
}

// Match appends to dst the agents a message published on subject reaches,
// each once however many of its patterns match, and returns the result.
func (r *Registry) Match(subject string, dst []string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tree.Match(subject, dst)
}

// Subscribers returns, sorted, the agents subscribed with exactly topic if
// topic is a wildcard pattern, or the agents a publish on topic reaches (by
// any matching pattern) if it is a subject. An invalid topic has none.
func (r *Registry) Subscribers(topic string) []string {
	var out []string
	if IsPattern(topic) {
		r.mu.RLock()
		out = r.tree.Values(topic)
		r.mu.RUnlock()
	} else if ValidateSubject(topic) == nil {
		out = r.Match(topic, nil)
	}
	slices.Sort(out)
	return out
}

// Topics returns every subscribed pattern, sorted.
func (r *Registry) Topics() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tree.Patterns()
}

// Subscriptions returns agent's patterns, sorted.
func (r *Registry) Subscriptions(agent string) []string {
	r.mu.RLock()
	out := slices.Clone(r.byAgent[agent])
	r.mu.RUnlock()
	slices.Sort(out)
	return out
}

// Len returns the number of subscriptions.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tree.Len()
}

// Generation returns a number that changes whenever a subscription does.
func (r *Registry) Generation() uint64 { return r.gen.Load() }
