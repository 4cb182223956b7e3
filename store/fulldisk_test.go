package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/store"
)

// smallFS mounts a 2 MiB tmpfs for the test, or skips it where that cannot
// be done (it needs root).
func smallFS(t *testing.T) string {
	t.Helper()
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		t.Skipf("cannot mount a small tmpfs (%v): needs root", err)
	}
	t.Cleanup(func() { require.NoError(t, syscall.Unmount(mnt, 0)) })
	return mnt
}

// TestDiskFull fills a real, small file system (a 2 MiB tmpfs, which needs
// root to mount: skipped otherwise): the commit that finds no room fails
// with the I/O error, nothing committed before is lost, and the store goes
// on once there is room again.
func TestDiskFull(t *testing.T) {
	dir := filepath.Join(smallFS(t), "data")
	d, err := store.Open(dir, store.Options{})
	require.NoError(t, err)
	value := make([]byte, 4000)
	var committed []string
	var full error
	for i := range 10_000 {
		k := fmt.Sprintf("%05d", i)
		if err := d.Commit(store.Put("messages", []byte(k), value)); err != nil {
			full = err
			break
		}
		committed = append(committed, k)
	}
	require.Error(t, full, "a 2 MiB file system holds no 40 MB")
	assert.True(t, errors.Is(full, syscall.ENOSPC), "%v", full)
	assert.NotEmpty(t, committed)
	// Room again: deleting is a write too, on pages already allocated.
	var ops []store.Op
	for _, k := range committed[len(committed)/2:] {
		ops = append(ops, store.Delete("messages", []byte(k)))
	}
	require.NoError(t, d.Commit(ops...))
	require.NoError(t, d.Commit(store.Put("messages", []byte("again"), []byte("fits"))))
	require.NoError(t, d.Close())

	d, err = store.Open(dir, store.Options{})
	require.NoError(t, err, "the file is sound after the failed write")
	defer d.Close()
	var got []string
	require.NoError(t, d.Scan("messages", func(k, _ []byte) error { got = append(got, string(k)); return nil }))
	want := append(committed[:len(committed)/2:len(committed)/2], "again")
	assert.Equal(t, want, got)
	_, err = os.Stat(filepath.Join(dir, store.FileName))
	require.NoError(t, err)
}

// TestDiskFullSend: on a full disk, a Send to a durable agent fails with
// ErrStoreFull and is not accepted; what was accepted before is recovered.
func TestDiskFullSend(t *testing.T) {
	dir := filepath.Join(smallFS(t), "data")
	d, err := store.Open(dir, store.Options{})
	require.NoError(t, err)
	cfg := agentbus.Config{MailboxSize: 10_000, Durability: agentbus.DurabilityConfig{Store: d}}
	bus, err := agentbus.New(cfg)
	require.NoError(t, err)
	_, err = bus.Spawn("worker", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil }),
		agentbus.WithDurable())
	require.NoError(t, err)
	require.NoError(t, bus.Detach("worker", nil))
	payload := []byte(`"` + strings.Repeat("x", 3000) + `"`)
	accepted := 0
	for {
		_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "t", payload).WithRecipient("worker"))
		if err != nil {
			break
		}
		accepted++
		require.Less(t, accepted, 10_000)
	}
	require.ErrorIs(t, err, agentbus.ErrStoreFull)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.NoError(t, bus.Shutdown(context.Background()))
	require.NoError(t, d.Close())

	d, err = store.Open(dir, store.Options{})
	require.NoError(t, err)
	defer d.Close()
	cfg.Durability.Store = d
	bus, err = agentbus.New(cfg)
	require.NoError(t, err)
	defer bus.Shutdown(context.Background())
	assert.Equal(t, accepted, bus.Accounting().InFlight, "every accepted message is recovered")
}
