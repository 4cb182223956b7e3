package testutil_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

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
