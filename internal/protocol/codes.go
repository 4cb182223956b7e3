package protocol

import (
	"errors"
	"fmt"

	"github.com/descartes/agentbus"
)

// Error codes carried by error frames. Each is stable: clients may switch on
// it. Most mirror a sentinel error of the bus; the rest are the protocol's
// own.
const (
	CodeInvalidFrame         = "invalid_frame"          // not a protocol frame, or a field is missing or wrong
	CodeFrameTooLarge        = "frame_too_large"        // longer than the daemon's max_frame; skipped
	CodeUnknownOp            = "unknown_op"             // the op is not one this version knows
	CodeHelloRequired        = "hello_required"         // the first frame must be hello
	CodeUnsupportedVersion   = "unsupported_version"    // the daemon does not speak the hello's version
	CodeNotRegistered        = "not_registered"         // the agent (or sender) is not registered by this connection
	CodeTooManyAgents        = "too_many_agents"        // the connection holds as many agents as allowed
	CodeTooManyRequests      = "too_many_requests"      // the connection has as many requests in flight as allowed
	CodeTooManyErrors        = "too_many_errors"        // the connection sent too many bad frames; it is closed
	CodeTooManyConnections   = "too_many_connections"   // the daemon serves as many connections as allowed; it is closed
	CodeInvalidMessage       = "invalid_message"        // agentbus.ErrInvalidMessage
	CodeMessageTooLarge      = "message_too_large"      // agentbus.ErrMessageTooLarge
	CodeInvalidAgent         = "invalid_agent"          // agentbus.ErrInvalidAgent
	CodeAgentExists          = "agent_exists"           // agentbus.ErrAgentExists
	CodeExpired              = "expired"                // agentbus.ErrExpired
	CodeNoRecipient          = "no_recipient"           // agentbus.ErrNoRecipient
	CodeMailboxFull          = "mailbox_full"           // agentbus.ErrMailboxFull
	CodeBackpressureTimeout  = "backpressure_timeout"   // agentbus.ErrBackpressureTimeout
	CodeStoreFull            = "store_full"             // agentbus.ErrStoreFull: the durable store is full
	CodeRequestTimeout       = "request_timeout"        // agentbus.ErrRequestTimeout
	CodeRequestCycle         = "request_cycle"          // agentbus.ErrRequestCycle
	CodeAgentStopped         = "agent_stopped"          // agentbus.ErrAgentStopped
	CodeInvalidSubject       = "invalid_subject"        // agentbus.ErrInvalidSubject
	CodeNotSubscribed        = "not_subscribed"         // agentbus.ErrNotSubscribed
	CodeTooManySubscriptions = "too_many_subscriptions" // agentbus.ErrTooManySubscriptions
	CodeUnknownLetter        = "unknown_letter"         // agentbus.ErrUnknownLetter
	CodeNotPending           = "not_pending"            // agentbus.ErrNotPending
	CodeClosed               = "closed"                 // agentbus.ErrClosed: the daemon is shutting down
	CodeTransportClosed      = "transport_closed"       // agentbus.ErrTransportClosed
	CodeHandlerPanic         = "handler_panic"          // agentbus.ErrHandlerPanic
	CodeAckTimeout           = "ack_timeout"            // a delivery's agent sent no ack or response within the daemon's ack timeout
	CodeInternal             = "internal"               // anything else
)

// Protocol errors that have no sentinel in the bus. The client returns them
// wrapped, so errors.Is works on them too.
var (
	ErrFrameTooLarge      = errors.New("protocol: frame too large")
	ErrUnknownOp          = errors.New("protocol: unknown op")
	ErrHelloRequired      = errors.New("protocol: hello required")
	ErrUnsupportedVersion = errors.New("protocol: unsupported version")
	ErrNotRegistered      = errors.New("protocol: agent not registered by this connection")
	ErrTooManyAgents      = errors.New("protocol: too many agents on this connection")
	ErrTooManyRequests    = errors.New("protocol: too many requests in flight on this connection")
	ErrTooManyErrors      = errors.New("protocol: too many bad frames")
	ErrTooManyConns       = errors.New("protocol: too many connections")
	ErrInternal           = errors.New("protocol: internal error")
	// ErrAckTimeout: the remote agent a delivery went to sent no ack (or
	// no response, for a request) within the daemon's ack timeout.
	ErrAckTimeout = errors.New("protocol: no answer within the ack timeout")
)

