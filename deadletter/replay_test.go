package deadletter_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/deadletter"
)

func TestMarkReplayed(t *testing.T) {
	at1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	at2 := at1.Add(time.Minute)

	q := deadletter.New(10, 0)
	for range 3 {
		q.Add(deadletter.Letter{Reason: deadletter.HandlerError, Agent: "a"})
	}

	require.NoError(t, q.MarkReplayed(2, "b", at1))
	l, ok := q.Get(2)
	require.True(t, ok)
	assert.Equal(t, 1, l.Replays)
	assert.Equal(t, "b", l.ReplayedTo)
	assert.Equal(t, at1, l.ReplayedAt)
	assert.Equal(t, deadletter.HandlerError, l.Reason, "the rest of the letter is kept")
	assert.Equal(t, "a", l.Agent)

	require.NoError(t, q.MarkReplayed(2, "#topic", at2))
	l, ok = q.Get(2)
	require.True(t, ok)
	assert.Equal(t, 2, l.Replays, "replays add up")
	assert.Equal(t, "#topic", l.ReplayedTo, "the last replay wins")
	assert.Equal(t, at2, l.ReplayedAt)

	ls := q.List(deadletter.Filter{})
	require.Equal(t, []uint64{1, 2, 3}, seqs(ls))
	assert.Equal(t, 2, ls[1].Replays, "List shows the mark")
	assert.Equal(t, "#topic", ls[1].ReplayedTo)
	for _, i := range []int{0, 2} {
		assert.Zero(t, ls[i].Replays, "seq %d untouched", ls[i].Seq)
		assert.Empty(t, ls[i].ReplayedTo)
		assert.True(t, ls[i].ReplayedAt.IsZero())
	}
	assert.Equal(t, 3, q.Len(), "marking neither adds nor removes")
	assert.EqualValues(t, 3, q.Total())
}

func TestMarkReplayedUnknown(t *testing.T) {
	tests := []struct {
		name  string
		setup func(q *deadletter.Queue) // q holds at most 3 letters
		seq   uint64
	}{
		{name: "empty queue", setup: func(*deadletter.Queue) {}, seq: 1},
		{name: "seq zero", setup: addN(2), seq: 0},
		{name: "never added", setup: addN(2), seq: 3},
		{name: "far future", setup: addN(2), seq: 1 << 62},
		{name: "evicted", setup: addN(5), seq: 2},
		{name: "purged", setup: func(q *deadletter.Queue) {
			addN(2)(q)
			q.Purge()
		}, seq: 1},
		{name: "purged then refilled", setup: func(q *deadletter.Queue) {
			addN(2)(q)
			q.Purge()
			addN(2)(q) // seqs 3 and 4
		}, seq: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := deadletter.New(3, 0)
			tt.setup(q)
			before := q.List(deadletter.Filter{})

			err := q.MarkReplayed(tt.seq, "b", time.Now())
			require.ErrorIs(t, err, deadletter.ErrUnknownLetter)
			_, ok := q.Get(tt.seq)
			assert.False(t, ok)
			assert.Equal(t, before, q.List(deadletter.Filter{}), "no held letter changed")
		})
	}
}

func TestMarkReplayedWrapped(t *testing.T) {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		bound int // the queue's letter bound
		added int // letters added to it
	}{
		{name: "one past the bound", bound: 4, added: 5},
		{name: "head mid ring", bound: 4, added: 6},
		{name: "many times around", bound: 4, added: 43},
		{name: "grown ring", bound: 20, added: 17},
		{name: "grown ring wrapped", bound: 20, added: 33},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bound := tt.bound
			q := deadletter.New(bound, 0)
			addN(tt.added)(q)
			held := min(tt.added, bound)
			require.Equal(t, held, q.Len())
			oldest := uint64(tt.added - held + 1)

			for seq := oldest; seq <= uint64(tt.added); seq++ {
				require.NoError(t, q.MarkReplayed(seq, "b", at.Add(time.Duration(seq))), "seq %d", seq)
			}
			// The newest twice more.
			newest := uint64(tt.added)
			require.NoError(t, q.MarkReplayed(newest, "c", at))
			require.NoError(t, q.MarkReplayed(newest, "d", at))
			require.ErrorIs(t, q.MarkReplayed(oldest-1, "b", at), deadletter.ErrUnknownLetter, "evicted (or seq 0)")
			require.ErrorIs(t, q.MarkReplayed(newest+1, "b", at), deadletter.ErrUnknownLetter, "not yet added")

			ls := q.List(deadletter.Filter{})
			require.Len(t, ls, held)
			for i, l := range ls {
				seq := oldest + uint64(i)
				require.Equal(t, seq, l.Seq, "oldest first")
				got, ok := q.Get(seq)
				require.True(t, ok)
				assert.Equal(t, l, got, "Get and List agree on seq %d", seq)
				if seq == newest {
					assert.Equal(t, 3, l.Replays)
					assert.Equal(t, "d", l.ReplayedTo)
					assert.Equal(t, at, l.ReplayedAt)
					continue
				}
				assert.Equal(t, 1, l.Replays, "seq %d", seq)
				assert.Equal(t, "b", l.ReplayedTo)
				assert.Equal(t, at.Add(time.Duration(seq)), l.ReplayedAt, "the mark is on the right letter")
			}

			// A mark does not survive its letter: the slot is reused clean.
			addN(bound)(q)
			_, ok := q.Get(newest)
			assert.False(t, ok, "every marked letter evicted")
			assert.ErrorIs(t, q.MarkReplayed(newest, "b", at), deadletter.ErrUnknownLetter)
			for _, l := range q.List(deadletter.Filter{}) {
				assert.Zero(t, l.Replays, "seq %d", l.Seq)
				assert.Empty(t, l.ReplayedTo)
				assert.True(t, l.ReplayedAt.IsZero())
			}
		})
	}
}

// addN returns a setup that adds n letters.
func addN(n int) func(q *deadletter.Queue) {
	return func(q *deadletter.Queue) {
		for range n {
			q.Add(deadletter.Letter{Reason: deadletter.Expired})
		}
	}
}
