package mailbox

import (
	"flag"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var queueSeed = flag.Uint64("queue.seed", 0, "seed for TestQueueMatchesModel (0: derive from the clock)")

// val is a queued test value: its priority and its push order.
type val struct {
	prio, seq int
}

func ent(prio, seq int) entry { return entry{v: val{prio, seq}} }

func popAll(t *testing.T, q *queue) []val {
	t.Helper()
	var out []val
	for {
		e, ok := q.pop()
		if !ok {
			break
		}
		out = append(out, e.v.(val))
	}
	require.Zero(t, q.n)
	return out
}

// sortedVals returns vs in the order the queue must deliver them: highest
// priority first, push order within a priority.
func sortedVals(vs []val) []val {
	if len(vs) == 0 {
		return nil
	}
	out := slices.Clone(vs)
	slices.SortStableFunc(out, func(a, b val) int { return b.prio - a.prio })
	return out
}

func TestQueueEmpty(t *testing.T) {
	var q queue
	e, ok := q.pop()
	assert.False(t, ok)
	assert.Equal(t, entry{}, e)
	assert.Zero(t, q.n)
	assert.Equal(t, -1, q.top())
	assert.Nil(t, q.drain())
	assert.Empty(t, q.removeIf(func(entry) bool { return true }))
}

func TestQueueOrder(t *testing.T) {
	tests := []struct {
		name  string
		prios []int // pushed in this order
	}{
		{name: "one", prios: []int{7}},
		{name: "ascending", prios: []int{0, 1, 2, 50, 99, 100}},
		{name: "descending", prios: []int{100, 99, 64, 63, 1, 0}},
		{name: "word boundary", prios: []int{63, 64, 62, 65, 0, 100, 64, 63}},
		{name: "same level", prios: []int{50, 50, 50, 50, 50}},
		{name: "interleaved", prios: []int{10, 90, 10, 90, 50, 10, 90, 50}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			var pushed []val
			for i, p := range tt.prios {
				q.push(p, ent(p, i))
				pushed = append(pushed, val{p, i})
				assert.Equal(t, i+1, q.n)
			}
			assert.Equal(t, sortedVals(pushed), popAll(t, &q))
		})
	}
}

func TestQueueAllLevels(t *testing.T) {
	// Three values at every level, the levels pushed in a shuffled order.
	r := rand.New(rand.NewPCG(1, 2))
	var q queue
	var pushed []val
	seq := 0
	for range 3 {
		for _, p := range r.Perm(levels) {
			q.push(p, ent(p, seq))
			pushed = append(pushed, val{p, seq})
			seq++
		}
	}
	require.Equal(t, 3*levels, q.n)
	assert.Equal(t, MaxPriority, q.top())

	got := popAll(t, &q)
	assert.Equal(t, sortedVals(pushed), got)
	for p := range levels {
		require.NotNil(t, q.levels[p], "level %d", p)
		assert.Zero(t, q.levels[p].n, "level %d", p)
	}
	assert.Equal(t, [2]uint64{}, q.bits)
}

func TestQueueFIFOWithinLevel(t *testing.T) {
	var q queue
	const n = 1000
	for i := range n {
		q.push(42, ent(42, i))
	}
	for i := range n {
		e, ok := q.pop()
		require.True(t, ok)
		require.Equal(t, val{42, i}, e.v)
	}
	_, ok := q.pop()
	assert.False(t, ok)
}

func TestQueueKeepsDeadline(t *testing.T) {
	var q queue
	q.push(3, entry{v: "a", deadline: 17})
	e, ok := q.pop()
	require.True(t, ok)
	assert.Equal(t, entry{v: "a", deadline: 17}, e)
}

func TestRingGrowthAndWrap(t *testing.T) {
	var r ring
	seq := 0
	next := 0 // the seq the next pop must return
	push := func(k int) {
		for range k {
			r.push(ent(0, seq))
			seq++
		}
	}
	pop := func(k int) {
		t.Helper()
		for range k {
			require.Equal(t, val{0, next}, r.pop().v)
			next++
		}
	}

	push(1)
	assert.Len(t, r.buf, 8, "first buffer")
	push(7)
	assert.Len(t, r.buf, 8, "full, not grown yet")
	pop(3)
	push(3) // wraps around the end of the buffer
	assert.Len(t, r.buf, 8, "wrapped without growing")
	assert.Equal(t, 3, r.head)
	push(1) // grows while wrapped: the order must survive the copy
	assert.Len(t, r.buf, 16)
	assert.Equal(t, 0, r.head, "grow rebases head")
	assert.Equal(t, 9, r.n)
	push(20)
	assert.Len(t, r.buf, 32)
	pop(29)
	assert.Zero(t, r.n)
	assert.Zero(t, r.head, "an emptied ring restarts at 0")
	for i, e := range r.buf {
		assert.Nil(t, e.v, "slot %d still references a popped value", i)
	}
}

