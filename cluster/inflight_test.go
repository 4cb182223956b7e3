package cluster

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInflight checks the link's window of unconfirmed frames: every frame
// added is taken exactly once by its sequence number, whether it stayed in
// its ring cell or a later one displaced it, and the window lists what it
// holds.
func TestInflight(t *testing.T) {
	type step struct {
		add  uint64 // add this seq, or take when 0
		take uint64
		ok   bool // take: found
	}
	tests := []struct {
		name   string
		window int
		steps  []step
		held   []uint64 // after the steps
	}{
		{"in order", 4, []step{{add: 1}, {add: 2}, {take: 1, ok: true}, {take: 2, ok: true}, {add: 3}}, []uint64{3}},
		{"twice", 4, []step{{add: 1}, {take: 1, ok: true}, {take: 1}}, nil},
		{"never sent", 4, []step{{add: 1}, {take: 2}, {take: 5}}, []uint64{1}},
		{"out of order", 4, []step{{add: 1}, {add: 2}, {add: 3}, {take: 3, ok: true}, {take: 1, ok: true}}, []uint64{2}},
		{"a stuck frame is displaced and still found", 2, []step{{add: 1}, {add: 2}, {take: 2, ok: true}, {add: 3},
			{add: 4}, {take: 3, ok: true}, {add: 5}, {take: 1, ok: true}, {take: 1}}, []uint64{4, 5}},
		{"the cell of a displaced seq holds a later one", 2, []step{{add: 1}, {add: 3}, {take: 3, ok: true},
			{take: 3}, {take: 1, ok: true}}, nil},
		{"a window above the ring's cap", maxRing + 1, []step{{add: 1}, {add: maxRing + 1}, {take: 1, ok: true},
			{take: maxRing + 1, ok: true}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newInflight(tt.window)
			require.LessOrEqual(t, len(w.ring), maxRing)
			require.GreaterOrEqual(t, len(w.ring), min(tt.window, maxRing))
			for i, s := range tt.steps {
				if s.add != 0 {
					o := &outbound{}
					o.seq = s.add
					w.add(o)
					continue
				}
				o := w.take(s.take)
				require.Equal(t, s.ok, o != nil, "step %d: take %d", i, s.take)
				if o != nil {
					require.Equal(t, s.take, o.seq, "step %d", i)
				}
			}
			assert.Equal(t, len(tt.held), w.len())
			var held []uint64
			w.each(func(o *outbound) { held = append(held, o.seq) })
			slices.Sort(held)
			assert.Equal(t, tt.held, held)
			all := w.clear()
			assert.Len(t, all, len(tt.held))
			assert.Zero(t, w.len())
			w.each(func(o *outbound) { t.Errorf("seq %d held after clear", o.seq) })
		})
	}
}
