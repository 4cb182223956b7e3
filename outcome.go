package agentbus

import (
	"context"
	"fmt"

	"github.com/descartes/agentbus/deadletter"
)

// OutcomeKind says what happened to a message or to one of its deliveries
// (the message bound for one destination: an agent, a topic actor, the
// router or a routing handler).
type OutcomeKind uint8

// The outcome kinds. A message Send accepts is reported Accepted once; each
// of its deliveries ends exactly once, Handled or DeadLettered, after any
// number of Failed attempts (each followed by Retried when the message
// requires an ack and has attempts left). A message Send refuses is reported
// Refused and nothing else.
const (
	// OutcomeAccepted: Send (Publish, Request, Reply, Replay) took the
	// message on and returns its ID. Reported once per message, whatever
	// its fan-out, on the sender's goroutine once the message is queued:
	// its delivery may already be handled, on the agent's goroutine, by
	// then, so observers must not rely on the order of the two.
	OutcomeAccepted OutcomeKind = iota + 1
	// OutcomeRefused: Send returned an error without accepting the
	// message; Err is that error. Message may be nil (a nil message).
	OutcomeRefused
	// OutcomeHandled: a delivery completed: its handler returned nil
	// (Queued), or it completed at once without being queued (a response
	// that completes a Request, a subscription change, an ack).
	OutcomeHandled
	// OutcomeFailed: a handler returned an error or panicked on a
	// delivery; Err is the error (a *HandlerPanicError for a panic). A
	// Retried or a DeadLettered outcome of the same delivery follows.
	OutcomeFailed
	// OutcomeRetried: a failed delivery of a message that requires an ack
	// was queued again (Attempts says how often it was tried).
	OutcomeRetried
	// OutcomeDeadLettered: a delivery went to the dead-letter queue;
	// Letter has it (with its Seq once stored) and Err says why.
	OutcomeDeadLettered

	numOutcomeKinds
)

// String returns the kind's name, such as "dead_lettered".
func (k OutcomeKind) String() string {
	switch k {
	case OutcomeAccepted:
		return "accepted"
	case OutcomeRefused:
		return "refused"
	case OutcomeHandled:
		return "handled"
	case OutcomeFailed:
		return "failed"
	case OutcomeRetried:
		return "retried"
	case OutcomeDeadLettered:
		return "dead_lettered"
	}
	return fmt.Sprintf("OutcomeKind(%d)", uint8(k))
}

// Outcome is one thing that happened to a message, as the bus reports it to
// its observers (see Observer).
type Outcome struct {
	Kind OutcomeKind
	// Message is the message; nil for a Refused nil message, and for a
	// dead letter that holds a value other than a *Message (Letter.Value).
	// It is the bus's: observers must not modify it.
	Message *Message
	// Dest is where the delivery was bound: an agent's name, "topic " and
	// the subject for a topic actor, "$router", or a routing handler's
	// name. Empty for Accepted and Refused.
	Dest string
	// Err says why, for Refused, Failed and DeadLettered (and may be nil
	// for a dead letter whose Letter.Err says it).
	Err error
	// Letter is the dead letter, for DeadLettered: once the dead-letter
	// queue has stored it, it carries its Seq and Time.
	Letter *deadletter.Letter
	// Queued says, for Handled and DeadLettered, that the delivery had
	// been queued in a mailbox (which counts it); otherwise it ended at
	// once, without being queued.
	Queued bool
	// Tap marks a copy for the router or a routing handler, beside the
	// message's own delivery: its end says nothing about the message's
	// delivery to its recipient.
	Tap bool
	// Foreign marks a dead letter that is not a delivery of the bus: a
	// protoactor send to a PID that no longer exists, or a value sent to
	// the dead-letter actor. It is stored and announced but not counted
	// in Accounting.
	Foreign bool
}

