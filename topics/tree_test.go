package topics_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/topics"
)

func TestTreeInsert(t *testing.T) {
	tests := []struct {
		name      string
		pattern   string
		wantAdded bool
		wantErr   error
	}{
		{name: "literal", pattern: "a.b", wantAdded: true},
		{name: "same again", pattern: "a.b", wantAdded: false},
		{name: "star", pattern: "a.*", wantAdded: true},
		{name: "gt", pattern: "a.>", wantAdded: true},
		{name: "gt again", pattern: "a.>", wantAdded: false},
		{name: "empty", pattern: "", wantErr: topics.ErrInvalidSubject},
		{name: "gt not last", pattern: "a.>.b", wantErr: topics.ErrInvalidSubject},
		{name: "empty token", pattern: "a..b", wantErr: topics.ErrInvalidSubject},
	}
	var tree topics.Tree[string] // shared: the cases run in order
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			added, err := tree.Insert(tt.pattern, "v")
			require.ErrorIs(t, err, tt.wantErr)
			assert.Equal(t, tt.wantAdded, added)
		})
	}
	assert.Equal(t, 3, tree.Len())
	assert.Equal(t, []string{"a.*", "a.>", "a.b"}, tree.Patterns())
}

func TestTreeRemove(t *testing.T) {
	var tree topics.Tree[int]
	for _, p := range []string{"a.b", "a.*", "a.>"} {
		_, err := tree.Insert(p, 1)
		require.NoError(t, err)
	}
	_, err := tree.Insert("a.b", 2)
	require.NoError(t, err)

	tests := []struct {
		name    string
		pattern string
		value   int
		want    bool
	}{
		{name: "absent value", pattern: "a.b", value: 3, want: false},
		{name: "absent pattern", pattern: "a.c", value: 1, want: false},
		{name: "prefix of a pattern", pattern: "a", value: 1, want: false},
		{name: "longer than a pattern", pattern: "a.b.c", value: 1, want: false},
		{name: "invalid pattern", pattern: "a..b", value: 1, want: false},
		{name: "empty pattern", pattern: "", value: 1, want: false},
		{name: "present", pattern: "a.b", value: 1, want: true},
		{name: "present again", pattern: "a.b", value: 1, want: false},
		{name: "star", pattern: "a.*", value: 1, want: true},
		{name: "gt", pattern: "a.>", value: 1, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tree.Remove(tt.pattern, tt.value))
		})
	}
	assert.Equal(t, 1, tree.Len())
	assert.Equal(t, []string{"a.b"}, tree.Patterns())
	assert.Equal(t, []int{2}, tree.Values("a.b"))
	assert.Nil(t, tree.Values("a.*"))
}

func TestTreePrune(t *testing.T) {
	var tree topics.Tree[int]
	patterns := []string{"a", "a.b", "a.b.c", "a.*.c", "a.>", "*", ">", "x.y.z.w", "日本.*.>"}
	for i, p := range patterns {
		_, err := tree.Insert(p, i)
		require.NoError(t, err)
	}

	require.True(t, tree.Remove("a.b.c", 2))
	// root, a, a.b, a.*, a.*.c, a.>, *, >, x, x.y, x.y.z, x.y.z.w, 日本, 日本.*, 日本.*.>
	assert.Equal(t, 15, topics.NodeCount(&tree))
	require.True(t, tree.Remove("x.y.z.w", 7))
	assert.Equal(t, 11, topics.NodeCount(&tree))
	require.True(t, tree.Remove("a", 0))
	assert.Equal(t, 11, topics.NodeCount(&tree), "a still leads to a.b")

	for i, p := range patterns {
		tree.Remove(p, i)
	}
	assert.Zero(t, tree.Len())
	assert.Empty(t, tree.Patterns())
	assert.Equal(t, 1, topics.NodeCount(&tree))
}

func TestTreeChurnDoesNotGrow(t *testing.T) {
	var tree topics.Tree[int]
	for round := range 50 {
		for i := range 100 {
			p := fmt.Sprintf("agents.n%d.r%d.*", i, round)
			_, err := tree.Insert(p, i)
			require.NoError(t, err)
		}
		for i := range 100 {
			require.True(t, tree.Remove(fmt.Sprintf("agents.n%d.r%d.*", i, round), i))
		}
		require.Equal(t, 1, topics.NodeCount(&tree))
	}
}

func TestTreeMatchTable(t *testing.T) {
	for _, tt := range matchTests {
		if topics.ValidatePattern(tt.pattern) != nil {
			continue
		}
		t.Run(tt.pattern+" "+tt.subject, func(t *testing.T) {
			var tree topics.Tree[int]
			_, err := tree.Insert(tt.pattern, 7)
			require.NoError(t, err)
			got := tree.Match(tt.subject, nil)
			if tt.want {
				assert.Equal(t, []int{7}, got)
			} else {
				assert.Empty(t, got)
			}
		})
	}
}

func TestTreeMatchDedupe(t *testing.T) {
	var tree topics.Tree[string]
	insert := func(p, v string) {
		t.Helper()
		_, err := tree.Insert(p, v)
		require.NoError(t, err)
	}
	for _, p := range []string{"a.*", "a.>", "a.b", ">", "*.b"} {
		insert(p, "both") // matched by a.b five times over
	}
	insert("a.>", "gt")
	insert("a.*", "star")
	insert("a.c", "other")

	tests := []struct {
		subject string
		want    []string
	}{
		{subject: "a.b", want: []string{"both", "gt", "star"}},
		{subject: "a.c", want: []string{"both", "gt", "star", "other"}},
		{subject: "a.b.c", want: []string{"both", "gt"}},
		{subject: "x", want: []string{"both"}},
		{subject: "x.y", want: []string{"both"}},
		{subject: "x.b", want: []string{"both"}},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got := tree.Match(tt.subject, []string{"before", "both"})
			require.Equal(t, []string{"before", "both"}, got[:2], "dst is kept")
			assert.ElementsMatch(t, tt.want, got[2:])
		})
	}
}

