// Package storetest is the conformance suite of store.Store: every
// implementation passes Run.
package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/store"
)

// Open returns a new, empty store bounded to maxBytes (0: no bound). The
// suite closes it.
type Open func(t *testing.T, maxBytes int64) store.Store

// Run checks every operation of the stores that open returns.
func Run(t *testing.T, open Open) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, open Open)
	}{
		{"PutAndScan", testPutAndScan},
		{"ScanOrder", testScanOrder},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"Atomic", testAtomic},
		{"Full", testFull},
		{"SubmitNeverFull", testSubmitNeverFull},
		{"SubmitOrder", testSubmitOrder},
		{"InvalidOps", testInvalidOps},
		{"ScanError", testScanError},
		{"CopiesValues", testCopiesValues},
		{"Concurrent", testConcurrent},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open) })
	}
}

// records returns bucket's records as a map, and their keys in scan order.
func records(t *testing.T, s store.Store, bucket string) (map[string]string, []string) {
	t.Helper()
	got := map[string]string{}
	var order []string
	require.NoError(t, s.Scan(bucket, func(k, v []byte) error {
		got[string(k)] = string(v)
		order = append(order, string(k))
		return nil
	}))
	return got, order
}

func closeStore(t *testing.T, s store.Store) {
	t.Helper()
	require.NoError(t, s.Close())
}

func testPutAndScan(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	require.NoError(t, s.Commit(store.Put("a", []byte("k1"), []byte("v1")), store.Put("b", []byte("k1"), []byte("w1")),
		store.Put("a", []byte("k2"), nil)))
	got, _ := records(t, s, "a")
	assert.Equal(t, map[string]string{"k1": "v1", "k2": ""}, got)
	got, _ = records(t, s, "b")
	assert.Equal(t, map[string]string{"k1": "w1"}, got)
	got, _ = records(t, s, "missing")
	assert.Empty(t, got)
	assert.Equal(t, int64(2+2+2+2+2), s.Size())
}

func testScanOrder(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	for _, k := range []string{"m", "b", "z", "a", "ab", "\x00", "\xff"} {
		require.NoError(t, s.Commit(store.Put("x", []byte(k), []byte(k))))
	}
	_, order := records(t, s, "x")
	assert.Equal(t, []string{"\x00", "a", "ab", "b", "m", "z", "\xff"}, order)
}

func testOverwrite(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	require.NoError(t, s.Commit(store.Put("a", []byte("k"), []byte("long value"))))
	require.NoError(t, s.Commit(store.Put("a", []byte("k"), []byte("v"))))
	got, _ := records(t, s, "a")
	assert.Equal(t, map[string]string{"k": "v"}, got)
	assert.Equal(t, int64(2), s.Size())
}

func testDelete(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	require.NoError(t, s.Commit(store.Put("a", []byte("k1"), []byte("v1")), store.Put("a", []byte("k2"), []byte("v2"))))
	require.NoError(t, s.Commit(store.Delete("a", []byte("k1")), store.Delete("a", []byte("nope")),
		store.Delete("nobucket", []byte("k"))))
	got, _ := records(t, s, "a")
	assert.Equal(t, map[string]string{"k2": "v2"}, got)
	assert.Equal(t, int64(4), s.Size())
	// A put then a delete of one key in one group: absent.
	require.NoError(t, s.Commit(store.Put("a", []byte("k3"), []byte("v3")), store.Delete("a", []byte("k3"))))
	got, _ = records(t, s, "a")
	assert.Equal(t, map[string]string{"k2": "v2"}, got)
	assert.Equal(t, int64(4), s.Size())
}

func testAtomic(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	// An invalid op anywhere in a group: nothing of it is applied.
	err := s.Commit(store.Put("a", []byte("k1"), []byte("v1")), store.Put("a", nil, []byte("v")))
	require.ErrorIs(t, err, store.ErrInvalidOp)
	got, _ := records(t, s, "a")
	assert.Empty(t, got)
	assert.Zero(t, s.Size())
}

