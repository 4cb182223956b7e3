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
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// Version is the protocol version this package speaks. A client names the
// version it speaks in hello; the daemon accepts versions 1..Version.
//
// Version 2 differs from 1 in one point: a send, publish or respond without
// an id is confirmed by no ok (a refusal is still answered, by an error
// frame that names the message in message_id); a sync confirms them all at
// once. See PROTOCOL.md, "Pipelining".
const Version = 2

// QuietVersion is the first version in which a send, publish or respond
// without an id is not answered with an ok.
const QuietVersion = 2

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
	OpSync        = "sync"         // answered by ok once every earlier send, publish, respond and request is carried out
	OpTopics      = "topics"       // limit; answered by topics: the subscribed topics and their subscribers

	OpDeadLetter       = "dead_letter"        // seq; answered by dead_letters with that one letter
	OpPurgeDeadLetters = "purge_dead_letters" // answered by ok with n, the letters removed
	OpSubscribers      = "subscribers"        // topic; answered by ok with n, the agents a publish reaches

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
	Durable   bool              `json:"durable,omitempty"`    // register: a durable agent (see PROTOCOL.md)
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
	Topics   []TopicInfo         `json:"topics,omitempty"`   // topics answer
}

// TopicInfo is one subscribed topic (a subject or a pattern) in a topics
// answer, with the agents subscribed to exactly it, sorted.
type TopicInfo struct {
	Topic       string   `json:"topic"`
	Subscribers []string `json:"subscribers"`
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
// does not check the fields an op needs; the daemon does. It keeps no
// reference to data: the caller may reuse it.
func Decode(data []byte) (*Frame, error) {
	if !utf8.Valid(data) {
		return nil, errNotUTF8
	}
	f := new(Frame)
	if decodeFastInto(f, data) {
		return f, nil
	}
	return decodeSlow(data)
}

// DecodeInto is Decode into *f, for a caller that decodes frame after frame
// and keeps none of them (it may keep their fields, and their message): the
// frame is not allocated. On error, f holds what could be read of op and
// id (see Decode), or nothing.
func DecodeInto(f *Frame, data []byte) error {
	*f = Frame{}
	if !utf8.Valid(data) {
		return errNotUTF8
	}
	if decodeFastInto(f, data) {
		return nil
	}
	*f = Frame{}
	g, err := decodeSlow(data)
	if g != nil {
		*f = *g
	}
	return err
}

var errNotUTF8 = fmt.Errorf("%w: not valid UTF-8", ErrInvalidFrame)

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
// object names itself comes later and wins. When the object plainly names
// its own type (see namesType), raw is returned as it is: the default could
// not win, and a repeated key would keep the message off its decoder's fast
// path.
func withDefaultType(raw json.RawMessage, t string) json.RawMessage {
	if t == "" {
		return raw
	}
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return raw // not an object: the message decoder says so
	}
	if namesType(trimmed) {
		return raw
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

// namesType reports whether obj, a JSON object, has exactly one member that
// encoding/json would store in the message's type (a key equal to "type"
// regardless of ASCII case), its key free of escapes and of non-ASCII bytes,
// and a string for its value. Then a default type put before it would be
// overwritten by it whatever it holds, so the default can be left out. It
// reports false for anything else, including syntax it does not follow,
// and the default is then put in as always.
func namesType(obj []byte) bool {
	s := scanner{b: obj}
	if !s.eat('{') {
		return false
	}
	found := false
	for {
		s.space()
		if !s.eat('"') {
			return false
		}
		start := s.i
		for s.i < len(s.b) && s.b[s.i] != '"' {
			if c := s.b[s.i]; c == '\\' || c >= 0x80 {
				return false
			}
			s.i++
		}
		if s.i >= len(s.b) {
			return false
		}
		key := s.b[start:s.i]
		s.i++
		s.space()
		if !s.eat(':') {
			return false
		}
		s.space()
		if s.i >= len(s.b) {
			return false
		}
		if isType(key) {
			if found || s.b[s.i] != '"' {
				return false
			}
			found = true
		}
		if !s.skipValue() {
			return false
		}
		s.space()
		if s.eat('}') {
			return found
		}
		if !s.eat(',') {
			return false
		}
	}
}

// isType reports whether key equals "type" regardless of ASCII case.
func isType(key []byte) bool {
	return len(key) == 4 && key[0]|0x20 == 't' && key[1]|0x20 == 'y' && key[2]|0x20 == 'p' && key[3]|0x20 == 'e'
}

// Encode returns the JSON form of f, with no newline. Every frame but the
// answers that nest lists or objects (stats, dead_letters, history, topics) is
// written by hand, field by field in the order and form encoding/json gives
// them; those go through encoding/json. It fails only if a message cannot be
// encoded (an unknown type, a payload that is not JSON).
func Encode(f *Frame) ([]byte, error) {
	return AppendFrame(nil, f)
}

// AppendFrame appends the JSON form of f to b (see Encode), so that a caller
// can encode into a buffer it reuses. On error, b is returned as it was.
func AppendFrame(b []byte, f *Frame) ([]byte, error) {
	if f.Stats != nil || f.Letters != nil || f.Messages != nil || f.Topics != nil {
		g := *f // so that f itself does not escape: callers keep theirs on the stack
		enc, err := json.Marshal(&g)
		if err != nil {
			return b, err
		}
		return append(b, enc...), nil
	}
	start := len(b)
	b = append(b, `{"op":`...)
	b = appendString(b, f.Op)
	b = appendStringField(b, `,"id":`, f.ID)
	b = appendIntField(b, `,"version":`, int64(f.Version))
	b = appendStringField(b, `,"client":`, f.Client)
	b = appendStringField(b, `,"server":`, f.Server)
	b = appendIntField(b, `,"max_frame":`, int64(f.MaxFrame))
	b = appendStringField(b, `,"agent":`, f.Agent)
	b = appendIntField(b, `,"window":`, int64(f.Window))
	if f.Durable {
		b = append(b, `,"durable":true`...)
	}
	b = appendIntField(b, `,"n":`, int64(f.N))
	b = appendStringField(b, `,"topic":`, f.Topic)
	if f.Message != nil {
		b = append(b, `,"message":`...)
		var err error
		if b, err = f.Message.AppendJSON(b); err != nil {
			return b[:start], err
		}
	}
	b = appendStringField(b, `,"message_id":`, f.MessageID)
	b = appendIntField(b, `,"timeout_ms":`, f.TimeoutMS)
	b = appendStringField(b, `,"reason":`, f.Reason)
	b = appendStringField(b, `,"sender":`, f.Sender)
	b = appendStringField(b, `,"recipient":`, f.Recipient)
	b = appendStringField(b, `,"type":`, f.Type)
	b = appendIntField(b, `,"limit":`, int64(f.Limit))
	if f.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, f.Seq, 10)
	}
	b = appendStringField(b, `,"to":`, f.To)
	b = appendStringField(b, `,"code":`, f.Code)
	b = appendStringField(b, `,"error":`, f.Error)
	return append(b, '}'), nil
}

