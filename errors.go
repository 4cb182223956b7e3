package agentbus

import (
	"errors"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/topics"
)

// Sentinel errors. Every error the bus returns wraps one of these, so callers
// test them with errors.Is. Errors from the leaf packages are re-exported here
// so one import suffices.
var (
	// ErrInvalidMessage: the message failed validation (see Message.Validate).
	ErrInvalidMessage = actors.ErrInvalidMessage
	// ErrMessageTooLarge: the message is larger than Config.MaxMessageSize.
	ErrMessageTooLarge = actors.ErrMessageTooLarge
	// ErrInvalidAgent: a bad agent name, a nil handler or a bad spawn option.
	ErrInvalidAgent = actors.ErrInvalidAgent
	// ErrHandlerPanic: wrapped by HandlerPanicError.
	ErrHandlerPanic = actors.ErrHandlerPanic
	// ErrExpired: the message's TTL had run out.
	ErrExpired = mailbox.ErrExpired
	// ErrMailboxFull: the recipient's mailbox (or the bus's pending limit)
	// had no room.
	ErrMailboxFull = mailbox.ErrFull
	// ErrBackpressureTimeout: the sender waited for room until
	// Backpressure.Timeout or its ctx ran out; the message was not accepted.
	ErrBackpressureTimeout = mailbox.ErrBackpressureTimeout
	// ErrAgentStopped: the agent stopped.
	ErrAgentStopped = mailbox.ErrStopped

	// ErrInvalidSubject: a topic is not a valid subject (or pattern).
	ErrInvalidSubject = topics.ErrInvalidSubject
	// ErrNotSubscribed: an unsubscribe named no existing subscription.
	ErrNotSubscribed = topics.ErrNotSubscribed
	// ErrTooManySubscriptions: Config.MaxSubscriptions is reached.
	ErrTooManySubscriptions = topics.ErrTooManySubscriptions

	// ErrUnknownLetter: Replay named a dead letter the queue no longer holds.
	ErrUnknownLetter = deadletter.ErrUnknownLetter

	// ErrNoRecipient: no agent has the recipient's name.
	ErrNoRecipient = errors.New("agentbus: no such recipient")
	// ErrRequestTimeout: no response arrived within the request timeout.
	ErrRequestTimeout = errors.New("agentbus: request timeout")
	// ErrRequestCycle: the request would close a cycle of handlers that
	// wait on each other's responses, which could only end in a timeout.
	ErrRequestCycle = errors.New("agentbus: request cycle")
	// ErrClosed: the bus is shut down (or shutting down).
	ErrClosed = errors.New("agentbus: bus closed")
	// ErrAgentExists: an agent (or protoactor actor) already has the name.
	ErrAgentExists = errors.New("agentbus: agent exists")
	// ErrInvalidConfig: a Config field has an unusable value.
	ErrInvalidConfig = errors.New("agentbus: invalid config")
	// ErrNotPending: an Ack named a message that has no redelivery pending.
	ErrNotPending = errors.New("agentbus: no redelivery pending")
	// ErrStopping: Stop's ctx ended while the agent's handler was still
	// running. The stop is in effect (the agent takes no new message) and
	// completes when the handler returns.
	ErrStopping = errors.New("agentbus: agent still stopping")
	// ErrDeadLettered: Send accepted the message (it returns its ID) and
	// dead-lettered it at once; the error also wraps the cause, such as
	// ErrMailboxFull. It is returned only inside handlers, whose sends do
	// not wait long for room (see Send).
	ErrDeadLettered = errors.New("agentbus: dead-lettered")
	// ErrShutdown is the reason given to messages still queued when a
	// Shutdown's context ran out; they are dead-lettered with it.
	ErrShutdown = errors.New("agentbus: shut down before delivery")
	// ErrTransportClosed is the cause of messages that were queued for, or
	// being handed to, an agent whose connection to the daemon closed; they
	// are dead-lettered with reason transport_closed (see StopCause). A
	// handler returns it when the peer it forwards to has gone.
	ErrTransportClosed = errors.New("agentbus: transport closed")
)