func TestQueueShrink(t *testing.T) {
	tests := []struct {
		name       string
		capacity   int // 0: keep no large buffer
		n          int
		wantBufLen int // after the level empties
	}{
		{name: "small level keeps its buffer", n: 10, wantBufLen: 16},
		{name: "at the threshold keeps it", n: shrinkAbove, wantBufLen: shrinkAbove},
		{name: "large level gives it back", n: shrinkAbove + 1, wantBufLen: 0},
		{name: "burst gives it back", n: 1000, wantBufLen: 0},
		{name: "burst within the budget keeps it", capacity: 1000, n: 1000, wantBufLen: 1024},
		{name: "burst over the budget gives it back", capacity: 500, n: 1000, wantBufLen: 0},
		{name: "the budget is capped", capacity: 100_000, n: maxKeep + 1, wantBufLen: 0},
		{name: "up to the cap", capacity: 100_000, n: maxKeep, wantBufLen: maxKeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			if tt.capacity > 0 {
				q.setKeep(tt.capacity)
			}
			for i := range tt.n {
				q.push(7, ent(7, i))
			}
			q.push(3, ent(3, tt.n))
			popAll(t, &q)
			assert.Len(t, q.levels[7].buf, tt.wantBufLen)
			assert.Len(t, q.levels[3].buf, 8)
			assert.Equal(t, tt.wantBufLen*btoi(tt.wantBufLen > shrinkAbove), q.kept, "kept entries")

			// The level is still usable afterwards.
			q.push(7, ent(7, 0))
			e, ok := q.pop()
			require.True(t, ok)
			assert.Equal(t, val{7, 0}, e.v)
		})
	}
}

func TestQueueDrain(t *testing.T) {
	var q queue
	var pushed []val
	for i, p := range []int{5, 100, 0, 5, 64, 63, 100, 5} {
		q.push(p, ent(p, i))
		pushed = append(pushed, val{p, i})
	}
	got := q.drain()
	require.Len(t, got, len(pushed))
	var vs []val
	for _, e := range got {
		vs = append(vs, e.v.(val))
	}
	assert.Equal(t, sortedVals(pushed), vs)
	assert.Zero(t, q.n)
	assert.Equal(t, -1, q.top())
	assert.Nil(t, q.drain(), "second drain")

	q.push(1, ent(1, 99))
	assert.Equal(t, []val{{1, 99}}, popAll(t, &q), "reusable after drain")
}

func TestQueueRemoveIf(t *testing.T) {
	tests := []struct {
		name        string
		prios       []int
		drop        func(v val) bool
		wantRemoved []val // lowest level first, push order within a level
	}{
		{
			name:  "none",
			prios: []int{1, 2, 3},
			drop:  func(val) bool { return false },
		},
		{
			name:        "all",
			prios:       []int{1, 2, 1},
			drop:        func(val) bool { return true },
			wantRemoved: []val{{1, 0}, {1, 2}, {2, 1}},
		},
		{
			name:        "odd seqs across levels",
			prios:       []int{9, 9, 9, 9, 70, 70, 70, 0, 0},
			drop:        func(v val) bool { return v.seq%2 == 1 },
			wantRemoved: []val{{0, 7}, {9, 1}, {9, 3}, {70, 5}},
		},
		{
			name:        "a whole level",
			prios:       []int{100, 50, 100, 50},
			drop:        func(v val) bool { return v.prio == 100 },
			wantRemoved: []val{{100, 0}, {100, 2}},
		},
		{
			name:        "first and last of a level",
			prios:       []int{4, 4, 4, 4, 4},
			drop:        func(v val) bool { return v.seq == 0 || v.seq == 4 },
			wantRemoved: []val{{4, 0}, {4, 4}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			var kept []val
			for i, p := range tt.prios {
				q.push(p, ent(p, i))
				if !tt.drop(val{p, i}) {
					kept = append(kept, val{p, i})
				}
			}
			removed := q.removeIf(func(e entry) bool { return tt.drop(e.v.(val)) })
			var got []val
			for _, e := range removed {
				got = append(got, e.v.(val))
			}
			assert.Equal(t, tt.wantRemoved, got)
			assert.Equal(t, len(kept), q.n)
			assert.Equal(t, sortedVals(kept), popAll(t, &q))
		})
	}
}