// Observer is told the outcome of messages and deliveries (see
// OutcomeKind). Observers given in Config.Observers are called after the
// bus's own (statistics, the accounting ledger, the dead-letter queue,
// events, history, the router), in order, synchronously on the goroutine
// where the outcome happens: a sender's for Accepted, Refused and outcomes
// that end at once, an agent's for Handled and Failed, a timer's for some
// redeliveries. Observe must therefore be quick, must not block or panic,
// must be safe for concurrent use, and must not modify the message; it may
// call the bus (a Send from Observe is reported in turn).
type Observer interface {
	Observe(o Outcome)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(o Outcome)

// Observe calls f(o).
func (f ObserverFunc) Observe(o Outcome) { f(o) }

// Stamper prepares each message that Send (Publish, Request, Reply) is about
// to accept: it is called on the sender's goroutine, with the sender's ctx (a
// handler's ctx inside handlers), after the bus has stamped the message's ID,
// Timestamp, Sender and inherited trace context, and before it validates it.
// It is where a tracer starts its producer span and puts its context in
// Metadata. It may change the message's Metadata (give it a new map: the
// message's may be shared with the one it was cloned from), not its ID, type
// or addresses; a change that makes the message invalid gets it refused. It
// must be quick, must not block, and must be safe for concurrent use.
// Redeliveries and replays of a message already accepted are not stamped
// again.
type Stamper interface {
	Stamp(ctx context.Context, msg *Message)
}

// StamperFunc adapts a function to Stamper.
type StamperFunc func(ctx context.Context, msg *Message)

// Stamp calls f(ctx, msg).
func (f StamperFunc) Stamp(ctx context.Context, msg *Message) { f(ctx, msg) }

// observers are the observers of each outcome kind, in the order they are
// told. They are set at New and never change, so report reads them without
// a lock.
type observers [numOutcomeKinds][]Observer

// add registers o for kinds (every kind if none is given).
func (s *observers) add(o Observer, kinds ...OutcomeKind) {
	if len(kinds) == 0 {
		for k := OutcomeAccepted; k < numOutcomeKinds; k++ {
			s[k] = append(s[k], o)
		}
		return
	}
	for _, k := range kinds {
		s[k] = append(s[k], o)
	}
}

// observe registers the bus's own observers, then the user's. What happens
// for each kind of outcome is read here, in order:
//
//   - Accepted: statistics count it (by type, sender, topic); history
//     records it, if enabled; the router offers it to its rules, if any is
//     enabled (a copy it cannot queue is dead-lettered for "$router").
//   - Refused: statistics count it by kind of error.
//   - Handled, Retried: the ledger counts deliveries that ended without being
//     queued, and failed attempts queued again (a queued delivery is counted
//     by its mailbox and agent, which the ledger reads).
//   - DeadLettered: the ledger counts it; the dead-letter queue stores it;
//     it is logged (throttled); events announce it; a Request whose request
//     it was fails at once.
//   - Failed: told to the user's observers only (agents count failures).
//   - Handled, Retried, DeadLettered of durable agents' deliveries: the
//     durable store deletes, rewrites or dead-letters their records
//     (durable.go).
func (b *Bus) observe(user []Observer) {
	o := &b.observers
	o.add(&b.stats, OutcomeAccepted, OutcomeRefused)
	if b.history != nil {
		o.add(b.history, OutcomeAccepted)
	}
	o.add(routerTap{b}, OutcomeAccepted)
	o.add(&b.ledger, OutcomeHandled, OutcomeRetried, OutcomeDeadLettered)
	o.add(newDLQStore(b.dlq, b.log), OutcomeDeadLettered)
	o.add(&b.events, OutcomeDeadLettered)
	o.add(requestFailer{b}, OutcomeDeadLettered)
	o.add(b.durable, OutcomeHandled, OutcomeRetried, OutcomeDeadLettered)
	if b.cfg.Cluster != nil {
		o.add(clusterObserver{b}, OutcomeDeadLettered)
	}
	for _, u := range user {
		o.add(u)
	}
	b.reportHandled = len(user) > 0
}

// report tells every observer of o.Kind about o.
func (b *Bus) report(o Outcome) {
	for _, ob := range b.observers[o.Kind] {
		ob.Observe(o)
	}
}

// deadLetter reports o, whose Letter is set, as DeadLettered: its Message
// and Dest are the letter's.
func (b *Bus) deadLetter(o Outcome) {
	o.Kind, o.Message, o.Dest = OutcomeDeadLettered, o.Letter.Message, o.Letter.Agent
	b.report(o)
}

// completed reports msg accepted and its one delivery, to dest, handled at
// once.
func (b *Bus) completed(msg *Message, dest string) {
	b.report(Outcome{Kind: OutcomeAccepted, Message: msg})
	b.report(Outcome{Kind: OutcomeHandled, Message: msg, Dest: dest})
}

// refused reports msg refused with err, and returns err.
func (b *Bus) refused(msg *Message, err error) error {
	b.report(Outcome{Kind: OutcomeRefused, Message: msg, Err: err})
	return err
}
