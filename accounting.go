package agentbus

import (
	"sync/atomic"

	"github.com/descartes/agentbus/actors"
)

// Accounting is the bus's ledger of deliveries. A delivery is one message
// bound for one destination: an agent, a topic actor, the router or a routing
// handler. Every delivery the bus accepts ends either handled (by a handler
// that returned nil, by a topic actor that fanned it out, by the router that
// matched it, or by completing a Request) or dead-lettered with a reason, so
// Accepted == Handled + DeadLettered + Retried + InFlight (see Balanced).
//
// A failed delivery of a message that requires an ack ends as Retried when
// its redelivery is scheduled; the redelivery is a delivery of its own,
// accepted once it is queued. While it waits for its timer it is counted in
// Scheduled, not in the identity: nothing is lost then, since it either
// becomes a delivery or is dead-lettered (shutdown, its agent gone) or
// cancelled by an ack. The bus is idle when InFlight and Scheduled are both
// zero (see Idle).
//
// Dead letters that come from outside the bus (protoactor sends to stopped
// PIDs, letters sent to the dead-letter actor) are not deliveries and are not
// counted here.
type Accounting struct {
	Accepted     uint64 `json:"accepted"`      // deliveries the bus took on
	Handled      uint64 `json:"handled"`       // deliveries that completed
	DeadLettered uint64 `json:"dead_lettered"` // deliveries that went to the dead-letter queue
	Retried      uint64 `json:"retried"`       // failed deliveries of RequiresAck messages whose redelivery was scheduled
	InFlight     int    `json:"in_flight"`     // deliveries queued in a mailbox, or being handled, right now
	Scheduled    int    `json:"scheduled"`     // redeliveries waiting for their timer, not yet accepted
}

// Balanced reports whether every accepted delivery is accounted for:
// Accepted == Handled + DeadLettered + Retried + InFlight.
func (a Accounting) Balanced() bool {
	return a.Accepted == a.Handled+a.DeadLettered+a.Retried+uint64(a.InFlight)
}

// Idle reports whether nothing is queued and no redelivery is scheduled.
func (a Accounting) Idle() bool { return a.InFlight == 0 && a.Scheduled == 0 }

// ledger holds the counts that are not kept by a live mailbox or agent:
// deliveries accepted and finished without queueing, and the counts of
// mailboxes whose agent or topic actor has stopped. It observes the outcomes
// that change them.
type ledger struct {
	accepted atomic.Uint64
	handled  atomic.Uint64
	dead     atomic.Uint64
	retried  atomic.Uint64
}

// Observe counts a delivery that ended without being queued (a queued one
// was counted by its mailbox, and its end by its agent or topic actor,
// except a dead letter, which is counted here), and failed attempts that
// were scheduled again.
func (l *ledger) Observe(o Outcome) {
	if o.Foreign {
		return
	}
	switch o.Kind {
	case OutcomeHandled:
		if !o.Queued {
			l.accepted.Add(1)
			l.handled.Add(1)
		}
	case OutcomeRetried:
		l.retried.Add(1)
	case OutcomeDeadLettered:
		if !o.Queued {
			l.accepted.Add(1)
		}
		l.dead.Add(1)
	}
}

// Accounting returns the ledger. Counters of live agents are read one after
// another without a global lock, so while messages move (from a mailbox to
// a handler, from a handler to the dead-letter queue) the sum can be off by
// the few moving at that instant; otherwise, whether the bus is idle, holds
// queued messages, runs long handlers or waits to redeliver, it balances. It
// does not block.
func (b *Bus) Accounting() Accounting { return b.accounting(b.snapshot(), nil) }

// agentCounts are the counters of one agent that the ledger reads.
type agentCounts struct {
	posted, handled uint64
	queued          int
}

// accounting computes the ledger over the running agents given and the
// router's handlers, calling each, if set, with every one of them (handler
// true for a routing handler) and the counters it read.
func (b *Bus) accounting(agents []*actors.Agent, each func(ag *actors.Agent, handler bool, c agentCounts)) Accounting {
	a := Accounting{
		Accepted:     b.ledger.accepted.Load(),
		Handled:      b.ledger.handled.Load(),
		DeadLettered: b.ledger.dead.Load(),
		Retried:      b.ledger.retried.Load(),
		Scheduled:    b.PendingRetries(),
	}
	addAgent := func(ag *actors.Agent, handler bool) {
		c := agentCounts{posted: ag.Mailbox().Posted(), handled: ag.Handled(), queued: ag.Mailbox().Len()}
		a.Accepted += c.posted
		a.Handled += c.handled
		a.InFlight += c.queued
		if ag.Current() != nil { // taken from its mailbox, not yet handled
			a.InFlight++
		}
		if each != nil {
			each(ag, handler, c)
		}
	}
	for _, ag := range agents {
		addAgent(ag, false)
	}
	b.spawnMu.Lock()
	for _, ag := range b.handlers {
		addAgent(ag, true)
	}
	b.spawnMu.Unlock()
	// Publishers take topicsMu: hold it only to copy the list.
	b.topicsMu.Lock()
	refs := make([]*topicRef, 0, len(b.topicRefs))
	for _, t := range b.topicRefs {
		refs = append(refs, t)
	}
	b.topicsMu.Unlock()
	for _, t := range refs {
		a.Accepted += t.mb.Posted()
		a.Handled += t.mb.Delivered()
		a.InFlight += t.mb.Len()
	}
	rm := b.router.Mailbox()
	a.Accepted += rm.Posted()
	a.Handled += rm.Delivered()
	a.InFlight += rm.Len()
	b.clusterAccounting(&a)
	return a
}

// retire folds the counters of a stopped agent into the ledger.
func (b *Bus) retire(a *actors.Agent) {
	b.ledger.accepted.Add(a.Mailbox().Posted())
	b.ledger.handled.Add(a.Handled())
	b.stats.retire(a)
}
