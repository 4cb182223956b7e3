package cluster

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestInboundDropsCopies checks the receiving side's record of sequence
// numbers taken: every copy of a seq taken before is a duplicate (parked
// while its original waits), in order or not, and base rises over what is
// done.
func TestInboundDropsCopies(t *testing.T) {
	type step struct {
		op     string // take, park, done
		seq    uint64
		dup    bool // take: a copy
		parked bool // take: of a parked one
	}
	tests := []struct {
		name  string
		steps []step
		base  uint64
		seen  int
	}{
		{"in order", []step{{"take", 1, false, false}, {"take", 1, true, false}, {"done", 1, false, false},
			{"take", 1, true, false}, {"take", 2, false, false}, {"done", 2, false, false}}, 2, 0},
		{"a copy while the original is handled", []step{{"take", 1, false, false}, {"take", 2, false, false},
			{"take", 1, true, false}, {"take", 2, true, false}, {"done", 2, false, false}, {"take", 2, true, false},
			{"done", 1, false, false}}, 2, 0},
		{"out of order", []step{{"take", 2, false, false}, {"take", 1, false, false}, {"done", 2, false, false},
			{"take", 2, true, false}, {"done", 1, false, false}, {"take", 3, false, false}}, 2, 0},
		{"parked", []step{{"take", 1, false, false}, {"park", 1, false, false}, {"take", 1, true, true},
			{"take", 2, false, false}, {"done", 2, false, false}, {"take", 1, true, true}, {"done", 1, false, false},
			{"take", 1, true, false}}, 2, 0},
		{"a gap waits", []step{{"take", 1, false, false}, {"done", 1, false, false}, {"take", 3, false, false},
			{"done", 3, false, false}, {"take", 3, true, false}}, 1, 1},
		{"far above base: the missing ones are given up", []step{{"take", 1, false, false}, {"take", 3, false, false},
			{"take", maxSeen + 5, false, false}, {"take", 3, true, false}, {"take", 5, true, false},
			{"take", maxSeen + 5, true, false}, {"take", 6, false, false}}, 5, 2},
		{"a seq a ring's length above a held one is not a copy", []step{{"take", 1, false, false},
			{"take", 3, false, false}, {"park", 3, false, false}, {"take", 3 + maxSeen, false, false},
			{"take", 3 + maxSeen, true, false}, {"take", 4, false, false}, {"done", 4, false, false},
			{"done", 3 + maxSeen, false, false}}, 4, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &inbound{}
			for i, s := range tt.steps {
				switch s.op {
				case "take":
					dup, parked := in.take(s.seq)
					require.Equal(t, s.dup, dup, "step %d: take %d", i, s.seq)
					require.Equal(t, s.parked, parked, "step %d: take %d", i, s.seq)
				case "park":
					in.park(s.seq)
				case "done":
					in.done(s.seq)
				}
			}
			require.Equal(t, tt.base, in.base)
			require.Equal(t, tt.seen, in.seen.n)
		})
	}
}
