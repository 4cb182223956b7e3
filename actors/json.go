package actors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/descartes/agentbus/internal/jsonvalid"
)

// wireMessage is the JSON form of Message, used for decoding.
type wireMessage struct {
	ID            string            `json:"id"`
	Type          MessageType       `json:"type"`
	Sender        string            `json:"sender"`
	Recipient     string            `json:"recipient"`
	Topic         string            `json:"topic"`
	RequestID     string            `json:"request_id"`
	CorrelationID string            `json:"correlation_id"`
	Payload       json.RawMessage   `json:"payload"`
	Priority      *uint8            `json:"priority"`
	Timestamp     time.Time         `json:"timestamp"`
	Attempts      int               `json:"attempts"`
	RequiresAck   bool              `json:"requires_ack"`
	Redelivered   bool              `json:"redelivered"`
	TTL           json.Number       `json:"ttl_ms"`
	Metadata      map[string]string `json:"metadata"`
}

// MarshalJSON encodes m as one JSON object, with no newline inside it:
//
//	{"id":"…","type":"direct","sender":"a","recipient":"b","payload":{…},
//	 "priority":50,"timestamp":"2026-11-27T10:00:00.123456789Z","ttl_ms":1500}
//
// Empty fields are left out; priority is always present. The type is its wire
// name; timestamp is RFC 3339 with nanoseconds; ttl_ms is a decimal number of
// milliseconds, exact to the nanosecond; the payload is compacted. Decoding
// the result with UnmarshalJSON gives back an equal message for any message
// whose Timestamp is in UTC (as NewMessage makes it) and whose payload is
// compact (as every decoded payload is). It returns an error wrapping
// ErrInvalidMessage if the type is unknown or the payload is not JSON.
func (m *Message) MarshalJSON() ([]byte, error) {
	return m.AppendJSON(make([]byte, 0, 192+len(m.Payload)))
}

// spaceOutsideStrings reports whether v holds white space outside its JSON
// strings, which compacting would remove. White space inside strings (most
// text payloads have some) is kept by compacting, so such a payload is
// written as it is, after the cheaper validity check, instead of through
// json.Compact's buffer and scan.
func spaceOutsideStrings(v []byte) bool {
	for j := 0; j < len(v); j++ {
		switch v[j] {
		case ' ', '\t', '\n', '\r':
			return true
		case '"':
			for j++; j < len(v) && v[j] != '"'; j++ {
				if v[j] == '\\' {
					j++
				}
			}
		}
	}
	return false
}

// AppendJSON appends the JSON form of m (see MarshalJSON) to b.
func (m *Message) AppendJSON(b []byte) ([]byte, error) {
	if !m.Type.Valid() {
		return b, fmt.Errorf("%w: unknown type %d", ErrInvalidMessage, uint8(m.Type))
	}
	b = append(b, `{"id":`...)
	b = appendString(b, m.ID)
	b = append(b, `,"type":"`...)
	b = append(b, typeNames[m.Type]...)
	b = append(b, '"')
	b = appendField(b, "sender", m.Sender)
	b = appendField(b, "recipient", m.Recipient)
	b = appendField(b, "topic", m.Topic)
	b = appendField(b, "request_id", m.RequestID)
	b = appendField(b, "correlation_id", m.CorrelationID)
	if len(m.Payload) > 0 {
		b = append(b, `,"payload":`...)
		if spaceOutsideStrings(m.Payload) {
			var buf bytes.Buffer
			if err := json.Compact(&buf, m.Payload); err != nil {
				return b, fmt.Errorf("%w: payload is not JSON: %w", ErrInvalidMessage, err)
			}
			b = append(b, buf.Bytes()...)
		} else {
			if !m.payloadChecked() && !jsonvalid.Valid(m.Payload) {
				return b, fmt.Errorf("%w: payload is not JSON", ErrInvalidMessage)
			}
			b = append(b, m.Payload...)
		}
	}
	b = append(b, `,"priority":`...)
	b = strconv.AppendUint(b, uint64(m.Priority), 10)
	if !m.Timestamp.IsZero() {
		b = append(b, `,"timestamp":"`...)
		b = m.Timestamp.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if m.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(m.Attempts), 10)
	}
	if m.RequiresAck {
		b = append(b, `,"requires_ack":true`...)
	}
	if m.Redelivered {
		b = append(b, `,"redelivered":true`...)
	}
	if m.TTL != 0 {
		b = append(b, `,"ttl_ms":`...)
		b = appendMillis(b, m.TTL)
	}
	if len(m.Metadata) > 0 {
		b = append(b, `,"metadata":{`...)
		keys := make([]string, 0, len(m.Metadata))
		for k := range m.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, m.Metadata[k])
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// UnmarshalJSON decodes the form MarshalJSON writes. A missing priority means
// DefaultPriority; unknown fields are ignored so that newer senders can add
// fields. Errors wrap ErrInvalidMessage. It does not run Validate.
func (m *Message) UnmarshalJSON(data []byte) error {
	if m.unmarshalFast(data) {
		return nil
	}
	return m.unmarshalSlow(data)
}

