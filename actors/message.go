package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/internal/codec"
	"github.com/descartes/agentbus/mailbox"
)

var (
	// ErrInvalidMessage means a message failed validation: an unknown type,
	// a priority above 100, a missing recipient or topic for its type, a
	// payload that is not JSON, a negative TTL or a malformed field.
	ErrInvalidMessage = errors.New("agentbus: invalid message")
	// ErrMessageTooLarge means a message is larger than the bus accepts.
	ErrMessageTooLarge = errors.New("agentbus: message too large")
)

// MessageType says what a message is for and how the bus routes it.
type MessageType uint8

// The message types. The zero MessageType is invalid, so a Message built
// without NewMessage fails validation instead of being misrouted.
const (
	TypeDirect      MessageType = iota + 1 // to one agent (Recipient)
	TypePublish                            // to the subscribers of Topic
	TypeBroadcast                          // to every agent but the sender
	TypeSubscribe                          // subscribe Sender to Topic
	TypeUnsubscribe                        // unsubscribe Sender from Topic
	TypeRequest                            // to Recipient, which answers with a Response
	TypeResponse                           // answers the request with the same RequestID
	TypeAck                                // acknowledges the message whose ID is in RequestID
	TypeError                              // reports an error to Recipient
	TypeHeartbeat                          // liveness signal to Recipient
	TypeControl                            // control instruction to Recipient
	typeEnd
)

var typeNames = [...]string{
	TypeDirect:      "direct",
	TypePublish:     "publish",
	TypeBroadcast:   "broadcast",
	TypeSubscribe:   "subscribe",
	TypeUnsubscribe: "unsubscribe",
	TypeRequest:     "request",
	TypeResponse:    "response",
	TypeAck:         "ack",
	TypeError:       "error",
	TypeHeartbeat:   "heartbeat",
	TypeControl:     "control",
}

// Valid reports whether t is one of the defined types.
func (t MessageType) Valid() bool { return t > 0 && t < typeEnd }

