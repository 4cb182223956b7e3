// Package protocol is the wire protocol between the agentbus daemon and its
// clients, as PROTOCOL.md specifies it: newline-delimited JSON frames, each
// one flat object with an "op". This package holds the frame, its encoding
// and decoding, and the table of stable error codes that mirror the bus's
// sentinel errors. The daemon (internal/server) and the Go client (client)
// both speak it through it.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// Version is the protocol version this package speaks. A client names the
// version it speaks in hello; the daemon accepts versions 1..Version.
const Version = 1

// Operations. Requests go from client to daemon and are answered by a frame
// with the same id; deliver frames are pushed by the daemon.
const (
	OpHello       = "hello"        // client → daemon: version, client name
	OpRegister    = "register"     // agent name; deliveries for it are pushed
	OpUnregister  = "unregister"   // agent name
	OpSend        = "send"         // message (type direct unless set)
	OpPublish     = "publish"      // message with topic (type publish)
	OpSubscribe   = "subscribe"    // agent, topic (a subject or pattern)
	OpUnsubscribe = "unsubscribe"  // agent, topic
	OpRequest     = "request"      // message; answered by a response frame
	OpRespond     = "respond"      // message with request_id (type response)
	OpAck         = "ack"          // message_id of a delivered requires_ack message
	OpNack        = "nack"         // message_id; error: why (redelivered if attempts remain)
	OpStats       = "stats"        // answered by a stats frame
	OpDeadLetters = "dead_letters" // reason/agent/topic/limit filter; answered by letters
	OpReplay      = "replay"       // seq, to
	OpHistory     = "history"      // sender/recipient/topic/type/limit; answered by messages
	OpPing        = "ping"         // answered by pong
	OpCredit      = "credit"       // agent, n: n more deliveries may be in flight; not answered

	OpWelcome  = "welcome"  // daemon → client: answer to hello
	OpOK       = "ok"       // daemon → client: the operation succeeded
	OpError    = "error"    // daemon → client: the operation failed; code, error
	OpPong     = "pong"     // daemon → client: answer to ping
	OpResponse = "response" // daemon → client: answer to request
	OpDeliver  = "deliver"  // daemon → client: a message for a registered agent
)

// Frame is one protocol frame. Only the fields an op uses are set; the
// others are left out of the JSON form. Unknown fields are ignored, so the
// protocol can grow without breaking clients.
type Frame struct {
	Op string `json:"op"`
	// ID correlates a client's operation with the daemon's answer (the
	// client picks it; the answer echoes it). Deliver frames have none.
	ID string `json:"id,omitempty"`

	Version  int    `json:"version,omitempty"`   // hello, welcome
	Client   string `json:"client,omitempty"`    // hello: the client's name, for logs
	Server   string `json:"server,omitempty"`    // welcome: the daemon's name and version
	MaxFrame int    `json:"max_frame,omitempty"` // welcome: the largest frame accepted, in bytes

	Agent     string            `json:"agent,omitempty"`      // register, unregister, subscribe, unsubscribe, deliver, ack, nack, credit
	Window    int               `json:"window,omitempty"`     // register: at most this many deliveries in flight (0: no limit)
	N         int               `json:"n,omitempty"`          // credit: deliveries the client has finished with
	Topic     string            `json:"topic,omitempty"`      // subscribe, unsubscribe, dead_letters, history
	Message   *agentbus.Message `json:"message,omitempty"`    // send, publish, request, respond, response, deliver
	MessageID string            `json:"message_id,omitempty"` // ok (send, publish, respond, replay), ack, nack
	TimeoutMS int64             `json:"timeout_ms,omitempty"` // request: overrides the daemon's request timeout

	Reason    string `json:"reason,omitempty"`    // dead_letters filter
	Sender    string `json:"sender,omitempty"`    // history filter
	Recipient string `json:"recipient,omitempty"` // history filter
	Type      string `json:"type,omitempty"`      // history filter: a message type name
	Limit     int    `json:"limit,omitempty"`     // dead_letters, history
	Seq       uint64 `json:"seq,omitempty"`       // replay
	To        string `json:"to,omitempty"`        // replay: another agent

	Code  string `json:"code,omitempty"`  // error: a stable code (see Codes)
	Error string `json:"error,omitempty"` // error, nack: human-readable text

	Stats    json.RawMessage     `json:"stats,omitempty"`    // stats answer
	Letters  []Letter            `json:"letters,omitempty"`  // dead_letters answer
	Messages []*agentbus.Message `json:"messages,omitempty"` // history answer
}

// Letter is the wire form of a dead letter.
type Letter struct {
	Seq      uint64            `json:"seq"`
	Reason   string            `json:"reason"`
	Error    string            `json:"error,omitempty"`
	Agent    string            `json:"agent,omitempty"`
	Time     time.Time         `json:"time"`
	Attempts int               `json:"attempts,omitempty"`
	Replays  int               `json:"replays,omitempty"`
	Message  *agentbus.Message `json:"message,omitempty"`
	Value    string            `json:"value,omitempty"` // a foreign value, printed with %v
}

