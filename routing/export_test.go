package routing

import "github.com/descartes/agentbus/actors"

// MatchScan is Match without the index: it tests every enabled rule in order.
func (t *Table) MatchScan(m *actors.Message, dst []*Rule) []*Rule { return t.match(m, dst, false) }

// MatchIndex is Match with the index, however few the rules.
func (t *Table) MatchIndex(m *actors.Message, dst []*Rule) []*Rule { return t.match(m, dst, true) }