func testFull(t *testing.T, open Open) {
	s := open(t, 10)
	defer closeStore(t, s)
	require.NoError(t, s.Commit(store.Put("a", []byte("k1"), []byte("123456")))) // 8 bytes
	err := s.Commit(store.Put("a", []byte("k2"), []byte("v2")), store.Delete("a", []byte("k1")),
		store.Put("a", []byte("k3"), []byte("12345678"))) // 8 - 8 + 4 + 10 = 14
	require.ErrorIs(t, err, store.ErrFull)
	got, _ := records(t, s, "a")
	assert.Equal(t, map[string]string{"k1": "123456"}, got, "nothing of a refused group is applied")
	// A group that shrinks the store, or keeps it within the bound, passes.
	require.NoError(t, s.Commit(store.Delete("a", []byte("k1")), store.Put("a", []byte("k2"), []byte("12345678"))))
	assert.Equal(t, int64(10), s.Size())
	require.NoError(t, s.Commit(store.Put("a", []byte("k2"), []byte("1"))))
	assert.Equal(t, int64(3), s.Size())
}

func testSubmitNeverFull(t *testing.T, open Open) {
	s := open(t, 4)
	defer closeStore(t, s)
	require.NoError(t, s.Submit(store.Put("a", []byte("k1"), []byte("a long value"))))
	require.ErrorIs(t, s.Commit(store.Put("a", []byte("k2"), []byte("v"))), store.ErrFull)
	got, _ := records(t, s, "a")
	assert.Equal(t, map[string]string{"k1": "a long value"}, got)
}

func testSubmitOrder(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	for i := range 100 {
		require.NoError(t, s.Submit(store.Put("a", []byte("k"), fmt.Appendf(nil, "%d", i))))
	}
	require.NoError(t, s.Submit(store.Put("a", []byte("gone"), []byte("x"))))
	require.NoError(t, s.Submit(store.Delete("a", []byte("gone"))))
	require.NoError(t, s.Commit()) // an empty group: returns once everything before it is written
	got, _ := records(t, s, "a")
	assert.Equal(t, map[string]string{"k": "99"}, got)
}

func testInvalidOps(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	long := make([]byte, store.MaxBucketName+1)
	for i := range long {
		long[i] = 'b'
	}
	for _, op := range []store.Op{
		store.Put("", []byte("k"), []byte("v")),
		store.Put("a", nil, []byte("v")),
		store.Delete("a", []byte{}),
		store.Put(string(long), []byte("k"), []byte("v")),
	} {
		require.ErrorIs(t, s.Commit(op), store.ErrInvalidOp)
		require.ErrorIs(t, s.Submit(op), store.ErrInvalidOp)
	}
	require.NoError(t, s.Commit(store.Put(string(long[:store.MaxBucketName]), []byte("k"), []byte("v"))))
}

func testScanError(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	require.NoError(t, s.Commit(store.Put("a", []byte("1"), nil), store.Put("a", []byte("2"), nil),
		store.Put("a", []byte("3"), nil)))
	stop := errors.New("stop")
	n := 0
	err := s.Scan("a", func(k, v []byte) error {
		n++
		if string(k) == "2" {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	assert.Equal(t, 2, n)
}

func testCopiesValues(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	k, v := []byte("key"), []byte("value")
	require.NoError(t, s.Commit(store.Put("a", k, v)))
	k[0], v[0] = 'X', 'X'
	got, _ := records(t, s, "a")
	assert.Equal(t, map[string]string{"key": "value"}, got)
}

func testConcurrent(t *testing.T, open Open) {
	s := open(t, 0)
	defer closeStore(t, s)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				k := fmt.Appendf(nil, "%02d-%03d", w, i)
				errs <- s.Commit(store.Put("a", k, k))
				if i%2 == 1 {
					errs <- s.Submit(store.Delete("a", k))
				}
			}
		})
	}
	wg.Go(func() { // scans run beside the writers
		for range 20 {
			errs <- s.Scan("a", func(k, v []byte) error {
				if string(k) != string(v) {
					return fmt.Errorf("record %q holds %q", k, v)
				}
				return nil
			})
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, s.Commit())
	got, _ := records(t, s, "a")
	assert.Len(t, got, writers*each/2)
	assert.Equal(t, int64(writers*each/2*12), s.Size())
}

func testClosed(t *testing.T, open Open) {
	s := open(t, 0)
	require.NoError(t, s.Submit(store.Put("a", []byte("k"), []byte("v"))))
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Close(), store.ErrClosed)
	require.ErrorIs(t, s.Commit(store.Put("a", []byte("k"), []byte("v"))), store.ErrClosed)
	require.ErrorIs(t, s.Submit(store.Put("a", []byte("k"), []byte("v"))), store.ErrClosed)
	require.ErrorIs(t, s.Scan("a", func(k, v []byte) error { return nil }), store.ErrClosed)
}