func TestTreeMatchDedupeLargeSets(t *testing.T) {
	// Sets this large are indexed; dedupe uses the index.
	var tree topics.Tree[int]
	for i := range 100 {
		for _, p := range []string{"x.*", "x.>", "x.y"} {
			_, err := tree.Insert(p, i)
			require.NoError(t, err)
		}
	}
	for i := 100; i < 110; i++ {
		_, err := tree.Insert("x.>", i)
		require.NoError(t, err)
	}
	got := tree.Match("x.y", nil)
	assert.Len(t, got, 110)
	assert.ElementsMatch(t, seq(0, 110), got)

	// Shrink the sets through the index thresholds and back.
	for i := range 95 {
		require.True(t, tree.Remove("x.y", i))
		require.True(t, tree.Remove("x.*", i))
		require.True(t, tree.Remove("x.>", i))
	}
	assert.ElementsMatch(t, seq(95, 100), tree.Values("x.y"))
	assert.ElementsMatch(t, seq(95, 110), tree.Match("x.y", nil))
	for i := 95; i < 100; i++ {
		_, err := tree.Insert("x.y", i)
		require.NoError(t, err)
		added, err := tree.Insert("x.y", i+1000)
		require.NoError(t, err)
		require.True(t, added)
	}
	assert.Len(t, tree.Values("x.y"), 10)
	assert.Equal(t, 5+5+15+5, tree.Len())
}

func TestTreeValues(t *testing.T) {
	var tree topics.Tree[int]
	for i := range 40 { // past the index threshold
		_, err := tree.Insert("a.*", i)
		require.NoError(t, err)
	}
	got := tree.Values("a.*")
	assert.ElementsMatch(t, seq(0, 40), got)
	got[0] = -1 // a copy
	assert.NotContains(t, tree.Values("a.*"), -1)
	assert.Nil(t, tree.Values("a.b"), "Values looks up, it does not match")
	assert.Nil(t, tree.Values("a"))
	assert.Nil(t, tree.Values(""))
	for i := range 40 {
		if i%2 == 0 {
			require.True(t, tree.Remove("a.*", i))
		}
	}
	for i := range 40 {
		added, err := tree.Insert("a.*", i)
		require.NoError(t, err)
		assert.Equal(t, i%2 == 0, added, "value %d", i)
	}
}

func TestTreeMatchDoesNotAllocate(t *testing.T) {
	tree := benchTree(1000)
	dst := make([]int, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		dst = tree.Match("agents.coder17.done", dst[:0])
	})
	assert.Zero(t, allocs)
	assert.NotEmpty(t, dst)
}

// TestTreeMatchProperty checks Tree.Match against Match applied to every
// pattern, for random patterns, values and subjects. Set TOPICS_SEED to
// replay a failure.
func TestTreeMatchProperty(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed))
	tokens := []string{"a", "b", "c", "ñ", "日本"}
	randTokens := func(wild bool) string {
		n := 1 + rng.IntN(4)
		s := ""
		for i := range n {
			if i > 0 {
				s += "."
			}
			switch r := rng.IntN(10); {
			case wild && r == 0 && i == n-1:
				s += ">"
			case wild && r < 3:
				s += "*"
			default:
				s += tokens[rng.IntN(len(tokens))]
			}
		}
		return s
	}

	for round := range 20 {
		type pair struct {
			pattern string
			value   int
		}
		var tree topics.Tree[int]
		var pairs []pair
		for range 1 + rng.IntN(200) {
			p := pair{randTokens(true), rng.IntN(30)}
			added, err := tree.Insert(p.pattern, p.value)
			require.NoError(t, err, "seed %d", seed)
			if added {
				pairs = append(pairs, p)
			} else {
				require.Contains(t, pairs, p, "seed %d", seed)
			}
		}
		// Remove some, so that matching runs on a pruned tree.
		rng.Shuffle(len(pairs), func(i, j int) { pairs[i], pairs[j] = pairs[j], pairs[i] })
		keep := len(pairs) * 2 / 3
		for _, p := range pairs[keep:] {
			require.True(t, tree.Remove(p.pattern, p.value), "seed %d", seed)
		}
		pairs = pairs[:keep]
		require.Equal(t, len(pairs), tree.Len(), "seed %d", seed)

		for range 200 {
			subject := randTokens(false)
			var want []int
			for _, p := range pairs {
				if topics.Match(p.pattern, subject) && !slices.Contains(want, p.value) {
					want = append(want, p.value)
				}
			}
			got := tree.Match(subject, nil)
			require.ElementsMatch(t, want, got, "seed %d round %d subject %q", seed, round, subject)
			require.Len(t, got, len(want), "duplicates; seed %d", seed)
		}

		// Match agrees with the split-based reference on these inputs.
		for range 200 {
			p, s := randTokens(true), randTokens(false)
			require.Equal(t, splitMatch(p, s), topics.Match(p, s), "seed %d: Match(%q, %q)", seed, p, s)
		}
	}
}

// testSeed returns the seed for a randomized test, from TOPICS_SEED or the
// clock, and logs it if the test fails.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TOPICS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "TOPICS_SEED")
		seed = v
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with TOPICS_SEED=%d", seed)
		}
	})
	return seed
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}
