package routing_test

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

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/routing"
)

func ids(rules []*routing.Rule) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.ID)
	}
	return out
}

func ruleIDs(rules []routing.Rule) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.ID)
	}
	return out
}

// matchers are the ways to match against a table; they must agree.
var matchers = []struct {
	name  string
	match func(*routing.Table, *actors.Message, []*routing.Rule) []*routing.Rule
}{
	{"Match", (*routing.Table).Match},
	{"index", (*routing.Table).MatchIndex},
	{"scan", (*routing.Table).MatchScan},
}

func TestNewTable(t *testing.T) {
	tests := []struct {
		name    string
		give    []routing.Rule
		wantLen int
		wantErr error
	}{
		{name: "none"},
		{name: "one", give: []routing.Rule{{ID: "a", Handler: "h"}}, wantLen: 1},
		{name: "two", give: []routing.Rule{{ID: "a", Handler: "h"}, {ID: "b", Handler: "h"}}, wantLen: 2},
		{name: "invalid", give: []routing.Rule{{ID: "a", Handler: "h"}, {ID: "b"}}, wantErr: routing.ErrInvalidRule},
		{name: "duplicate", give: []routing.Rule{{ID: "a", Handler: "h"}, {ID: "a", Handler: "g"}}, wantErr: routing.ErrRuleExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := routing.NewTable(tt.give...)
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr != nil {
				assert.Nil(t, tab)
				return
			}
			assert.Equal(t, tt.wantLen, tab.Len())
		})
	}

	_, err := routing.NewTable(routing.Rule{ID: "a", Handler: "h"}, routing.Rule{ID: "a", Handler: "g"})
	require.EqualError(t, err, `agentbus: rule exists: "a"`)
}

func TestTableEmpty(t *testing.T) {
	empty, err := routing.NewTable()
	require.NoError(t, err)
	m := &actors.Message{Type: actors.TypeDirect, Recipient: "a"}
	for name, tab := range map[string]*routing.Table{"nil": nil, "new": empty, "zero": {}} {
		t.Run(name, func(t *testing.T) {
			assert.Zero(t, tab.Len())
			assert.Empty(t, tab.Rules())
			assert.Empty(t, tab.Handlers())
			assert.Empty(t, tab.Match(m, nil))
			_, err := tab.Without("a")
			require.ErrorIs(t, err, routing.ErrRuleNotFound)
			_, err = tab.SetEnabled("a", true)
			require.ErrorIs(t, err, routing.ErrRuleNotFound)

			next, err := tab.With(routing.Rule{ID: "a", Handler: "h", Enabled: true})
			require.NoError(t, err)
			assert.Equal(t, []string{"a"}, ids(next.Match(m, nil)))
		})
	}
}

func TestTableOrder(t *testing.T) {
	// Catch-all rules with distinct handlers all match; only order is tested.
	rule := func(id string, prio int) routing.Rule {
		return routing.Rule{ID: id, Handler: "h-" + id, Priority: prio, Enabled: true}
	}
	tab, err := routing.NewTable(rule("a", 1), rule("b", 5), rule("c", 5), rule("d", 3), rule("e", 5), rule("f", -2))
	require.NoError(t, err)
	want := []string{"b", "c", "e", "d", "a", "f"}
	assert.Equal(t, want, ruleIDs(tab.Rules()))

	tab, err = tab.With(rule("g", 5))
	require.NoError(t, err)
	tab, err = tab.With(rule("h", 100))
	require.NoError(t, err)
	want = []string{"h", "b", "c", "e", "g", "d", "a", "f"}
	assert.Equal(t, want, ruleIDs(tab.Rules()))

	m := &actors.Message{Type: actors.TypeHeartbeat, Recipient: "x"}
	for _, mt := range matchers {
		assert.Equal(t, want, ids(mt.match(tab, m, nil)), mt.name)
	}

	// Disabling and enabling again keeps the place; removing and adding
	// again goes to the end of the priority.
	tab, err = tab.SetEnabled("b", false)
	require.NoError(t, err)
	assert.Equal(t, []string{"h", "c", "e", "g", "d", "a", "f"}, ids(tab.Match(m, nil)))
	tab, err = tab.SetEnabled("b", true)
	require.NoError(t, err)
	assert.Equal(t, want, ids(tab.Match(m, nil)))
	tab, err = tab.Without("b")
	require.NoError(t, err)
	tab, err = tab.With(rule("b", 5))
	require.NoError(t, err)
	assert.Equal(t, []string{"h", "c", "e", "g", "b", "d", "a", "f"}, ruleIDs(tab.Rules()))
}

