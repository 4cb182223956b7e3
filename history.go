package agentbus

import (
	"sync"
	"sync/atomic"
	"time"
)

// throttle allows at most n events per interval; it counts what it refuses.
type throttle struct {
	n        int64
	interval int64 // nanoseconds
	window   atomic.Int64
	count    atomic.Int64
}

const deadLetterWarnings = 10 // dead-letter log lines per second, at most

func newThrottle(n int, interval time.Duration) *throttle {
	return &throttle{n: int64(n), interval: int64(interval)}
}

func (t *throttle) allow() bool {
	now := time.Now().UnixNano()
	w := t.window.Load()
	if now-w >= t.interval && t.window.CompareAndSwap(w, now) {
		t.count.Store(0)
	}
	return t.count.Add(1) <= t.n
}

// history is the bounded ring of accepted messages behind Bus.History. It
// holds references to the messages, not copies: the bus owns a message once
// it is sent and nobody modifies it afterwards, so a reference costs one
// pointer where a copy would cost the message and its payload again.
type history struct {
	mu   sync.Mutex
	ring []*Message
	next int
	full bool
}

func newHistory(n int) *history { return &history{ring: make([]*Message, n)} }

func (h *history) add(m *Message) {
	h.mu.Lock()
	h.ring[h.next] = m
	h.next++
	if h.next == len(h.ring) {
		h.next, h.full = 0, true
	}
	h.mu.Unlock()
}

// newest returns up to limit messages, newest first; limit <= 0 means all.
func (h *history) newest(limit int) []*Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.next
	if h.full {
		n = len(h.ring)
	}
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]*Message, 0, limit)
	for i := 1; i <= limit; i++ {
		out = append(out, h.ring[(h.next-i+len(h.ring))%len(h.ring)])
	}
	return out
}

// History returns up to limit of the most recently accepted messages, newest
// first (limit <= 0: all that are held, at most Config.MaxHistorySize). It
// returns nil unless Config.EnableHistory is set. The messages are the bus's
// own: treat them as read-only.
func (b *Bus) History(limit int) []*Message {
	if b.history == nil {
		return nil
	}
	return b.history.newest(limit)
}
