package store_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/descartes/agentbus/store"
)

// Records go in atomic groups; Scan reads a bucket in key order.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "agentbus-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "data"), store.Options{Policy: store.Batch, MaxBytes: 1 << 20})
	if err != nil {
		panic(err)
	}
	// Commit returns once the group is fsync'd (with whatever else was
	// committed at the same time).
	if err := st.Commit(store.Put("jobs", []byte("2"), []byte("review")), store.Put("jobs", []byte("1"), []byte("build"))); err != nil {
		panic(err)
	}
	_ = st.Submit(store.Delete("jobs", []byte("2"))) // queued, written with the next group
	if err := st.Close(); err != nil {
		panic(err)
	}

	st, err = store.Open(filepath.Join(dir, "data"), store.Options{})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	_ = st.Scan("jobs", func(k, v []byte) error {
		fmt.Printf("%s=%s\n", k, v)
		return nil
	})
	fmt.Println(st.Size(), "bytes")
	// Output:
	// 1=build
	// 6 bytes
}

// A full store refuses a Commit and applies none of it.
func ExampleNewMemory() {
	st := store.NewMemory(8)
	fmt.Println(st.Commit(store.Put("b", []byte("k"), []byte("1234567"))))
	fmt.Println(st.Commit(store.Put("b", []byte("k2"), []byte("x"))) != nil)
	// Output:
	// <nil>
	// true
}
