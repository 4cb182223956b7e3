package otelbus

import (
	"sync"

	"go.opentelemetry.io/otel/trace"
)

// table holds open spans by key, at most max of them. It is safe for
// concurrent use.
type table[K comparable] struct {
	mu    sync.Mutex
	spans map[K]trace.Span
	max   int
}

func (tb *table[K]) init(max int) {
	tb.spans = make(map[K]trace.Span)
	tb.max = max
}

// put holds span under k. It returns the span it replaces, if any, and
// false, holding nothing, when the table is full.
func (tb *table[K]) put(k K, span trace.Span) (prev trace.Span, ok bool) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	prev = tb.spans[k]
	if prev == nil && len(tb.spans) >= tb.max {
		return nil, false
	}
	tb.spans[k] = span
	return prev, true
}

// get returns the span held under k, if any.
func (tb *table[K]) get(k K) (trace.Span, bool) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	s, ok := tb.spans[k]
	return s, ok
}

// take removes and returns the span held under k, if any.
func (tb *table[K]) take(k K) (trace.Span, bool) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	s, ok := tb.spans[k]
	if ok {
		delete(tb.spans, k)
	}
	return s, ok
}

func (tb *table[K]) len() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return len(tb.spans)
}
