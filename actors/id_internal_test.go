package actors

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// referenceV7 is putV7 written with uuid.UUID: the bytes of RFC 9562's
// layout, formatted by the uuid package.
func referenceV7(stamp, random uint64) string {
	var u uuid.UUID
	ms, seq := stamp>>12, stamp&0xfff
	u[0], u[1], u[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	u[3], u[4], u[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	u[6], u[7] = 0x70|byte(seq>>8), byte(seq)
	for i := 8; i < 16; i++ {
		u[i] = byte(random >> (8 * (15 - i)))
	}
	u[8] = 0x80 | u[8]&0x3f
	return u.String()
}

func TestPutV7MatchesTheUUIDPackage(t *testing.T) {
	cases := []struct {
		name          string
		stamp, random uint64
	}{
		{"zero", 0, 0},
		{"all ones", 1<<60 - 1, ^uint64(0)},
		{"counter full", 0x123456789ab<<12 | 0xfff, 0x0123456789abcdef},
		{"variant bits set", 1 << 12, 0xc000000000000000},
		{"now", uint64(time.Now().UnixMilli())<<12 | 7, 0xdeadbeefcafef00d},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf [idLen]byte
			putV7(&buf, tc.stamp, tc.random)
			assert.Equal(t, referenceV7(tc.stamp, tc.random), string(buf[:]))
		})
	}
	for i := range uint64(1000) { // and a spread of values
		stamp, random := (i*0x9e3779b97f4a7c15)>>4, i*0xbf58476d1ce4e5b9
		var buf [idLen]byte
		putV7(&buf, stamp, random)
		require.Equal(t, referenceV7(stamp, random), string(buf[:]))
	}
}

// TestNewMessageIDOutlivesItsMessage checks the ID NewMessage stores in the
// message's own block: it stays intact once nothing else refers to the
// message, through collections and new allocations, and clones share it.
func TestNewMessageIDOutlivesItsMessage(t *testing.T) {
	ids := make([]string, 0, 1000)
	want := make([]string, 0, 1000)
	for range 1000 {
		m := NewMessage(TypeDirect, "a", nil)
		c := m.Clone()
		require.Equal(t, m.ID, c.ID)
		ids = append(ids, m.ID)
		want = append(want, strings.Clone(m.ID))
	}
	for range 3 {
		runtime.GC()
		for range 1000 {
			_ = NewMessage(TypeDirect, "b", nil) // reuse freed blocks, if any were freed
		}
	}
	require.Equal(t, want, ids)
	for i, id := range ids {
		u, err := uuid.Parse(id)
		require.NoError(t, err)
		require.Equal(t, uuid.Version(7), u.Version())
		if i > 0 {
			require.Less(t, ids[i-1], id, "IDs from one process increase")
		}
	}
}

// TestNewMessageIDCarriesItsTimestamp checks that the ID's milliseconds are
// the message's Timestamp's: one clock read serves both.
func TestNewMessageIDCarriesItsTimestamp(t *testing.T) {
	m := NewMessage(TypeDirect, "a", nil)
	u, err := uuid.Parse(m.ID)
	require.NoError(t, err)
	sec, nsec := u.Time().UnixTime()
	idMs := sec*1000 + nsec/1e6
	// A burst of IDs in one millisecond carries into the next: the ID may
	// be ahead of the clock, never behind it.
	assert.GreaterOrEqual(t, idMs, m.Timestamp.UnixMilli())
	assert.LessOrEqual(t, idMs-m.Timestamp.UnixMilli(), int64(1000))
}
