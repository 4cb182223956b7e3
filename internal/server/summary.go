package server

import (
	"sync"
	"time"
)

// DefaultSummaryInterval is Config.SummaryInterval's default.
const DefaultSummaryInterval = 10 * time.Second

// summary logs the server's clients at Info when they change: one line
// with the connections and agents open now and how many connections came
// and went since the line before. Each connection's own lines (connected,
// hello, registered, disconnected) are at Debug, so that a stream of short
// CLI calls costs the log one line per interval rather than several per
// call.
//
// A change schedules the line for a moment later (so that a client's
// connect, hello and registrations make one line), and at most one line is
// logged per Config.SummaryInterval.
//
// Lock order: summary.mu, then Server.mu, then conn.mu.
type summary struct {
	mu        sync.Mutex
	last      time.Time   // when the last line was logged
	timer     *time.Timer // the line scheduled, if any
	came      int         // connections opened since the last line
	went      int         // connections closed since the last line
	dirty     bool        // something changed since the last line
	closed    bool        // Close has flushed: no more lines
	scheduled sync.WaitGroup
}

// summarySettle is how long a change waits for the ones that usually
// follow it (a connection's registrations) before its line is logged.
const summarySettle = 200 * time.Millisecond

// changed records a change of the server's clients: delta is +1 for a
// connection opened, -1 for one closed, 0 for an agent registered or
// unregistered. It does not block.
func (s *Server) changed(delta int) {
	m := &s.sum
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case delta > 0:
		m.came++
	case delta < 0:
		m.went++
	}
	m.dirty = true
	if m.closed || m.timer != nil {
		return
	}
	wait := max(min(summarySettle, s.cfg.SummaryInterval), time.Until(m.last.Add(s.cfg.SummaryInterval)))
	m.scheduled.Add(1)
	m.timer = time.AfterFunc(wait, func() {
		defer m.scheduled.Done()
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.timer == nil { // flushed by Close meanwhile
			return
		}
		m.timer = nil
		s.logSummary()
	})
}

// logSummary logs the summary line, if anything changed since the last
// one. Its caller holds sum.mu.
func (s *Server) logSummary() {
	m := &s.sum
	if !m.dirty {
		return
	}
	conns, agents := s.census()
	s.log.Info("clients", "connections", conns, "agents", agents, "connected", m.came, "disconnected", m.went)
	m.came, m.went, m.dirty = 0, 0, false
	m.last = time.Now()
}

// census returns how many connections are open and how many agents they
// have registered.
func (s *Server) census() (conns, agents int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		agents += len(c.agents)
		c.mu.Unlock()
	}
	return len(s.conns), agents
}

// flushSummary logs what changed since the last line now, cancels the
// line scheduled, waits for one being logged, and ends the summaries.
func (s *Server) flushSummary() {
	m := &s.sum
	m.mu.Lock()
	if m.timer != nil && m.timer.Stop() {
		m.scheduled.Done() // it will never run
	}
	m.timer = nil
	if !m.closed {
		s.logSummary()
	}
	m.closed = true
	m.mu.Unlock()
	m.scheduled.Wait()
}