// appendStringField appends key and s, unless s is empty (omitempty).
func appendStringField(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

// appendIntField appends key and n, unless n is 0 (omitempty).
func appendIntField(b []byte, key string, n int64) []byte {
	if n == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), n, 10)
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

// Buffer is a frame encoded into a buffer taken from a pool: the encoding
// side of a connection (the daemon's, the client's) writes frames at a rate
// where a fresh buffer for each would be most of its garbage.
type Buffer struct {
	B []byte // the encoded frame
}

// maxPooled is the largest buffer the pool keeps: a rare large frame's
// buffer is left to the collector rather than held for small ones.
const maxPooled = 64 << 10

var buffers = sync.Pool{New: func() any { return &Buffer{B: make([]byte, 0, 1024)} }}

// EncodeBuffer encodes f (see Encode) into a pooled Buffer. Call Release
// once the frame is no longer needed (transport.Conn.Send copies or writes
// a frame before it returns). On error it returns nil.
func EncodeBuffer(f *Frame) (*Buffer, error) {
	b := buffers.Get().(*Buffer)
	var err error
	if b.B, err = AppendFrame(b.B[:0], f); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

// Release gives b back to the pool; b must not be used afterwards. It is a
// no-op on nil.
func (b *Buffer) Release() {
	if b == nil || cap(b.B) > maxPooled {
		return
	}
	b.B = b.B[:0]
	buffers.Put(b)
}
