package topics_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/topics"
)

func TestRegistrySubscribe(t *testing.T) {
	tests := []struct {
		name      string
		pattern   string
		agent     string
		wantAdded bool
		wantErr   error
	}{
		{name: "subject", pattern: "a.b", agent: "x", wantAdded: true},
		{name: "same again", pattern: "a.b", agent: "x", wantAdded: false},
		{name: "same pattern, other agent", pattern: "a.b", agent: "y", wantAdded: true},
		{name: "star", pattern: "a.*", agent: "x", wantAdded: true},
		{name: "gt", pattern: "a.>", agent: "x", wantAdded: true},
		{name: "gt again", pattern: "a.>", agent: "x", wantAdded: false},
		{name: "empty", pattern: "", agent: "x", wantErr: topics.ErrInvalidSubject},
		{name: "empty token", pattern: "a..b", agent: "x", wantErr: topics.ErrInvalidSubject},
		{name: "gt not last", pattern: "a.>.b", agent: "x", wantErr: topics.ErrInvalidSubject},
		{name: "partial wildcard", pattern: "a.b*", agent: "x", wantErr: topics.ErrInvalidSubject},
		{name: "space", pattern: "a b", agent: "x", wantErr: topics.ErrInvalidSubject},
	}
	reg := topics.NewRegistry(0) // shared: the cases run in order
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gen := reg.Generation()
			added, err := reg.Subscribe(tt.pattern, tt.agent)
			require.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, tt.wantAdded, added)
			if tt.wantAdded {
				assert.NotEqual(t, gen, reg.Generation(), "a subscription changes the generation")
			} else {
				assert.Equal(t, gen, reg.Generation(), "a no-op or a failure keeps the generation")
			}
		})
	}
	assert.Equal(t, 4, reg.Len())
	assert.Equal(t, []string{"a.*", "a.>", "a.b"}, reg.Subscriptions("x"))
	assert.Equal(t, []string{"a.b"}, reg.Subscriptions("y"))
	assert.Equal(t, []string{"a.*", "a.>", "a.b"}, reg.Topics())
}

func TestRegistryBound(t *testing.T) {
	reg := topics.NewRegistry(2)
	added, err := reg.Subscribe("a", "x")
	require.NoError(t, err)
	require.True(t, added)
	added, err = reg.Subscribe("b", "y")
	require.NoError(t, err)
	require.True(t, added)

	gen := reg.Generation()
	added, err = reg.Subscribe("c", "x")
	require.ErrorIs(t, err, topics.ErrTooManySubscriptions)
	assert.False(t, added)
	assert.Equal(t, 2, reg.Len())
	assert.Equal(t, gen, reg.Generation())
	assert.Equal(t, []string{"a"}, reg.Subscriptions("x"), "the refused pattern is not recorded")

	added, err = reg.Subscribe("a", "x")
	require.NoError(t, err, "a repeat is a no-op, even at the bound")
	assert.False(t, added)

	require.NoError(t, reg.Unsubscribe("a", "x"))
	added, err = reg.Subscribe("c", "x")
	require.NoError(t, err, "room again after an unsubscribe")
	assert.True(t, added)
}

func TestNewRegistryDefaultBound(t *testing.T) {
	for _, max := range []int{0, -1} {
		t.Run(fmt.Sprintf("max=%d", max), func(t *testing.T) {
			reg := topics.NewRegistry(max)
			for i := range 10 {
				_, err := reg.Subscribe(fmt.Sprintf("t.%d", i), "x")
				require.NoError(t, err)
			}
			assert.Equal(t, 10, reg.Len())
		})
	}
}

func TestRegistryUnsubscribe(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		agent   string
		wantErr error
	}{
		{name: "subscribed", pattern: "a.*", agent: "x"},
		{name: "twice", pattern: "a.*", agent: "x", wantErr: topics.ErrNotSubscribed},
		{name: "unknown agent", pattern: "a.b", agent: "nobody", wantErr: topics.ErrNotSubscribed},
		{name: "unknown pattern", pattern: "c.d", agent: "x", wantErr: topics.ErrNotSubscribed},
		{name: "other agent's pattern", pattern: "a.b", agent: "y", wantErr: topics.ErrNotSubscribed},
		{name: "invalid pattern", pattern: "a..b", agent: "x", wantErr: topics.ErrInvalidSubject},
		{name: "empty pattern", pattern: "", agent: "x", wantErr: topics.ErrInvalidSubject},
		{name: "last of the agent", pattern: "a.b", agent: "x"},
	}
	reg := topics.NewRegistry(0) // shared: the cases run in order
	for _, p := range []string{"a.*", "a.b"} {
		_, err := reg.Subscribe(p, "x")
		require.NoError(t, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gen, n := reg.Generation(), reg.Len()
			err := reg.Unsubscribe(tt.pattern, tt.agent)
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr != nil {
				assert.Equal(t, gen, reg.Generation())
				assert.Equal(t, n, reg.Len())
				return
			}
			assert.NotEqual(t, gen, reg.Generation())
			assert.Equal(t, n-1, reg.Len())
			assert.NotContains(t, reg.Subscriptions(tt.agent), tt.pattern)
		})
	}
	assert.Zero(t, reg.Len())
	assert.Empty(t, reg.Topics())
	assert.Empty(t, reg.Subscriptions("x"))
}