func TestTableWith(t *testing.T) {
	tab, err := routing.NewTable(routing.Rule{ID: "a", Handler: "h"})
	require.NoError(t, err)
	tests := []struct {
		name    string
		give    routing.Rule
		wantErr error
	}{
		{name: "new", give: routing.Rule{ID: "b", Handler: "h"}},
		{name: "duplicate", give: routing.Rule{ID: "a", Handler: "g"}, wantErr: routing.ErrRuleExists},
		{name: "invalid", give: routing.Rule{ID: "c", Handler: "h", Topic: "a..b"}, wantErr: routing.ErrInvalidRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, err := tab.With(tt.give)
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr == nil {
				assert.Equal(t, 2, next.Len())
			}
			assert.Equal(t, 1, tab.Len(), "t is unchanged")
		})
	}
}

func TestTableImmutable(t *testing.T) {
	rules := []routing.Rule{
		{ID: "a", Handler: "ha", Type: actors.TypeDirect, Priority: 2, Enabled: true},
		{ID: "b", Handler: "hb", Recipient: "coder", Priority: 1, Enabled: true},
		{ID: "c", Handler: "hc", Topic: "x.>", Enabled: false},
	}
	old, err := routing.NewTable(rules...)
	require.NoError(t, err)
	rules[0].Handler = "changed" // NewTable copied its arguments
	m := &actors.Message{Type: actors.TypeDirect, Recipient: "coder", Topic: "x.y"}
	oldMatch := old.Match(m, nil)
	oldRules := old.Rules()
	require.Equal(t, []string{"a", "b"}, ids(oldMatch))
	require.Equal(t, "ha", oldMatch[0].Handler)

	oldRules[0].Handler = "changed" // Rules returns a copy
	assert.Equal(t, "ha", old.Rules()[0].Handler)

	check := func(t *testing.T) {
		t.Helper()
		assert.Equal(t, oldRules[1:], old.Rules()[1:])
		assert.Equal(t, "ha", old.Rules()[0].Handler)
		assert.Equal(t, 3, old.Len())
		assert.Equal(t, []string{"ha", "hb", "hc"}, old.Handlers())
		assert.Equal(t, []string{"a", "b"}, ids(old.Match(m, nil)))
		assert.Equal(t, "ha", oldMatch[0].Handler)
		assert.True(t, oldMatch[0].Enabled)
	}

	tests := []struct {
		name    string
		change  func(*routing.Table) (*routing.Table, error)
		wantIDs []string // what the new table matches
	}{
		{name: "with", change: func(t *routing.Table) (*routing.Table, error) {
			return t.With(routing.Rule{ID: "d", Handler: "hd", Priority: 9, Enabled: true})
		}, wantIDs: []string{"d", "a", "b"}},
		{name: "without", change: func(t *routing.Table) (*routing.Table, error) {
			return t.Without("a")
		}, wantIDs: []string{"b"}},
		{name: "disable", change: func(t *routing.Table) (*routing.Table, error) {
			return t.SetEnabled("a", false)
		}, wantIDs: []string{"b"}},
		{name: "enable", change: func(t *routing.Table) (*routing.Table, error) {
			return t.SetEnabled("c", true)
		}, wantIDs: []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next, err := tt.change(old)
			require.NoError(t, err)
			require.NotSame(t, old, next)
			assert.Equal(t, tt.wantIDs, ids(next.Match(m, nil)))
			check(t)
		})
	}
}

func TestTableWithoutSetEnabled(t *testing.T) {
	tab, err := routing.NewTable(
		routing.Rule{ID: "a", Handler: "h", Enabled: true},
		routing.Rule{ID: "b", Handler: "g", Enabled: false},
	)
	require.NoError(t, err)

	_, err = tab.Without("zz")
	require.ErrorIs(t, err, routing.ErrRuleNotFound)
	require.EqualError(t, err, `agentbus: rule not found: "zz"`)
	_, err = tab.SetEnabled("zz", true)
	require.ErrorIs(t, err, routing.ErrRuleNotFound)

	same, err := tab.SetEnabled("a", true)
	require.NoError(t, err)
	assert.Same(t, tab, same, "no change, no copy")

	next, err := tab.Without("a")
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, ruleIDs(next.Rules()))
	assert.Equal(t, []string{"g"}, next.Handlers())
	_, err = next.Without("a")
	require.ErrorIs(t, err, routing.ErrRuleNotFound)
	next, err = next.With(routing.Rule{ID: "a", Handler: "h"})
	require.NoError(t, err, "a removed ID can be added again")
	assert.Equal(t, 2, next.Len())
}