// unmarshalSlow is UnmarshalJSON by way of encoding/json: the reference that
// unmarshalFast must match, and the decoder for everything it leaves out.
func (m *Message) unmarshalSlow(data []byte) error {
	var w wireMessage
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	ttl, err := parseMillis(w.TTL.String())
	if err != nil {
		return err
	}
	prio := uint8(DefaultPriority)
	if w.Priority != nil {
		prio = *w.Priority
	}
	payload := w.Payload
	if bytes.ContainsAny(payload, " \t\r\n") {
		var buf bytes.Buffer
		_ = json.Compact(&buf, payload) // json.Unmarshal validated it
		payload = buf.Bytes()
	}
	if len(w.Metadata) == 0 {
		w.Metadata = nil
	}
	*m = Message{
		ID:            w.ID,
		Type:          w.Type,
		Sender:        w.Sender,
		Recipient:     w.Recipient,
		Topic:         w.Topic,
		RequestID:     w.RequestID,
		CorrelationID: w.CorrelationID,
		Payload:       payload,
		Priority:      prio,
		Timestamp:     w.Timestamp,
		Attempts:      w.Attempts,
		RequiresAck:   w.RequiresAck,
		Redelivered:   w.Redelivered,
		TTL:           ttl,
		Metadata:      w.Metadata,
	}
	if !m.Type.Valid() {
		return fmt.Errorf("%w: missing type", ErrInvalidMessage)
	}
	if len(payload) > 0 {
		m.markPayloadChecked()
	}
	return nil
}

func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does, so the output always decodes.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' { // valid JSON, but not in JavaScript
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendMillis appends d as an exact decimal number of milliseconds.
func appendMillis(b []byte, d time.Duration) []byte {
	ns := uint64(d) // the magnitude is taken unsigned, so MinInt64 has one
	if d < 0 {
		b = append(b, '-')
		ns = -ns
	}
	b = strconv.AppendUint(b, ns/1e6, 10)
	if frac := ns % 1e6; frac != 0 {
		s := strconv.FormatUint(frac+1e6, 10)[1:] // six digits, zero-padded
		b = append(b, '.')
		b = append(b, strings.TrimRight(s, "0")...)
	}
	return b
}

// parseMillis parses a decimal number of milliseconds, exactly, into a
// duration. Empty means zero.
func parseMillis(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	in := s
	bad := func(why string) (time.Duration, error) {
		return 0, fmt.Errorf("%w: ttl_ms %q: %s", ErrInvalidMessage, in, why)
	}
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || strings.ContainsAny(whole, "eE+") || strings.ContainsAny(frac, "eE+-") {
		return bad("want a plain decimal number")
	}
	if len(frac) > 6 {
		if strings.TrimRight(frac[6:], "0") != "" {
			return bad("finer than a nanosecond")
		}
		frac = frac[:6]
	}
	// The magnitude is computed unsigned: it may be up to 1<<63 ns when
	// negative, one more than when positive, as appendMillis writes them.
	const maxNs = 1<<63 - 1
	ms, err := strconv.ParseUint(whole, 10, 64)
	if err != nil || ms > (maxNs+1)/1_000_000 {
		return bad("out of range")
	}
	ns := ms * 1e6
	if frac != "" {
		f, err := strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
		if err != nil {
			return bad("want a plain decimal number")
		}
		ns += f
	}
	if limit := uint64(maxNs); ns > limit && !(neg && ns == limit+1) {
		return bad("out of range")
	}
	if neg {
		return time.Duration(-int64(ns)), nil // -(1<<63) wraps to MinInt64, as wanted
	}
	return time.Duration(ns), nil
}