// FromLetter converts a dead letter to its wire form.
func FromLetter(l deadletter.Letter) Letter {
	w := Letter{Seq: l.Seq, Reason: string(l.Reason), Error: l.Err, Agent: l.Agent, Time: l.Time,
		Attempts: l.Attempts, Replays: l.Replays, Message: l.Message}
	if l.Message == nil && l.Value != nil {
		w.Value = fmt.Sprintf("%T %v", l.Value, l.Value)
	}
	return w
}

// ErrInvalidFrame: a frame is not a JSON object of the protocol (not JSON,
// not UTF-8, wrong field types, no op).
var ErrInvalidFrame = errors.New("protocol: invalid frame")

// Decode parses one frame. It returns an error wrapping ErrInvalidFrame for
// anything that is not a JSON object with a string "op", including invalid
// UTF-8 (which encoding/json would otherwise replace silently) and a message
// that is not a valid message. On such an error the frame returned, if not
// nil, holds what could be read of op and id, so that the error can be
// answered. A message in a send, publish, request or respond frame may
// leave out its type: it defaults to the op's (direct for send). Decode
// does not check the fields an op needs; the daemon does.
func Decode(data []byte) (*Frame, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalidFrame)
	}
	if f, ok := decodeFast(data); ok {
		return f, nil
	}
	return decodeSlow(data)
}

// decodeSlow is Decode through encoding/json: the reference, and the path
// for every frame decodeFast declines.
func decodeSlow(data []byte) (*Frame, error) {
	var w struct {
		Frame
		Message json.RawMessage `json:"message,omitempty"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return salvage(data), fmt.Errorf("%w: %v", ErrInvalidFrame, err)
	}
	f := &w.Frame
	if f.Op == "" {
		return f, fmt.Errorf("%w: missing op", ErrInvalidFrame)
	}
	if len(w.Message) > 0 && string(w.Message) != "null" {
		raw := withDefaultType(w.Message, defaultType(f.Op))
		f.Message = new(agentbus.Message)
		if err := json.Unmarshal(raw, f.Message); err != nil {
			f.Message = nil
			return f, fmt.Errorf("%w: message: %v", ErrInvalidFrame, err)
		}
	}
	return f, nil
}

// salvage reads op and id from a frame that did not decode, if it can.
func salvage(data []byte) *Frame {
	var f struct {
		Op any `json:"op"`
		ID any `json:"id"`
	}
	if json.Unmarshal(data, &f) != nil {
		return nil
	}
	op, _ := f.Op.(string)
	id, _ := f.ID.(string)
	return &Frame{Op: op, ID: id}
}

// defaultType is the message type an op's message has when it names none.
func defaultType(op string) string {
	switch op {
	case OpSend:
		return "direct"
	case OpPublish:
		return "publish"
	case OpRequest:
		return "request"
	case OpRespond:
		return "response"
	}
	return ""
}

// withDefaultType puts "type":t first in the JSON object raw; a type the
// object names itself comes later and wins.
func withDefaultType(raw json.RawMessage, t string) json.RawMessage {
	if t == "" {
		return raw
	}
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return raw // not an object: the message decoder says so
	}
	rest := bytes.TrimLeft(trimmed[1:], " \t\r\n")
	out := make([]byte, 0, len(raw)+len(t)+12)
	out = append(out, `{"type":"`...)
	out = append(out, t...)
	out = append(out, '"')
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}

// Encode returns the JSON form of f, with no newline. Deliver, ok and error
// frames, the daemon's hot path, are written by hand; others go through
// encoding/json. It fails only if a message cannot be encoded (an unknown
// type).
func Encode(f *Frame) ([]byte, error) {
	return AppendFrame(nil, f)
}

// AppendFrame appends the JSON form of f to b (see Encode).
func AppendFrame(b []byte, f *Frame) ([]byte, error) {
	switch {
	case f.Op == OpDeliver && f.ID == "" && f.Message != nil:
		b = append(b, `{"op":"deliver","agent":`...)
		b = appendString(b, f.Agent)
		b = append(b, `,"message":`...)
		b, err := f.Message.AppendJSON(b)
		if err != nil {
			return b, err
		}
		return append(b, '}'), nil
	case f.Op == OpOK && f.isOKOnly():
		b = append(b, `{"op":"ok","id":`...)
		b = appendString(b, f.ID)
		if f.MessageID != "" {
			b = append(b, `,"message_id":`...)
			b = appendString(b, f.MessageID)
		}
		return append(b, '}'), nil
	}
	enc, err := json.Marshal(f)
	if err != nil {
		return b, err
	}
	return append(b, enc...), nil
}

// isOKOnly reports whether f has no field besides op, id and message_id.
func (f *Frame) isOKOnly() bool {
	return f.Version == 0 && f.Client == "" && f.Server == "" && f.MaxFrame == 0 && f.Agent == "" &&
		f.Window == 0 && f.N == 0 && f.Topic == "" && f.Message == nil && f.TimeoutMS == 0 && f.Reason == "" && f.Sender == "" &&
		f.Recipient == "" && f.Type == "" && f.Limit == 0 && f.Seq == 0 && f.To == "" && f.Code == "" &&
		f.Error == "" && f.Stats == nil && f.Letters == nil && f.Messages == nil
}

// appendString appends s as a JSON string. Plain ASCII, the common case, is
// copied as is; anything else goes through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
