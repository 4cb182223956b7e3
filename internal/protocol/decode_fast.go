package protocol

import (
	"bytes"
	"strconv"

	"github.com/descartes/agentbus"
)

// decodeFast decodes the frames clients and the daemon exchange most (flat
// objects of plain strings and integers, and a message) without
// encoding/json's reflection. It reports false, having set nothing that
// matters, for anything else — an escape in a string, a null, a float, a
// repeated or unknown key, nested answers such as stats or letters, any
// syntax it does not expect — and Decode then takes the general path, which
// is the reference: whatever decodeFast accepts, the general path decodes to
// the same frame (FuzzDecodeFastMatchesSlow checks it).
func decodeFast(data []byte) (*Frame, bool) {
	f := new(Frame)
	if !decodeFastInto(f, data) {
		return nil, false
	}
	return f, true
}

// decodeFastInto is decodeFast into f, which must be zero. When it reports
// false, f may hold some of the fields.
func decodeFastInto(f *Frame, data []byte) bool {
	s := scanner{b: data}
	s.space()
	if !s.eat('{') {
		return false
	}
	var seen uint64
	var msg []byte
	s.space()
	if s.eat('}') {
		return false // no op: the general path explains
	}
	for {
		s.space()
		key, ok := s.plainString()
		if !ok {
			return false
		}
		s.space()
		if !s.eat(':') {
			return false
		}
		s.space()
		bit, ok := keyBits[string(key)]
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if str := stringFields(f, string(key)); str != nil {
			v, ok := s.plainString()
			if !ok {
				return false
			}
			if str == &f.Op {
				f.Op = internOp(v)
			} else {
				*str = string(v)
			}
		} else if string(key) == "message" {
			start := s.i
			if !s.skipObject() {
				return false
			}
			msg = data[start:s.i]
		} else {
			n, ok := s.integer()
			if !ok || !setInt(f, string(key), n) {
				return false
			}
		}
		s.space()
		if s.eat('}') {
			break
		}
		if !s.eat(',') {
			return false
		}
	}
	s.space()
	if s.i != len(s.b) || f.Op == "" {
		return false
	}
	if msg != nil {
		f.Message = new(agentbus.Message)
		if f.Message.UnmarshalJSON(withDefaultType(msg, defaultType(f.Op))) != nil {
			return false
		}
	}
	return true
}

// keyBits gives each key the fast path knows a bit, to catch repeats.
var keyBits = func() map[string]uint64 {
	keys := []string{"op", "id", "client", "server", "agent", "topic", "message_id", "reason", "sender",
		"recipient", "type", "to", "code", "error", "version", "max_frame", "window", "n", "limit",
		"timeout_ms", "seq", "message"}
	m := make(map[string]uint64, len(keys))
	for i, k := range keys {
		m[k] = 1 << i
	}
	return m
}()

func stringFields(f *Frame, key string) *string {
	switch key {
	case "op":
		return &f.Op
	case "id":
		return &f.ID
	case "client":
		return &f.Client
	case "server":
		return &f.Server
	case "agent":
		return &f.Agent
	case "topic":
		return &f.Topic
	case "message_id":
		return &f.MessageID
	case "reason":
		return &f.Reason
	case "sender":
		return &f.Sender
	case "recipient":
		return &f.Recipient
	case "type":
		return &f.Type
	case "to":
		return &f.To
	case "code":
		return &f.Code
	case "error":
		return &f.Error
	}
	return nil
}

// setInt stores the integer literal n in the field key, as encoding/json
// would, and reports false where it would refuse (out of range, negative
// for seq).
func setInt(f *Frame, key string, n []byte) bool {
	if key == "seq" {
		v, err := strconv.ParseUint(string(n), 10, 64)
		f.Seq = v
		return err == nil
	}
	v, err := strconv.ParseInt(string(n), 10, 64)
	if err != nil {
		return false
	}
	if key == "timeout_ms" {
		f.TimeoutMS = v
		return true
	}
	if int64(int(v)) != v {
		return false
	}
	switch key {
	case "version":
		f.Version = int(v)
	case "max_frame":
		f.MaxFrame = int(v)
	case "window":
		f.Window = int(v)
	case "n":
		f.N = int(v)
	case "limit":
		f.Limit = int(v)
	default:
		return false
	}
	return true
}

// scanner reads JSON tokens the fast path accepts.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// plainString reads a string with no escapes and no control characters
// (the input is valid UTF-8: Decode checked it).
func (s *scanner) plainString() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.b[start:s.i]
			s.i++
			return v, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// integer reads an integer literal as JSON writes it: -?(0|[1-9][0-9]*).
func (s *scanner) integer() ([]byte, bool) {
	start := s.i
	s.eat('-')
	digits := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	n := s.i - digits
	if n == 0 || n > 1 && s.b[digits] == '0' {
		return nil, false
	}
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return s.b[start:s.i], true
}

// skipValue moves past one value of any kind without checking its syntax
// in full (a number or literal runs to the next delimiter); callers decode
// the value properly afterwards.
func (s *scanner) skipValue() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '{', '[':
		return s.skipNested()
	case '"':
		if s.i = closingQuote(s.b, s.i); s.i < 0 {
			s.i = len(s.b)
			return false
		}
		s.i++
		return true
	}
	start := s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return s.i > start
		}
		s.i++
	}
	return false
}

// skipObject moves past one object, tracking strings (with escapes) and
// nesting; the message decoder checks its syntax in full.
func (s *scanner) skipObject() bool {
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	return s.skipNested()
}

// skipNested moves past the object or array at s.i (see skipObject).
func (s *scanner) skipNested() bool {
	depth := 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if s.i = closingQuote(s.b, s.i); s.i < 0 {
				s.i = len(s.b)
				return false
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				s.i++
				return true
			}
		}
		s.i++
	}
	return false
}

// closingQuote returns the index of the quote that closes the string whose
// opening quote is b[open], or -1 if the string does not end. A quote ends
// it unless an odd number of backslashes precede it.
func closingQuote(b []byte, open int) int {
	for j := open + 1; ; j++ {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		j += k
		n := 0
		for p := j - 1; p > open && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j
		}
	}
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
	}
	return string(op)
}