func TestRegistryLeave(t *testing.T) {
	reg := topics.NewRegistry(0)
	subs := map[string][]string{
		"x": {"a.b", "a.*", "c.>"},
		"y": {"a.b", "d"},
	}
	for agent, ps := range subs {
		for _, p := range ps {
			_, err := reg.Subscribe(p, agent)
			require.NoError(t, err)
		}
	}

	gen := reg.Generation()
	left := reg.Leave("x")
	assert.ElementsMatch(t, subs["x"], left)
	assert.NotEqual(t, gen, reg.Generation())
	assert.Empty(t, reg.Subscriptions("x"))
	assert.Equal(t, []string{"a.b", "d"}, reg.Subscriptions("y"), "others keep theirs")
	assert.Equal(t, []string{"a.b", "d"}, reg.Topics(), "patterns only x had are gone")
	assert.Equal(t, []string{"y"}, reg.Match("a.b", nil))
	assert.Empty(t, reg.Match("c.d", nil))
	assert.Equal(t, 2, reg.Len())

	gen = reg.Generation()
	assert.Nil(t, reg.Leave("x"), "leaving twice")
	assert.Nil(t, reg.Leave("nobody"))
	assert.Equal(t, gen, reg.Generation(), "a no-op leave keeps the generation")

	assert.ElementsMatch(t, subs["y"], reg.Leave("y"))
	assert.Empty(t, reg.Topics(), "everyone left: everything is pruned")
	assert.Zero(t, reg.Len())

	// The agent can come back.
	added, err := reg.Subscribe("a.b", "x")
	require.NoError(t, err)
	assert.True(t, added)
	assert.Equal(t, []string{"a.b"}, reg.Subscriptions("x"))
}

func TestRegistryMatch(t *testing.T) {
	reg := topics.NewRegistry(0)
	for _, s := range []struct{ pattern, agent string }{
		{"a.*", "both"}, {"a.>", "both"}, {"a.b", "both"}, {"*.b", "both"},
		{"a.b", "exact"},
		{"a.*", "star"},
		{"a.>", "rest"},
		{"z.>", "elsewhere"},
	} {
		_, err := reg.Subscribe(s.pattern, s.agent)
		require.NoError(t, err)
	}

	tests := []struct {
		subject string
		want    []string
	}{
		{subject: "a.b", want: []string{"both", "exact", "star", "rest"}},
		{subject: "a.c", want: []string{"both", "star", "rest"}},
		{subject: "a.b.c", want: []string{"both", "rest"}},
		{subject: "x.b", want: []string{"both"}},
		{subject: "a", want: nil},
		{subject: "q.r", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got := reg.Match(tt.subject, nil)
			assert.ElementsMatch(t, tt.want, got, "each agent once")

			dst := reg.Match(tt.subject, []string{"keep"})
			require.NotEmpty(t, dst)
			assert.Equal(t, "keep", dst[0], "Match appends")
			assert.Len(t, dst, len(tt.want)+1)
		})
	}
}

func TestRegistrySubscribers(t *testing.T) {
	reg := topics.NewRegistry(0)
	for _, s := range []struct{ pattern, agent string }{
		{"a.*", "star2"}, {"a.*", "star1"},
		{"a.>", "rest"},
		{"a.b", "exact"},
	} {
		_, err := reg.Subscribe(s.pattern, s.agent)
		require.NoError(t, err)
	}

	tests := []struct {
		name  string
		topic string
		want  []string
	}{
		{name: "subject reaches every match", topic: "a.b", want: []string{"exact", "rest", "star1", "star2"}},
		{name: "deeper subject", topic: "a.b.c", want: []string{"rest"}},
		{name: "exact pattern", topic: "a.*", want: []string{"star1", "star2"}},
		{name: "exact gt pattern", topic: "a.>", want: []string{"rest"}},
		{name: "pattern not subscribed", topic: "*.b", want: nil},
		{name: "no match", topic: "b.c", want: nil},
		{name: "empty", topic: "", want: nil},
		{name: "invalid subject", topic: "a..b", want: nil},
		{name: "invalid pattern", topic: "a.>.b", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reg.Subscribers(tt.topic)
			if tt.want == nil {
				assert.Empty(t, got)
				return
			}
			assert.Equal(t, tt.want, got, "sorted")
		})
	}
}