// String returns the type's wire name, such as "direct".
func (t MessageType) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// ParseMessageType returns the type with the given wire name, or an error
// wrapping ErrInvalidMessage.
func ParseMessageType(s string) (MessageType, error) {
	for t := TypeDirect; t < typeEnd; t++ {
		if typeNames[t] == s {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown type %q", ErrInvalidMessage, s)
}

// MarshalText implements encoding.TextMarshaler.
func (t MessageType) MarshalText() ([]byte, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("%w: unknown type %d", ErrInvalidMessage, uint8(t))
	}
	return []byte(typeNames[t]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *MessageType) UnmarshalText(b []byte) error {
	v, err := ParseMessageType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Priorities.
const (
	MaxPriority     = mailbox.MaxPriority     // the highest priority, 100
	DefaultPriority = mailbox.DefaultPriority // the priority NewMessage sets, 50
)

// Message is the envelope every agentbus message travels in, in process and on
// the wire (see MarshalJSON). Build one with NewMessage and the With methods.
//
// Once a message is handed to the bus (Send, Request, Publish), the bus owns
// it: the caller must not modify it, and handlers must treat it, and its
// Payload, as read-only.
type Message struct {
	ID            string            // unique, time-ordered (UUIDv7); set by NewMessage, or by Send if empty
	Sender        string            // the sending agent; stamped by the bus when sent from a handler
	Recipient     string            // the receiving agent, for direct messages and requests
	Topic         string            // the subject, for publish, subscribe and unsubscribe
	RequestID     string            // pairs a response (or an ack) with its request
	CorrelationID string            // groups the messages of one conversation
	Payload       json.RawMessage   // the content; must be JSON, or empty
	Timestamp     time.Time         // creation time (UTC); the TTL counts from it
	TTL           time.Duration     // lifetime from Timestamp; 0 means forever
	Attempts      int               // delivery attempts so far; more than 1 means a redelivery
	Metadata      map[string]string // free-form headers, such as a W3C traceparent
	Type          MessageType       // what the message is for
	Priority      uint8             // 0 (lowest) to 100 (highest); NewMessage sets 50
	RequiresAck   bool              // redeliver until acknowledged
	// Redelivered marks a delivery of a durable agent's message that may
	// have been delivered before: recovered after a restart, or handed
	// again after its agent's connection closed before it was settled.
	// Attempts says how often it was tried.
	Redelivered bool

	// Unexported state, packed beside the small fields above so a Message
	// stays in the 192-byte size class.
	checked     uint32     // with checkedData: the length of the payload last found to be JSON, and checkedCompact
	checkedData *byte      //
	replyTo     *actor.PID // the protoactor sender of a request, if any
}

// payloadChecked reports whether the payload is the slice that last passed
// codec.Valid, so that a message re-sent unchanged is not scanned again.
func (m *Message) payloadChecked() bool {
	return m.checkedData == unsafe.SliceData(m.Payload) && int(m.checked&^checkedCompact) == len(m.Payload)
}

// payloadCompact reports whether the payload is checked (see
// payloadChecked) and compact, so that AppendJSON writes it as it is.
func (m *Message) payloadCompact() bool { return m.checked&checkedCompact != 0 && m.payloadChecked() }

// checkedCompact is the bit of Message.checked that says the checked payload
// is also compact; the other bits are its length.
const checkedCompact = 1 << 31

// markPayloadChecked records that the current payload is valid JSON, and
// whether it is compact.
func (m *Message) markPayloadChecked(compact bool) {
	if len(m.Payload) < checkedCompact {
		m.checkedData, m.checked = unsafe.SliceData(m.Payload), uint32(len(m.Payload))
		if compact {
			m.checked |= checkedCompact
		}
	}
}

// NewMessage returns a message of type t from sender with payload, a fresh ID,
// the current time and DefaultPriority. It does not validate; Send does.
func NewMessage(t MessageType, sender string, payload json.RawMessage) *Message {
	now := now() // one clock read for both, and one clock, not two (see now)
	// One allocation for the message and the bytes of its ID (240 bytes, as
	// the two took): the ID string points into the block, whose id array
	// nothing else can reach, so it never changes. BenchmarkNewMessage.
	p := &messageWithID{Message: Message{
		Type:      t,
		Sender:    sender,
		Payload:   payload,
		Priority:  DefaultPriority,
		Timestamp: now,
	}}
	putIDAt(&p.id, now)
	p.ID = unsafe.String(&p.id[0], idLen)
	return &p.Message
}

// messageWithID is what NewMessage allocates: a message and its ID's bytes.
type messageWithID struct {
	Message
	id [idLen]byte
}

// WithRecipient sets the recipient and returns m.
func (m *Message) WithRecipient(agent string) *Message { m.Recipient = agent; return m }

// WithTopic sets the topic and returns m.
func (m *Message) WithTopic(topic string) *Message { m.Topic = topic; return m }

// WithPriority sets the priority (0 to 100; more fails validation) and returns m.
func (m *Message) WithPriority(p uint8) *Message { m.Priority = p; return m }

// WithRequestID sets the request ID and returns m.
func (m *Message) WithRequestID(id string) *Message { m.RequestID = id; return m }

// WithCorrelationID sets the correlation ID and returns m.
func (m *Message) WithCorrelationID(id string) *Message { m.CorrelationID = id; return m }

// WithTTL sets the time to live, counted from Timestamp, and returns m.
func (m *Message) WithTTL(ttl time.Duration) *Message { m.TTL = ttl; return m }

// WithMetadata sets one metadata entry and returns m.
func (m *Message) WithMetadata(key, value string) *Message {
	if m.Metadata == nil {
		m.Metadata = make(map[string]string, 1)
	}
	m.Metadata[key] = value
	return m
}

// RequireAck marks m for redelivery until it is acknowledged, and returns m.
func (m *Message) RequireAck() *Message { m.RequiresAck = true; return m }

// Trace context keys in Metadata (W3C Trace Context), which the bus carries
// from a message to the messages sent while handling it, and from a request
// to its response.
const (
	TraceParent = "traceparent"
	TraceState  = "tracestate"
)

// InheritTrace copies from's trace context (TraceParent and TraceState in
// Metadata) into m, unless m has its own TraceParent, and returns m.
func (m *Message) InheritTrace(from *Message) *Message {
	if from == nil || len(from.Metadata) == 0 {
		return m
	}
	tp, ok := from.Metadata[TraceParent]
	if !ok || m.Metadata[TraceParent] != "" {
		return m
	}
	// A new map: m's may be shared with the message it was cloned from.
	md := make(map[string]string, len(m.Metadata)+2)
	for k, v := range m.Metadata {
		md[k] = v
	}
	md[TraceParent] = tp
	if ts, ok := from.Metadata[TraceState]; ok {
		md[TraceState] = ts
	}
	m.Metadata = md
	return m
}

// NewResponse returns a response to request m from sender: type Response, the
// request's RequestID (or its ID), addressed to the request's sender, with the
// request's priority, correlation ID and trace context.
func (m *Message) NewResponse(sender string, payload json.RawMessage) *Message {
	r := NewMessage(TypeResponse, sender, payload)
	r.RequestID = m.RequestID
	if r.RequestID == "" {
		r.RequestID = m.ID
	}
	r.Recipient = m.Sender
	r.Priority = m.Priority
	r.CorrelationID = m.CorrelationID
	// What is known of m's payload holds for r's if it is the same slice
	// (an echo), so that it is not checked again (see payloadChecked).
	r.checked, r.checkedData = m.checked, m.checkedData
	return r.InheritTrace(m)
}

// DecodePayload unmarshals the payload into v.
func (m *Message) DecodePayload(v any) error {
	if err := json.Unmarshal(m.Payload, v); err != nil {
		return fmt.Errorf("agentbus: decode payload of %s: %w", m.ID, err)
	}
	return nil
}

// Deadline returns when m expires, or the zero time if it has no TTL.
func (m *Message) Deadline() time.Time {
	if m.TTL <= 0 {
		return time.Time{}
	}
	return m.Timestamp.Add(m.TTL)
}

// Expired reports whether m's TTL has run out at now.
func (m *Message) Expired(now time.Time) bool {
	return m.TTL > 0 && !now.Before(m.Timestamp.Add(m.TTL))
}

// IgnoreDeadLetterLogging implements protoactor's actor.IgnoreDeadLetterLogging:
// the bus records and logs undeliverable messages itself (throttled, without
// the goroutine protoactor's own throttle starts per log window).
func (m *Message) IgnoreDeadLetterLogging() {}

// MailboxKey implements mailbox.Item: m's priority, and its deadline in
// Unix nanoseconds, or 0 if it has no TTL.
func (m *Message) MailboxKey() (priority int, deadline int64) {
	if m.TTL <= 0 {
		return int(m.Priority), 0
	}
	return int(m.Priority), max(m.Timestamp.Add(m.TTL).UnixNano(), 1)
}

// ReplyTo returns the protoactor PID that sent m as a request with
// protoactor's Request or RequestFuture, or nil.
func (m *Message) ReplyTo() *actor.PID { return m.replyTo }

// SetReplyTo records the protoactor PID that a response to m must go to.
func (m *Message) SetReplyTo(pid *actor.PID) { m.replyTo = pid }

// Size returns the bytes m counts against a size limit: the payload, the
// string fields and the metadata.
func (m *Message) Size() int {
	n := len(m.Payload) + len(m.ID) + len(m.Sender) + len(m.Recipient) +
		len(m.Topic) + len(m.RequestID) + len(m.CorrelationID)
	if len(m.Metadata) > 0 {
		for k, v := range m.Metadata {
			n += len(k) + len(v)
		}
	}
	return n
}

// Validate checks m as Send does: a known type, a priority of at most 100,
// the recipient or topic its type needs, a JSON (or empty) payload, no
// negative TTL or attempts, and a Size of at most maxSize bytes when
// maxSize > 0. It returns an error wrapping ErrInvalidMessage or
// ErrMessageTooLarge. It does not check expiry. It is not safe to call
// concurrently on one message.
//
// Text fields are not scanned for UTF-8 here, to keep the send path cheap:
// agent names and topics are validated where they are registered, messages
// decoded from JSON are always valid UTF-8, and the JSON encoder replaces
// invalid bytes with U+FFFD, as encoding/json does.
func (m *Message) Validate(maxSize int) error {
	if m == nil {
		return fmt.Errorf("%w: nil message", ErrInvalidMessage)
	}
	if !m.Type.Valid() {
		return fmt.Errorf("%w: unknown type %d", ErrInvalidMessage, uint8(m.Type))
	}
	if m.Priority > MaxPriority {
		return fmt.Errorf("%w: priority %d above %d", ErrInvalidMessage, m.Priority, MaxPriority)
	}
	if m.TTL < 0 {
		return fmt.Errorf("%w: negative ttl %v", ErrInvalidMessage, m.TTL)
	}
	if m.Attempts < 0 {
		return fmt.Errorf("%w: negative attempts %d", ErrInvalidMessage, m.Attempts)
	}
	switch m.Type {
	case TypeDirect, TypeRequest, TypeError, TypeHeartbeat, TypeControl:
		if m.Recipient == "" {
			return fmt.Errorf("%w: %s message without recipient", ErrInvalidMessage, m.Type)
		}
	case TypePublish, TypeSubscribe, TypeUnsubscribe:
		if m.Topic == "" {
			return fmt.Errorf("%w: %s message without topic", ErrInvalidMessage, m.Type)
		}
	case TypeResponse, TypeAck:
		if m.RequestID == "" {
			return fmt.Errorf("%w: %s message without request id", ErrInvalidMessage, m.Type)
		}
	}
	if maxSize > 0 {
		if n := m.Size(); n > maxSize {
			return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, n, maxSize)
		}
	}
	if len(m.Payload) > 0 && !m.payloadChecked() {
		if !codec.Valid(m.Payload) {
			return fmt.Errorf("%w: payload is not JSON", ErrInvalidMessage)
		}
		m.markPayloadChecked(false)
	}
	return nil
}

// Clone returns a shallow copy of m for another destination: the copy shares
// Payload and Metadata (which the bus treats as read-only) but not m's reply
// address.
func (m *Message) Clone() *Message {
	c := *m
	c.replyTo = nil
	return &c
}
