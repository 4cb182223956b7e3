// Package testutil holds small helpers shared by the project's tests.
package testutil

import (
	"bytes"
	"reflect"
	"sync"
	"syscall"
	"time"
)

// SyncBuffer is a bytes.Buffer that is safe for concurrent writers (a
// logger, a subprocess's output) while a test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p. It does not fail.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Malformed returns the inputs a decoder's malformed-input tests feed it:
// every proper prefix of s, and s with each byte in turn replaced by each
// byte of with. Each input is a fresh slice.
func Malformed(s string, with string) [][]byte {
	var out [][]byte
	for n := range len(s) {
		out = append(out, []byte(s[:n]))
	}
	for n := range len(s) {
		for i := range len(with) {
			b := []byte(s)
			b[n] = with[i]
			out = append(out, b)
		}
	}
	return out
}

// Exported returns a copy of *p with only its exported fields set, so that
// values can be compared without their unexported caches.
func Exported[T any](p *T) T {
	var out T
	src, dst := reflect.ValueOf(p).Elem(), reflect.ValueOf(&out).Elem()
	for i := range src.NumField() {
		if src.Type().Field(i).IsExported() {
			dst.Field(i).Set(src.Field(i))
		}
	}
	return out
}

// CPUTime returns the CPU time (user and system) this process has used so
// far, or 0 if the system cannot tell. Benchmarks report CPU per message
// from two readings: on a shared machine it varies less than wall time.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