func TestRegistryGeneration(t *testing.T) {
	reg := topics.NewRegistry(0)
	steps := []struct {
		name   string
		do     func() error
		change bool
	}{
		{name: "subscribe", do: func() error { _, err := reg.Subscribe("a", "x"); return err }, change: true},
		{name: "subscribe again", do: func() error { _, err := reg.Subscribe("a", "x"); return err }},
		{name: "subscribe invalid", do: func() error { _, _ = reg.Subscribe("a..", "x"); return nil }},
		{name: "subscribe other", do: func() error { _, err := reg.Subscribe("b.*", "x"); return err }, change: true},
		{name: "read", do: func() error {
			reg.Match("a", nil)
			reg.Subscribers("b.*")
			reg.Topics()
			reg.Subscriptions("x")
			reg.Len()
			return nil
		}},
		{name: "unsubscribe", do: func() error { return reg.Unsubscribe("a", "x") }, change: true},
		{name: "unsubscribe again", do: func() error { _ = reg.Unsubscribe("a", "x"); return nil }},
		{name: "leave unknown", do: func() error { reg.Leave("y"); return nil }},
		{name: "leave", do: func() error { reg.Leave("x"); return nil }, change: true},
		{name: "leave again", do: func() error { reg.Leave("x"); return nil }},
	}
	seen := map[uint64]bool{reg.Generation(): true}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := reg.Generation()
			require.NoError(t, s.do())
			after := reg.Generation()
			if !s.change {
				assert.Equal(t, before, after)
				return
			}
			assert.NotEqual(t, before, after)
			assert.False(t, seen[after], "a generation is never reused")
			seen[after] = true
		})
	}
}

// Goroutines subscribe, unsubscribe, leave and match at once; with -race this
// checks the locking, and the final state must be what each goroutine left.
func TestRegistryConcurrent(t *testing.T) {
	const (
		workers = 8
		rounds  = 200
	)
	reg := topics.NewRegistry(0)
	patterns := []string{"a.b", "a.*", "a.>", "*.b", "c.d"}
	var wg sync.WaitGroup
	for w := range workers {
		agent := fmt.Sprintf("agent%d", w)
		wg.Go(func() {
			for i := range rounds {
				p := patterns[i%len(patterns)]
				if _, err := reg.Subscribe(p, agent); err != nil {
					t.Errorf("subscribe %s %s: %v", p, agent, err)
					return
				}
				reg.Match("a.b", nil)
				reg.Subscribers("a.*")
				if i%3 == 0 {
					if err := reg.Unsubscribe(p, agent); err != nil {
						t.Errorf("unsubscribe %s %s: %v", p, agent, err)
						return
					}
				}
				if i%50 == 49 {
					reg.Leave(agent)
				}
			}
			// End in a known state: subscribed to a.b and a.* only.
			reg.Leave(agent)
			for _, p := range []string{"a.b", "a.*"} {
				if _, err := reg.Subscribe(p, agent); err != nil {
					t.Errorf("subscribe %s %s: %v", p, agent, err)
				}
			}
		})
	}
	wg.Go(func() { // a reader alongside the writers
		for range rounds {
			got := reg.Match("a.b", nil)
			if len(got) != len(distinct(got)) {
				t.Errorf("Match returned a duplicate: %v", got)
				return
			}
			reg.Topics()
			reg.Generation()
		}
	})
	wg.Wait()

	assert.Equal(t, 2*workers, reg.Len())
	assert.Equal(t, []string{"a.*", "a.b"}, reg.Topics())
	var all []string
	for w := range workers {
		agent := fmt.Sprintf("agent%d", w)
		assert.Equal(t, []string{"a.*", "a.b"}, reg.Subscriptions(agent))
		all = append(all, agent)
	}
	slices.Sort(all)
	assert.Equal(t, all, reg.Subscribers("a.b"))
	assert.Equal(t, all, reg.Subscribers("a.*"))
	assert.ElementsMatch(t, all, reg.Match("a.c", nil))
}

// distinct returns the distinct values of s.
func distinct(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
