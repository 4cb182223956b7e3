package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus/store"
	"github.com/descartes/agentbus/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T, maxBytes int64) store.Store { return store.NewMemory(maxBytes) })
}

func TestDisk(t *testing.T) {
	for _, p := range []store.Policy{store.Batch, store.Always, store.None} {
		t.Run("policy="+p.String(), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, maxBytes int64) store.Store {
				d, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Policy: p, MaxBytes: maxBytes})
				require.NoError(t, err)
				return d
			})
		})
	}
}

func TestDiskReopen(t *testing.T) {
	for _, p := range []store.Policy{store.Batch, store.Always, store.None} {
		t.Run("policy="+p.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			d, err := store.Open(dir, store.Options{Policy: p})
			require.NoError(t, err)
			require.NoError(t, d.Commit(store.Put("a", []byte("k1"), []byte("v1")), store.Put("a", []byte("k2"), []byte("v2"))))
			require.NoError(t, d.Submit(store.Delete("a", []byte("k1"))))
			require.NoError(t, d.Close()) // writes what was submitted
			d, err = store.Open(dir, store.Options{Policy: p})
			require.NoError(t, err)
			defer d.Close()
			got := map[string]string{}
			require.NoError(t, d.Scan("a", func(k, v []byte) error { got[string(k)] = string(v); return nil }))
			assert.Equal(t, map[string]string{"k2": "v2"}, got)
			assert.Equal(t, int64(4), d.Size(), "the size is counted again at open")
		})
	}
}

func TestDiskPermissions(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	d, err := store.Open(dir, store.Options{})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	fi, err = os.Stat(filepath.Join(dir, store.FileName))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Ours, but open to others: made private again.
	require.NoError(t, os.Chmod(filepath.Join(dir, store.FileName), 0o644))
	require.NoError(t, os.Chmod(dir, 0o755))
	d, err = store.Open(dir, store.Options{})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	fi, err = os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	fi, err = os.Stat(filepath.Join(dir, store.FileName))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	if os.Getuid() == 0 { // someone else's, open to others: refused
		other := filepath.Join(root, "other")
		require.NoError(t, os.Mkdir(other, 0o755))
		require.NoError(t, os.Chown(other, 12345, 12345))
		_, err = store.Open(other, store.Options{})
		require.ErrorIs(t, err, store.ErrPermissions)
		assert.ErrorContains(t, err, other)
	}

	file := filepath.Join(root, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = store.Open(file, store.Options{})
	require.Error(t, err)
}

func TestDiskLocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d, err := store.Open(dir, store.Options{})
	require.NoError(t, err)
	defer d.Close()
	_, err = store.Open(dir, store.Options{})
	require.ErrorIs(t, err, store.ErrLocked)
}

func TestDiskBadPolicy(t *testing.T) {
	_, err := store.Open(t.TempDir(), store.Options{Policy: 9})
	require.ErrorIs(t, err, store.ErrInvalidOp)
}

func TestParsePolicy(t *testing.T) {
	for _, p := range []store.Policy{store.Batch, store.Always, store.None} {
		got, err := store.ParsePolicy(p.String())
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	_, err := store.ParsePolicy("sometimes")
	require.ErrorIs(t, err, store.ErrInvalidOp)
	assert.Equal(t, "Policy(7)", store.Policy(7).String())
}

// TestDiskCorrupt damages the file in several ways: each is found at Open
// and named, never a panic.
func TestDiskCorrupt(t *testing.T) {
	value := []byte("a value that is easy to find in the file")
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"flipped byte in a record", func(t *testing.T, path string) {
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			i := indexOf(data, value)
			require.GreaterOrEqual(t, i, 0)
			data[i+3] ^= 0x20
			require.NoError(t, os.WriteFile(path, data, 0o600))
		}},
		{"truncated", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(path, fi.Size()/3))
		}},
		{"truncated to one page", func(t *testing.T, path string) {
			require.NoError(t, os.Truncate(path, 4096))
		}},
		{"meta pages zeroed", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			require.NoError(t, err)
			_, err = f.WriteAt(make([]byte, 8192), 0)
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}},
		{"not a store", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte("hello, I am a text file\n"), 0o600))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			d, err := store.Open(dir, store.Options{})
			require.NoError(t, err)
			var ops []store.Op
			for i := range 200 {
				k := []byte{byte(i >> 8), byte(i)}
				ops = append(ops, store.Put("messages", k, append(value, k...)))
			}
			require.NoError(t, d.Commit(ops...))
			require.NoError(t, d.Close())
			path := filepath.Join(dir, store.FileName)
			tt.damage(t, path)
			d, err = store.Open(dir, store.Options{})
			if err == nil {
				// Damage the open check cannot see (a page that holds no
				// record) must still surface as ErrCorrupt when read.
				err = d.Scan("messages", func(k, v []byte) error { return nil })
				_ = d.Close()
			}
			require.Error(t, err)
			require.True(t, errors.Is(err, store.ErrCorrupt), "%v", err)
			assert.ErrorContains(t, err, path)
		})
	}
}

func indexOf(data, sub []byte) int {
	for i := 0; i+len(sub) <= len(data); i++ {
		if string(data[i:i+len(sub)]) == string(sub) {
			return i
		}
	}
	return -1
}
