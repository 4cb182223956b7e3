// Package agentbus is an in-process message bus for cooperating AI agents,
// built on protoactor-go. Every agent is an actor with a bounded,
// priority-ordered mailbox; messages are delivered in order of importance,
// never silently lost, and observable when something goes wrong.
//
// # Agents
//
// An agent is a named Handler spawned on a Bus:
//
//	bus, err := agentbus.New(agentbus.Config{})
//	pid, err := bus.Spawn("planner", agentbus.HandlerFunc(plan))
//	defer bus.Shutdown(ctx)
//
// The handler runs one message at a time. Its ctx identifies the agent: pass
// it to Send, Request and Reply from inside the handler and the bus stamps the
// sender and applies the in-handler backpressure rule (see below). The
// returned *actor.PID is a real protoactor PID: protoactor code can Send and
// RequestFuture to it and gets the same priority order, bounds and answers.
//
// # Messages
//
// A Message carries a type, sender, recipient or topic, a JSON payload, a
// priority from 0 to 100 (default 50), an optional TTL and an ID that sorts by
// time (UUIDv7). Build one with NewMessage and its With methods. Once sent, a
// message belongs to the bus and must not be modified.
//
// # Priority and bounds
//
// Higher priorities are delivered first, equal priorities in the order they
// were sent. System messages (start, stop, supervision) bypass user messages.
// Each mailbox holds at most Config.MailboxSize messages (per agent with
// WithMailboxSize) and all mailboxes together at most
// Config.Backpressure.MaxPending. A sender that finds no room waits, parked
// until room frees, up to Backpressure.Timeout, then gets
// ErrBackpressureTimeout and keeps its message. A handler never waits longer
// than Backpressure.WaitDuration: agents that send to each other could
// otherwise deadlock, so its message is dead-lettered as mailbox_full instead.
//
// # Request and response
//
// Request sends a request and waits for the response, which the recipient
// gives with Reply or by sending a TypeResponse message with the same
// RequestID. A response that comes after the timeout, or to no known request,
// is dead-lettered. A request that fails in its recipient (error, panic,
// expiry, stop) fails the caller at once instead of timing out, and a request
// that would close a cycle of handlers waiting on each other is refused with
// ErrRequestCycle.
//
// # Topics and routing
//
// Subscribe subscribes an agent to a subject or a NATS-style pattern
// ("agents.*.done", "events.>"); Publish (or Send of a TypePublish message)
// hands the message to the topic's actor, which fans it out to the
// subscribers without waiting on any of them. Router holds named handlers and
// prioritized rules; every accepted message is also offered to the handlers
// whose rules match it.
//
// # Supervision and events
//
// WithSupervisor chooses how an agent's failures are handled (see package
// supervisor): restart within limits, restart with exponential backoff,
// resume, stop or escalate, optionally per failure through a Decider. Events
// and Watch deliver lifecycle changes, supervision decisions and dead letters
// through bounded subscriptions that never slow the bus.
//
// # Nothing is lost
//
// Everything the bus accepted is either handled or recorded in the
// dead-letter queue (DeadLetters) with a reason: expired, mailbox_full,
// agent_stopped, handler_error, handler_panic, late_response, orphan_response,
// shutdown and more. What the bus refuses (invalid, oversized, expired before
// sending, unknown recipient, backpressure timeout) is returned to the caller
// as an error and stays the caller's. A message sent with RequireAck is
// redelivered after a failed attempt, with exponential backoff, until it is
// handled or its attempts run out. Accounting proves the sum: every accepted
// delivery is handled, dead-lettered or retried. Replay sends a dead letter
// again.
//
// # Errors
//
// Every error wraps one of the sentinel errors of this package (ErrClosed,
// ErrNoRecipient, ErrBackpressureTimeout, …); test them with errors.Is.
package agentbus
