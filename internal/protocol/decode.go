package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"
	"unsafe"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/codec"
)

// ErrInvalidFrame: a frame is not a JSON object of the protocol (not JSON,
// not UTF-8, wrong field types, no op).
var ErrInvalidFrame = errors.New("protocol: invalid frame")

// Decode parses one frame. It reads it as encoding/json would read it into
// Frame (names matched exactly or else regardless of case, unknown fields
// ignored, the last of a repeated field winning, null leaving a field as it
// was), with internal/codec's syntax. It returns an error wrapping
// ErrInvalidFrame, which names the field, for anything that is not a JSON
// object with a string "op", including invalid UTF-8 (which encoding/json
// would replace silently), a field of the wrong type and a message that is
// not an object; and an error wrapping agentbus.ErrInvalidMessage, which
// names the field, for a bad value of a message's field (an unknown type, a
// priority that is not an integer from 0 to 255, a recipient that is not a
// string, a missing type where the op has no default). On either error the frame returned, if not nil,
// holds what could be read of op and id, so that the error can be
// answered; it is nil when neither could be read (as from a frame that is
// not JSON). A message in a send,
// publish, request or respond frame may leave out its type: it defaults to
// the op's (direct for send). Decode does not check the fields an op needs;
// the daemon does. It keeps no reference to data: the caller may reuse it.
// It is safe for concurrent use.
func Decode(data []byte) (*Frame, error) {
	f := new(Frame)
	if err := DecodeInto(f, data); err != nil {
		if f.Op == "" && f.ID == "" {
			return nil, err
		}
		return f, err
	}
	return f, nil
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
	d := codec.NewDecoder(data)
	defer d.Release()
	bad, err := decodeFrame(&d.Decoder, f)
	if err == nil {
		if _, eof := d.ReadToken(); eof != io.EOF {
			err = errors.New("data after the frame")
		}
	}
	if err != nil {
		*f = Frame{}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: not JSON: %w", ErrInvalidFrame, err)
	}
	if bad != nil {
		*f = Frame{Op: f.Op, ID: f.ID}
	}
	return bad
}

var errNotUTF8 = fmt.Errorf("%w: not valid UTF-8", ErrInvalidFrame)

// The fields of a frame, in the order of frameFields.
const (
	fOp = iota
	fID
	fVersion
	fClient
	fServer
	fMaxFrame
	fAgent
	fWindow
	fDurable
	fN
	fTopic
	fMessage
	fMessageID
	fTimeoutMS
	fReason
	fSender
	fRecipient
	fType
	fLimit
	fSeq
	fTo
	fCode
	fError
	fStats
	fLetters
	fMessages
	fTopics
)

// frameFields are the JSON names of a frame's fields, for encoding/json's
// match regardless of case.
var frameFields = [...]string{
	fOp: "op", fID: "id", fVersion: "version", fClient: "client", fServer: "server", fMaxFrame: "max_frame",
	fAgent: "agent", fWindow: "window", fDurable: "durable", fN: "n", fTopic: "topic", fMessage: "message", fMessageID: "message_id",
	fTimeoutMS: "timeout_ms", fReason: "reason", fSender: "sender", fRecipient: "recipient", fType: "type",
	fLimit: "limit", fSeq: "seq", fTo: "to", fCode: "code", fError: "error", fStats: "stats", fLetters: "letters",
	fMessages: "messages", fTopics: "topics",
}

// frameField returns the field the object name v (quoted, as read)
// selects, or -1 for an unknown field.
func frameField(v jsontext.Value) int {
	switch string(v) { // the names as Encode writes them, most used first
	case `"op"`:
		return fOp
	case `"id"`:
		return fID
	case `"agent"`:
		return fAgent
	case `"message"`:
		return fMessage
	case `"message_id"`:
		return fMessageID
	case `"n"`:
		return fN
	}
	return codec.Match(v, frameFields[:]...)
}

// decodeFrame reads one frame from dec into f, which is zero. It returns
// a syntax error at once; an error in a field's value (bad) once the whole
// frame is read, with op and id in f.
func decodeFrame(dec *jsontext.Decoder, f *Frame) (bad, syntax error) {
	if dec.PeekKind() != '{' {
		if _, err := dec.ReadValue(); err != nil {
			return nil, err
		}
		return fmt.Errorf("%w: not a JSON object", ErrInvalidFrame), nil
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, err
	}
	var (
		first   error  // the first error in a field's value
		message []byte // a message read before the op, decoded after it
	)
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		var bad error // an error in the field's value
		switch field := frameField(name); field {
		case -1:
			err = dec.SkipValue()
		case fMessage:
			if f.Op == "" && dec.PeekKind() == '{' {
				var v jsontext.Value
				v, err = dec.ReadValue()
				message = slices.Clone(v)
				break
			}
			message = nil
			bad, err = decodeMessage(dec, f)
		default:
			var v jsontext.Value
			if v, err = dec.ReadValue(); err == nil {
				bad = setField(f, field, v)
			}
		}
		if err != nil {
			return nil, err
		}
		if first == nil {
			first = bad
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, err
	}
	switch {
	case first != nil:
		return first, nil
	case f.Op == "":
		return fmt.Errorf("%w: missing op", ErrInvalidFrame), nil
	case message != nil:
		d := codec.NewDecoder(message)
		defer d.Release()
		return decodeMessage(&d.Decoder, f) // its syntax was read already
	}
	return nil, nil
}

