package agentbus

import (
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// askerMemory bounds the protoactor requesters remembered.
const askerMemory = 4096

// recent is a bounded map from IDs to values that forgets the oldest first;
// it is safe for concurrent use. It remembers timed-out request IDs (so a
// late response is told from an orphan) and the protoactor requesters of
// messages agents are handling (so a Response sent through Send reaches
// them): past its size, the oldest entry is forgotten. Nothing reads an
// entry without removing it, so the least recently used is the oldest.
type recent[V any] struct {
	mu  sync.Mutex // so that take finds and removes in one step
	lru *simplelru.LRU[string, V]
}

func newRecent[V any](n int) *recent[V] {
	l, err := simplelru.NewLRU[string, V](n, nil)
	if err != nil { // n < 1: the bus's own constants never are
		panic(err)
	}
	return &recent[V]{lru: l}
}

func (r *recent[V]) add(id string, v V) {
	r.mu.Lock()
	r.lru.Add(id, v)
	r.mu.Unlock()
}

func (r *recent[V]) contains(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lru.Contains(id)
}

// take removes and returns the value of id, if remembered.
func (r *recent[V]) take(id string) (V, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.lru.Peek(id)
	if ok {
		r.lru.Remove(id)
	}
	return v, ok
}