func TestTableDisabledSkipped(t *testing.T) {
	// Enough rules for Match to use the index; one of each filter kind.
	var rules []routing.Rule
	for i, r := range []routing.Rule{
		{Type: actors.TypeDirect},
		{Sender: "planner"},
		{Recipient: "coder"},
		{Topic: "x.y"},
		{Topic: "x.*"},
		{},
	} {
		for _, on := range []bool{true, false} {
			r.ID = fmt.Sprintf("r%d-%t", i, on)
			r.Handler = r.ID
			r.Enabled = on
			rules = append(rules, r)
		}
	}
	tab, err := routing.NewTable(rules...)
	require.NoError(t, err)
	m := &actors.Message{Type: actors.TypeDirect, Sender: "planner", Recipient: "coder", Topic: "x.y"}
	want := []string{"r0-true", "r1-true", "r2-true", "r3-true", "r4-true", "r5-true"}
	for _, mt := range matchers {
		assert.Equal(t, want, ids(mt.match(tab, m, nil)), mt.name)
	}
	assert.Len(t, tab.Handlers(), 12, "Handlers counts disabled rules")
}

func TestTableHandlerDedupe(t *testing.T) {
	rules := []routing.Rule{
		{ID: "low", Handler: "audit", Priority: 1, Enabled: true},
		{ID: "high", Handler: "audit", Priority: 9, Recipient: "coder", Enabled: true},
		{ID: "high-later", Handler: "audit", Priority: 9, Topic: "x.*", Enabled: true},
		{ID: "other", Handler: "log", Priority: 5, Enabled: true},
		{ID: "off", Handler: "log", Priority: 10, Enabled: false},
		{ID: "log-again", Handler: "log", Priority: 0, Type: actors.TypeDirect, Enabled: true},
	}
	for range 10 { // fillers, so that Match uses the index
		rules = append(rules, routing.Rule{ID: fmt.Sprintf("f%d", len(rules)), Handler: "f", Sender: "nobody", Enabled: true})
	}
	tab, err := routing.NewTable(rules...)
	require.NoError(t, err)

	tests := []struct {
		name string
		give *actors.Message
		want []string
	}{
		{name: "all match", give: &actors.Message{Type: actors.TypeDirect, Recipient: "coder", Topic: "x.y"}, want: []string{"high", "other"}},
		{name: "second of equal priority", give: &actors.Message{Topic: "x.y"}, want: []string{"high-later", "other"}},
		{name: "lowest", give: &actors.Message{Type: actors.TypeBroadcast}, want: []string{"other", "low"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, mt := range matchers {
				assert.Equal(t, tt.want, ids(mt.match(tab, tt.give, nil)), mt.name)
			}
		})
	}
}

func TestTableMatchAppends(t *testing.T) {
	tab, err := routing.NewTable(routing.Rule{ID: "a", Handler: "h", Enabled: true})
	require.NoError(t, err)
	prev := &routing.Rule{ID: "prev", Handler: "h"}
	got := tab.Match(&actors.Message{}, []*routing.Rule{prev})
	assert.Equal(t, []string{"prev", "a"}, ids(got), "the handler of a rule already in dst is not looked at")
	assert.Equal(t, []*routing.Rule{prev}, tab.Match(nil, []*routing.Rule{prev}))
}

func TestTableMatchDoesNotAllocate(t *testing.T) {
	tab := benchTable(100)
	msgs := benchMessages()
	dst := make([]*routing.Rule, 0, 100)
	for _, mt := range matchers {
		allocs := testing.AllocsPerRun(50, func() {
			for _, m := range msgs {
				dst = mt.match(tab, m, dst[:0])
			}
		})
		assert.Zero(t, allocs, mt.name)
	}
}

