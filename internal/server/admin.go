package server

import (
	"fmt"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/protocol"
)

// deadLetter answers dead_letter: the one letter seq, in a dead_letters
// frame, or unknown_letter if the queue no longer holds it.
func (c *conn) deadLetter(f *protocol.Frame) error {
	if f.Seq == 0 {
		return fmt.Errorf("%w: dead_letter needs seq", protocol.ErrInvalidFrame)
	}
	l, ok := c.s.bus.DeadLetters().Get(f.Seq)
	if !ok {
		return fmt.Errorf("%w: %d", agentbus.ErrUnknownLetter, f.Seq)
	}
	c.answer(&protocol.Frame{Op: protocol.OpDeadLetters, ID: f.ID, Letters: []protocol.Letter{protocol.FromLetter(l)}})
	return nil
}

// purgeDeadLetters answers purge_dead_letters: it empties the dead-letter
// queue (its counts by reason are kept) and says how many letters went.
func (c *conn) purgeDeadLetters(f *protocol.Frame) error {
	n := c.s.bus.PurgeDeadLetters() // from the durable store too
	c.log.Info("dead letters purged", "letters", n, "client", c.client)
	c.answer(&protocol.Frame{Op: protocol.OpOK, ID: f.ID, N: n})
	return nil
}

// subscribers answers subscribers: how many agents a publish on the topic
// reaches now (for a pattern: how many subscribed with exactly it).
func (c *conn) subscribers(f *protocol.Frame) error {
	if f.Topic == "" {
		return fmt.Errorf("%w: subscribers needs a topic", protocol.ErrInvalidFrame)
	}
	c.answer(&protocol.Frame{Op: protocol.OpOK, ID: f.ID, N: len(c.s.bus.Subscribers(f.Topic))})
	return nil
}

// abandoned frees the remote agent, on any connection, whose delivery of
// request requestID waits for its response, once the requester has given
// up on it (its timeout passed, or its connection closed): like an
// in-process handler that finishes after its requester timed out, the
// delivery counts as handled, and a response that comes later is
// dead-lettered as late_response by the bus. Without this, the agent would
// stay busy until the ack timeout, and a shutdown would wait for it.
func (s *Server) abandoned(requestID string) {
	if requestID == "" {
		return
	}
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		if c.settle("", func(w *waiting) bool { return w.respond && w.id == requestID }, nil) {
			c.log.Debug("request abandoned by its requester; agent free again", "request_id", requestID)
			return
		}
	}
}
