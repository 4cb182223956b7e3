package store_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/descartes/agentbus/store"
)

// BenchmarkDiskCommit measures the disk store alone: 32 goroutines each
// commit a 300-byte record and submit its deletion, as the bus does for a
// durable message that is handled.
func BenchmarkDiskCommit(b *testing.B) {
	for _, p := range []store.Policy{store.Batch, store.Always, store.None} {
		b.Run("policy="+p.String(), func(b *testing.B) {
			d, err := store.Open(filepath.Join(b.TempDir(), "data"), store.Options{Policy: p})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			val := make([]byte, 300)
			var n atomic.Uint64
			parallel(b, func() error {
				k := fmt.Appendf(nil, "agent\x00%016d", n.Add(1))
				if err := d.Commit(store.Put("messages", k, val)); err != nil {
					return err
				}
				return d.Submit(store.Delete("messages", k))
			})
		})
	}
}