// codes maps each code to its sentinel, in the order errors are matched:
// more specific first (a backpressure timeout also wraps nothing else, but a
// request timeout is checked before the context errors it may wrap).
var codes = []struct {
	code string
	err  error
}{
	{CodeInvalidFrame, ErrInvalidFrame},
	{CodeFrameTooLarge, ErrFrameTooLarge},
	{CodeUnknownOp, ErrUnknownOp},
	{CodeHelloRequired, ErrHelloRequired},
	{CodeUnsupportedVersion, ErrUnsupportedVersion},
	{CodeNotRegistered, ErrNotRegistered},
	{CodeTooManyAgents, ErrTooManyAgents},
	{CodeTooManyRequests, ErrTooManyRequests},
	{CodeTooManyErrors, ErrTooManyErrors},
	{CodeTooManyConnections, ErrTooManyConns},
	{CodeAckTimeout, ErrAckTimeout},
	{CodeRequestTimeout, agentbus.ErrRequestTimeout},
	{CodeRequestCycle, agentbus.ErrRequestCycle},
	{CodeStoreFull, agentbus.ErrStoreFull},
	{CodeBackpressureTimeout, agentbus.ErrBackpressureTimeout},
	{CodeMailboxFull, agentbus.ErrMailboxFull},
	{CodeMessageTooLarge, agentbus.ErrMessageTooLarge},
	{CodeInvalidMessage, agentbus.ErrInvalidMessage},
	{CodeInvalidAgent, agentbus.ErrInvalidAgent},
	{CodeAgentExists, agentbus.ErrAgentExists},
	{CodeExpired, agentbus.ErrExpired},
	{CodeNoRecipient, agentbus.ErrNoRecipient},
	{CodeAgentStopped, agentbus.ErrAgentStopped},
	{CodeInvalidSubject, agentbus.ErrInvalidSubject},
	{CodeNotSubscribed, agentbus.ErrNotSubscribed},
	{CodeTooManySubscriptions, agentbus.ErrTooManySubscriptions},
	{CodeUnknownLetter, agentbus.ErrUnknownLetter},
	{CodeNotPending, agentbus.ErrNotPending},
	{CodeTransportClosed, agentbus.ErrTransportClosed},
	{CodeClosed, agentbus.ErrClosed},
	{CodeHandlerPanic, agentbus.ErrHandlerPanic},
	{CodeInternal, ErrInternal},
}

// CodeOf returns the code of err: the first sentinel in the table that err
// wraps, or CodeInternal.
func CodeOf(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// Codes returns every code, in the table's order.
func Codes() []string {
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = c.code
	}
	return out
}

// Error is an error frame turned back into an error: it wraps the sentinel
// of its code, so errors.Is(err, agentbus.ErrNoRecipient) works across the
// socket.
type Error struct {
	Code    string // the frame's code
	Message string // the frame's error text
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel of e's code (ErrInternal for an unknown code).
func (e *Error) Unwrap() error {
	for _, c := range codes {
		if c.code == e.Code {
			return c.err
		}
	}
	return ErrInternal
}

// ErrorFrame returns the error frame that answers operation id with err.
func ErrorFrame(id string, err error) *Frame {
	return &Frame{Op: OpError, ID: id, Code: CodeOf(err), Error: err.Error()}
}

// FrameError returns the error an error frame carries.
func FrameError(f *Frame) error {
	msg := f.Error
	if msg == "" {
		msg = fmt.Sprintf("agentbus daemon: %s", f.Code)
	}
	return &Error{Code: f.Code, Message: msg}
}