func TestTableLarge(t *testing.T) {
	// Tables too large for Match's stack buffers use pooled ones.
	tests := []struct {
		name     string
		rules    int
		handlers int
		topic    func(i int) string
	}{
		{name: "many handlers", rules: 600, handlers: 550},
		{name: "many rules", rules: 1100, handlers: 10},
		{name: "many wildcards", rules: 100, handlers: 90, topic: func(i int) string {
			return [...]string{"x.*", "x.>", ">", "*.y"}[i%4]
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rules []routing.Rule
			for i := range tt.rules {
				r := routing.Rule{
					ID:       strconv.Itoa(i),
					Handler:  fmt.Sprintf("h%d", i%tt.handlers),
					Priority: i % 7,
					Enabled:  i%13 != 0,
				}
				if tt.topic != nil {
					r.Topic = tt.topic(i)
				}
				rules = append(rules, r)
			}
			tab, err := routing.NewTable(rules...)
			require.NoError(t, err)
			m := &actors.Message{Type: actors.TypePublish, Topic: "x.y"}
			want := naiveMatch(tab, m)
			require.Greater(t, len(want), tt.handlers*9/10)
			for range 3 { // the pooled sets are cleared between calls
				for _, mt := range matchers {
					assert.Equal(t, want, ids(mt.match(tab, m, nil)), mt.name)
				}
			}
		})
	}
}

// naiveMatch is the reference for Table.Match: every enabled rule, in the
// order Rules returns, that matches m and whose handler is new.
func naiveMatch(tab *routing.Table, m *actors.Message) []string {
	out, seen := []string{}, []string(nil)
	for _, r := range tab.Rules() {
		if r.Enabled && r.Matches(m) && !slices.Contains(seen, r.Handler) {
			out = append(out, r.ID)
			seen = append(seen, r.Handler)
		}
	}
	return out
}

// TestTableMatchProperty checks Match against naiveMatch, and Rules against a
// model of the insertion order, over random rules, changes and messages. Set
// ROUTING_SEED to replay a failure.
func TestTableMatchProperty(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed))
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	types := []actors.MessageType{0, 0, actors.TypeDirect, actors.TypePublish, actors.TypeRequest}
	randRule := func(id int) routing.Rule {
		return routing.Rule{
			ID:        "r" + strconv.Itoa(id),
			Type:      types[rng.IntN(len(types))],
			Sender:    pick("", "", "a", "b", "c"),
			Recipient: pick("", "", "", "a", "b", "c"),
			Topic:     pick("", "", "x", "x.y", "x.z", "x.*", "x.>", "*.y", ">", "y.*.z"),
			Handler:   pick("h0", "h1", "h2", "h3", "h4", "h5"),
			Priority:  rng.IntN(4),
			Enabled:   rng.IntN(5) > 0,
		}
	}
	randMessage := func() *actors.Message {
		return &actors.Message{
			Type:      types[1+rng.IntN(len(types)-1)],
			Sender:    pick("", "a", "b", "c", "d"),
			Recipient: pick("", "a", "b", "c", "d"),
			Topic:     pick("", "x", "x.y", "x.z", "x.y.z", "y.y", "y.q.z", "z"),
		}
	}

	for round := range 30 {
		var model []routing.Rule // in insertion order
		next := 0
		for range rng.IntN(120) {
			model = append(model, randRule(next))
			next++
		}
		tab, err := routing.NewTable(model...)
		require.NoError(t, err, "seed %d", seed)

		for step := range 40 {
			switch op := rng.IntN(4); {
			case op == 0 || len(model) == 0:
				r := randRule(next)
				next++
				tab, err = tab.With(r)
				require.NoError(t, err, "seed %d", seed)
				model = append(model, r)
			case op == 1:
				i := rng.IntN(len(model))
				tab, err = tab.Without(model[i].ID)
				require.NoError(t, err, "seed %d", seed)
				model = slices.Delete(model, i, i+1)
			default:
				i := rng.IntN(len(model))
				on := rng.IntN(2) == 0
				tab, err = tab.SetEnabled(model[i].ID, on)
				require.NoError(t, err, "seed %d", seed)
				model[i].Enabled = on
			}

			wantRules := slices.Clone(model)
			slices.SortStableFunc(wantRules, func(a, b routing.Rule) int { return b.Priority - a.Priority })
			if len(wantRules) == 0 {
				require.Empty(t, tab.Rules(), "seed %d round %d step %d", seed, round, step)
			} else {
				require.Equal(t, wantRules, tab.Rules(), "seed %d round %d step %d", seed, round, step)
			}

			for range 20 {
				m := randMessage()
				want := naiveMatch(tab, m)
				for _, mt := range matchers {
					require.Equal(t, want, ids(mt.match(tab, m, nil)),
						"seed %d round %d step %d: %s of %+v", seed, round, step, mt.name, *m)
				}
			}
		}
	}
}

// testSeed returns the seed for a randomized test, from ROUTING_SEED or the
// clock, and logs it if the test fails.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ROUTING_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "ROUTING_SEED")
		seed = v
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with ROUTING_SEED=%d", seed)
		}
	})
	return seed
}
