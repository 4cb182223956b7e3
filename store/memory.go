package store

import (
	"fmt"
	"slices"
	"sync"
)

// Memory is a Store in memory: what it holds is gone with the process. It
// commits at once, so its policy is moot. It is safe for concurrent use.
type Memory struct {
	max int64

	mu      sync.Mutex
	buckets map[string]map[string][]byte
	size    int64
	closed  bool
}

// NewMemory returns an empty store of at most maxBytes bytes of keys and
// values (0 or less: no bound).
func NewMemory(maxBytes int64) *Memory {
	return &Memory{max: maxBytes, buckets: map[string]map[string][]byte{}}
}

var _ Store = (*Memory)(nil)

// Commit applies ops atomically; see Store.
func (m *Memory) Commit(ops ...Op) error { return m.apply(ops, true) }

// Submit applies ops atomically at once; see Store.
func (m *Memory) Submit(ops ...Op) error { return m.apply(ops, false) }

func (m *Memory) apply(ops []Op, bounded bool) error {
	if err := validate(ops); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if bounded && m.max > 0 {
		if grown := m.size + m.delta(ops); grown > m.max && grown > m.size {
			return fmt.Errorf("%w: %d bytes held, %d more would pass the bound of %d", ErrFull, m.size,
				grown-m.size, m.max)
		}
	}
	for _, op := range ops {
		b := m.buckets[op.Bucket]
		old, had := b[string(op.Key)]
		if had {
			m.size -= int64(len(op.Key) + len(old))
		}
		if op.Value == nil {
			delete(b, string(op.Key))
			continue
		}
		if b == nil {
			b = map[string][]byte{}
			m.buckets[op.Bucket] = b
		}
		b[string(op.Key)] = slices.Clone(op.Value)
		m.size += op.size()
	}
	return nil
}

// delta is how much ops would grow the store (negative: shrink). m.mu is
// held. Several ops on one key count as they apply in order.
func (m *Memory) delta(ops []Op) int64 {
	var d int64
	seen := map[string]int64{} // bucket+key -> size after the ops so far (-1: absent)
	for _, op := range ops {
		k := op.Bucket + "\x00" + string(op.Key)
		cur, ok := seen[k]
		if !ok {
			cur = -1
			if v, had := m.buckets[op.Bucket][string(op.Key)]; had {
				cur = int64(len(op.Key) + len(v))
			}
		}
		next := int64(-1)
		if op.Value != nil {
			next = op.size()
		}
		d += max(next, 0) - max(cur, 0)
		seen[k] = next
	}
	return d
}

// Scan calls fn with bucket's records in key order; see Store.
func (m *Memory) Scan(bucket string, fn func(key, value []byte) error) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	b := m.buckets[bucket]
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	vals := make([][]byte, len(keys))
	slices.Sort(keys)
	for i, k := range keys {
		vals[i] = b[k] // values are never modified in place, only replaced
	}
	m.mu.Unlock()
	for i, k := range keys {
		if err := fn([]byte(k), vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// Size returns the bytes held.
func (m *Memory) Size() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}

// Close closes the store and drops its records.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	m.buckets = nil
	return nil
}
