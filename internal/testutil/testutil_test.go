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