func TestQueueRemoveIfWrapped(t *testing.T) {
	// Make the level's ring wrap around its buffer end before removing, so
	// the compaction has to follow the ring's indices.
	var q queue
	for i := range 8 {
		q.push(20, ent(20, i))
	}
	for range 5 {
		_, ok := q.pop()
		require.True(t, ok)
	}
	for i := 8; i < 13; i++ {
		q.push(20, ent(20, i))
	}
	r := q.levels[20]
	require.Len(t, r.buf, 8)
	require.Equal(t, 5, r.head, "precondition: wrapped")

	removed := q.removeIf(func(e entry) bool { return e.v.(val).seq%3 == 0 })
	var got []val
	for _, e := range removed {
		got = append(got, e.v.(val))
	}
	assert.Equal(t, []val{{20, 6}, {20, 9}, {20, 12}}, got)
	for i := r.n; i < len(r.buf); i++ {
		assert.Nil(t, r.buf[(r.head+i)&(len(r.buf)-1)].v, "vacated slot %d keeps a reference", i)
	}
	q.push(20, ent(20, 13)) // pushes after a compaction land behind the kept ones
	assert.Equal(t, []val{{20, 5}, {20, 7}, {20, 8}, {20, 10}, {20, 11}, {20, 13}}, popAll(t, &q))
}

// model is the reference the queue must agree with: a slice in push order,
// popped by a linear scan for the highest priority.
type model []val

func (m *model) pop() (val, bool) {
	best := -1
	for i, v := range *m {
		if best < 0 || v.prio > (*m)[best].prio {
			best = i
		}
	}
	if best < 0 {
		return val{}, false
	}
	v := (*m)[best]
	*m = slices.Delete(*m, best, best+1)
	return v, true
}