// decodeMessage reads the value of a frame's message field: an object,
// whose type defaults to the op's, or null. It returns what is wrong with
// the message, if anything, and a syntax error apart. A message that is not
// an object is a bad frame (ErrInvalidFrame); a bad value of one of its
// fields is a bad message (agentbus.ErrInvalidMessage, naming the field).
func decodeMessage(dec *jsontext.Decoder, f *Frame) (bad, syntax error) {
	f.Message = nil
	switch dec.PeekKind() {
	case 'n':
		_, err := dec.ReadValue()
		return nil, err
	case '{':
	default:
		v, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		return fmt.Errorf("%w: message: want an object, got %s", ErrInvalidFrame, codec.Describe(v)), nil
	}
	m := new(agentbus.Message)
	if err := m.DecodeJSON(dec, defaultType(f.Op)); err != nil {
		if syntactic(err) {
			return nil, err
		}
		return fmt.Errorf("message: %w", err), nil // err wraps agentbus.ErrInvalidMessage
	}
	f.Message = m
	return nil, nil
}

// syntactic reports whether err is an error of the JSON syntax.
func syntactic(err error) bool {
	var se *jsontext.SyntacticError
	return errors.As(err, &se)
}

// decodeList decodes v, the value of a frame's letters, messages or topics
// field (the answers of dead_letters, history and topics), into *list, with
// encoding/json/v2, or returns what is wrong with it.
func decodeList[T any](field int, v jsontext.Value, list *[]T) error {
	if err := jsonv2.Unmarshal(v, list, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)); err != nil {
		*list = nil
		return fmt.Errorf("%w: %s: %v", ErrInvalidFrame, frameFields[field], err)
	}
	return nil
}

// setField stores the value v of field (any but message) in f, or returns
// why it cannot. null leaves the field as it was.
func setField(f *Frame, field int, v jsontext.Value) error {
	k := v.Kind()
	if field == fStats { // a json.RawMessage, null included
		f.Stats = json.RawMessage(slices.Clone(v))
		return nil
	}
	if k == 'n' {
		return nil
	}
	wrong := func(want string) error {
		return fmt.Errorf("%w: %s: want %s, got %s", ErrInvalidFrame, frameFields[field], want, codec.Describe(v))
	}
	switch field {
	case fLetters:
		return decodeList(field, v, &f.Letters)
	case fMessages:
		return decodeList(field, v, &f.Messages)
	case fTopics:
		return decodeList(field, v, &f.Topics)
	case fDurable:
		if k != 't' && k != 'f' {
			return wrong("true or false")
		}
		f.Durable = k == 't'
		return nil
	}
	if s := stringField(f, field); s != nil {
		if k != '"' {
			return wrong("a string")
		}
		var scratch [64]byte
		text := codec.AppendText(scratch[:0], v)
		if field == fOp {
			*s = internOp(text)
		} else {
			*s = string(text)
		}
		return nil
	}
	num := unsafe.String(unsafe.SliceData(v), len(v)) // not kept: parsed below
	if field == fSeq {
		n, err := strconv.ParseUint(num, 10, 64)
		if k != '0' || err != nil {
			return wrong("an unsigned integer")
		}
		f.Seq = n
		return nil
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if k != '0' || err != nil || (field != fTimeoutMS && int64(int(n)) != n) {
		return wrong("an integer")
	}
	switch field {
	case fVersion:
		f.Version = int(n)
	case fMaxFrame:
		f.MaxFrame = int(n)
	case fWindow:
		f.Window = int(n)
	case fN:
		f.N = int(n)
	case fLimit:
		f.Limit = int(n)
	case fTimeoutMS:
		f.TimeoutMS = n
	}
	return nil
}

// stringField returns the string field of f that field is, or nil.
func stringField(f *Frame, field int) *string {
	switch field {
	case fOp:
		return &f.Op
	case fID:
		return &f.ID
	case fClient:
		return &f.Client
	case fServer:
		return &f.Server
	case fAgent:
		return &f.Agent
	case fTopic:
		return &f.Topic
	case fMessageID:
		return &f.MessageID
	case fReason:
		return &f.Reason
	case fSender:
		return &f.Sender
	case fRecipient:
		return &f.Recipient
	case fType:
		return &f.Type
	case fTo:
		return &f.To
	case fCode:
		return &f.Code
	case fError:
		return &f.Error
	}
	return nil
}

// defaultType is the message type an op's message has when it names none.
func defaultType(op string) agentbus.MessageType {
	switch op {
	case OpSend:
		return agentbus.TypeDirect
	case OpPublish:
		return agentbus.TypePublish
	case OpRequest:
		return agentbus.TypeRequest
	case OpRespond:
		return agentbus.TypeResponse
	}
	return 0
}

// internOp returns op as a string, the constant for a known op (so that
// decoding one allocates nothing for it).
func internOp(op []byte) string {
	switch string(op) {
	case OpDeliver:
		return OpDeliver
	case OpOK:
		return OpOK
	case OpRequest:
		return OpRequest
	case OpRespond:
		return OpRespond
	case OpResponse:
		return OpResponse
	case OpSend:
		return OpSend
	case OpPublish:
		return OpPublish
	case OpCredit:
		return OpCredit
	case OpAck:
		return OpAck
	case OpNack:
		return OpNack
	case OpError:
		return OpError
	case OpPing:
		return OpPing
	case OpPong:
		return OpPong
	case OpSync:
		return OpSync
	}
	return string(op)
}
