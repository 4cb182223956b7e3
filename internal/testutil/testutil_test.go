package testutil_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/internal/testutil"
)

func TestSyncBuffer(t *testing.T) {
	var b testutil.SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("x"))
			}
		})
	}
	wg.Wait()
	assert.Len(t, b.String(), 400)
}

func TestMalformed(t *testing.T) {
	var got []string
	for _, b := range testutil.Malformed("ab", "xy") {
		got = append(got, string(b))
	}
	assert.Equal(t, []string{"", "a", "xb", "yb", "ax", "ay"}, got)
}

func TestExported(t *testing.T) {
	type v struct {
		A      int
		hidden int
		B      string
	}
	assert.Equal(t, v{A: 1, B: "b"}, testutil.Exported(&v{A: 1, hidden: 2, B: "b"}))
}

func TestCPUTime(t *testing.T) {
	start := testutil.CPUTime()
	require.Positive(t, start)
	deadline := time.Now().Add(time.Second)
	for testutil.CPUTime() < start+10*time.Millisecond { // spins until 10 ms of CPU are used
		require.True(t, time.Now().Before(deadline), "10 ms of spinning did not show as CPU time")
	}
}