func TestQueueMatchesModel(t *testing.T) {
	seed := *queueSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	defer func() {
		if t.Failed() {
			t.Logf("reproduce with: go test -run TestQueueMatchesModel ./mailbox/ -queue.seed=%d", seed)
		}
	}()
	r := rand.New(rand.NewPCG(seed, seed>>1))

	for round := range 20 {
		var q queue
		var m model
		seq := 0
		// Some rounds use few levels, so FIFO within a level is exercised
		// hard; others spread over all of them.
		spread := []int{1, 3, levels}[round%3]
		base := r.IntN(levels - spread + 1)
		for step := range 2000 {
			switch op := r.IntN(100); {
			case op < 55:
				p := base + r.IntN(spread)
				q.push(p, ent(p, seq))
				m = append(m, val{p, seq})
				seq++
			case op < 95:
				want, wantOK := m.pop()
				e, ok := q.pop()
				require.Equal(t, wantOK, ok, "seed %d round %d step %d: pop ok", seed, round, step)
				if ok {
					require.Equal(t, want, e.v, "seed %d round %d step %d: pop", seed, round, step)
				}
			case op < 99:
				k := 2 + r.IntN(4)
				drop := func(v val) bool { return v.seq%k == 0 }
				var want []val
				m = slices.DeleteFunc(m, func(v val) bool {
					if drop(v) {
						want = append(want, v)
					}
					return drop(v)
				})
				var got []val
				for _, e := range q.removeIf(func(e entry) bool { return drop(e.v.(val)) }) {
					got = append(got, e.v.(val))
				}
				slices.SortStableFunc(want, func(a, b val) int { return a.prio - b.prio })
				require.Equal(t, want, got, "seed %d round %d step %d: removeIf", seed, round, step)
			default:
				want := sortedVals(m)
				m = nil
				var got []val
				for _, e := range q.drain() {
					got = append(got, e.v.(val))
				}
				require.Equal(t, want, got, "seed %d round %d step %d: drain", seed, round, step)
			}
			require.Equal(t, len(m), q.n, "seed %d round %d step %d: len", seed, round, step)
		}
		require.Equal(t, sortedVals(m), popAll(t, &q), "seed %d round %d: final", seed, round)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestQueueKeepBudget checks that the large buffers kept by empty levels never
// total more than the budget, whatever order levels fill and empty in, and
// that a level filling again takes its buffer off the account.
func TestQueueKeepBudget(t *testing.T) {
	var q queue
	q.setKeep(256) // one 256-entry buffer, or two of 128
	fill := func(p, n int) {
		for i := range n {
			q.push(p, ent(p, i))
		}
	}
	empty := func(p int) {
		for {
			if _, ok := q.popFrom(p); !ok {
				return
			}
		}
	}
	fill(1, 100) // 128-entry buffers
	fill(2, 100)
	fill(3, 100)
	empty(1)
	empty(2)
	empty(3)
	assert.Equal(t, 256, q.kept)
	assert.Len(t, q.levels[1].buf, 128, "kept")
	assert.Len(t, q.levels[2].buf, 128, "kept")
	assert.Nil(t, q.levels[3].buf, "over the budget: freed")

	fill(1, 1) // in use again: off the account, so level 3 may keep its next one
	assert.Equal(t, 128, q.kept)
	fill(3, 100)
	empty(3)
	assert.Equal(t, 256, q.kept)
	assert.Len(t, q.levels[3].buf, 128)

	// removeIf emptying a level is accounted as popping it empty.
	fill(2, 100)
	assert.Equal(t, 128, q.kept)
	removed := q.removeIf(func(e entry) bool { return e.v.(val).prio == 2 })
	assert.Len(t, removed, 100)
	assert.Equal(t, 256, q.kept)
	assert.Len(t, q.levels[2].buf, 128)
	assert.Equal(t, 1, q.n, "level 1 untouched")
}

// TestQueuePopN checks that popN takes the same values, in the same order,
// as popping one at a time would, wherever the ring's head stands (so across
// the wrap), and that it clears the slots it took.
func TestQueuePopN(t *testing.T) {
	tests := []struct {
		name            string
		skip, n, take   int // pop skip values first, so the head moves; queue n; take up to take
		wantTaken, left int
	}{
		{name: "empty level", n: 1, take: 0, wantTaken: 0, left: 1},
		{name: "fewer than asked", n: 3, take: 8, wantTaken: 3},
		{name: "more than asked", n: 10, take: 4, wantTaken: 4, left: 6},
		{name: "across the wrap", skip: 6, n: 7, take: 32, wantTaken: 7},
		{name: "part of a wrapped run", skip: 6, n: 7, take: 3, wantTaken: 3, left: 4},
		{name: "exactly to the end of the buffer", skip: 5, n: 6, take: 4, wantTaken: 4, left: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q queue
			seq, first := 0, 0
			if tt.skip > 0 && tt.n > 0 {
				// Queue skip values and pop all but the last, so the
				// head stands at skip-1 (an emptied ring would restart
				// at 0); the kept one is the first of the n.
				for range tt.skip {
					q.push(4, ent(4, seq))
					seq++
				}
				for range tt.skip - 1 {
					_, ok := q.popFrom(4)
					require.True(t, ok)
				}
				first = tt.skip - 1
				require.Equal(t, first, q.levels[4].head)
			}
			for q.n < tt.n {
				q.push(4, ent(4, seq))
				seq++
			}
			if tt.skip > 0 {
				require.Len(t, q.levels[4].buf, 8, "no growth: the run must wrap in place")
			}
			dst := make([]entry, tt.take)
			got := q.popN(4, dst)
			require.Equal(t, tt.wantTaken, got)
			for i := range got {
				assert.Equal(t, val{4, first + i}, dst[i].v)
			}
			assert.Equal(t, tt.left, q.n)
			assert.Equal(t, tt.left > 0, q.top() == 4, "level bit")
			if r := q.levels[4]; r != nil {
				for i := range len(r.buf) {
					if (i-r.head)&(len(r.buf)-1) >= r.n {
						assert.Nil(t, r.buf[i].v, "slot %d still references a taken value", i)
					}
				}
			}
			for i := range tt.left { // the rest follow in order
				e, ok := q.pop()
				require.True(t, ok)
				assert.Equal(t, val{4, first + got + i}, e.v)
			}
		})
	}
}
