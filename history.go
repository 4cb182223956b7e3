package agentbus

import (
	"sync"
	"time"

	"github.com/descartes/agentbus/topics"
)

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

// Observe records an accepted message.
func (h *history) Observe(o Outcome) { h.add(o.Message) }

func (h *history) add(m *Message) {
	h.mu.Lock()
	h.ring[h.next] = m
	h.next++
	if h.next == len(h.ring) {
		h.next, h.full = 0, true
	}
	h.mu.Unlock()
}

// HistoryQuery selects messages from the history. Zero fields match
// everything; Topic may be a wildcard pattern.
type HistoryQuery struct {
	Sender    string
	Recipient string
	Topic     string      // a subject or a pattern such as "agents.>"
	Type      MessageType // 0: any
	Since     time.Time   // accepted at or after (by Timestamp)
	Until     time.Time   // accepted before (by Timestamp); zero: no end
	Limit     int         // at most this many, newest first; <= 0 or above the ring size: all held
}

func (q *HistoryQuery) match(m *Message) bool {
	switch {
	case q.Sender != "" && m.Sender != q.Sender,
		q.Recipient != "" && m.Recipient != q.Recipient,
		q.Type != 0 && m.Type != q.Type,
		!q.Since.IsZero() && m.Timestamp.Before(q.Since),
		!q.Until.IsZero() && !m.Timestamp.Before(q.Until):
		return false
	case q.Topic == "":
		return true
	case topics.IsPattern(q.Topic):
		return m.Topic != "" && topics.Match(q.Topic, m.Topic)
	default:
		return m.Topic == q.Topic
	}
}

// query returns the messages matching q, newest first.
func (h *history) query(q HistoryQuery) []*Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.next
	if h.full {
		n = len(h.ring)
	}
	limit := q.Limit
	if limit <= 0 || limit > n {
		limit = n
	}
	var out []*Message
	for i := 1; i <= n && len(out) < limit; i++ {
		if m := h.ring[(h.next-i+len(h.ring))%len(h.ring)]; q.match(m) {
			out = append(out, m)
		}
	}
	return out
}

// History returns up to limit of the most recently accepted messages, newest
// first (limit <= 0: all that are held, at most Config.MaxHistorySize). It
// returns nil unless Config.EnableHistory is set. The messages are the bus's
// own: treat them as read-only. It does not block beyond a short lock.
func (b *Bus) History(limit int) []*Message {
	return b.QueryHistory(HistoryQuery{Limit: limit})
}

// QueryHistory returns the accepted messages that match q, newest first. The
// cost is one pass over the ring (Config.MaxHistorySize entries at most),
// under a lock that Send takes only when history is enabled. It returns nil
// unless Config.EnableHistory is set.
func (b *Bus) QueryHistory(q HistoryQuery) []*Message {
	if b.history == nil {
		return nil
	}
	return b.history.query(q)
}
