package actors

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/descartes/agentbus/internal/codec"
)

// MarshalJSON encodes m as one JSON object, with no newline inside it:
//
//	{"id":"…","type":"direct","sender":"a","recipient":"b","payload":{…},
//	 "priority":50,"timestamp":"2026-11-27T10:00:00.123456789Z","ttl_ms":1500}
//
// Empty fields are left out; priority is always present. The type is its wire
// name; timestamp is RFC 3339 with nanoseconds; ttl_ms is a decimal number of
// milliseconds, exact to the nanosecond; metadata keys are sorted; strings
// are escaped as internal/codec's package doc says (only '"', '\' and
// control characters); the payload is compacted and otherwise written as
// it is. Decoding the result with UnmarshalJSON gives back an equal message
// for any message whose Timestamp is in UTC (as NewMessage makes it) and
// whose payload is compact (as every decoded payload is). It returns an
// error wrapping ErrInvalidMessage if the type is unknown or the payload is
// not JSON. It does not modify m, so it is safe to call concurrently on one
// message.
func (m *Message) MarshalJSON() ([]byte, error) {
	return m.AppendJSON(make([]byte, 0, 192+len(m.Payload)))
}

// AppendJSON appends the JSON form of m (see MarshalJSON) to b. On error it
// returns b as it was.
//
// It is the one hand-written JSON encoder of agentbus, kept because it is
// measurably faster than writing the same tokens through a jsontext.Encoder
// (see docs/performance.md, "JSON codec"); it writes every string with
// codec.AppendString and checks and compacts the payload with
// codec.AppendCompact, so it holds no scanner and no escaper of its own.
func (m *Message) AppendJSON(b []byte) ([]byte, error) {
	if !m.Type.Valid() {
		return b, fmt.Errorf("%w: unknown type %d", ErrInvalidMessage, uint8(m.Type))
	}
	start := len(b)
	b = append(b, `{"id":`...)
	b = codec.AppendString(b, m.ID)
	b = append(b, `,"type":"`...)
	b = append(b, typeNames[m.Type]...)
	b = append(b, '"')
	b = appendField(b, `,"sender":`, m.Sender)
	b = appendField(b, `,"recipient":`, m.Recipient)
	b = appendField(b, `,"topic":`, m.Topic)
	b = appendField(b, `,"request_id":`, m.RequestID)
	b = appendField(b, `,"correlation_id":`, m.CorrelationID)
	if len(m.Payload) > 0 {
		b = append(b, `,"payload":`...)
		if m.payloadCompact() {
			b = append(b, m.Payload...)
		} else {
			var err error
			if b, err = codec.AppendCompact(b, m.Payload); err != nil {
				return b[:start], fmt.Errorf("%w: payload is not JSON: %w", ErrInvalidMessage, err)
			}
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
			b = codec.AppendString(b, k)
			b = append(b, ':')
			b = codec.AppendString(b, m.Metadata[k])
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

// appendField appends key and the JSON string s, unless s is empty.
func appendField(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return codec.AppendString(append(b, key...), s)
}

// UnmarshalJSON decodes one message in the form MarshalJSON writes, read as
// encoding/json would read it into a struct with the fields' JSON names:
// white space anywhere between tokens; names matched exactly or else
// regardless of case; unknown fields ignored (so that newer senders can add
// fields); the last of a repeated field winning; null leaving a field as it
// was, except that a null priority is DefaultPriority and null metadata
// none. A missing priority means DefaultPriority; ttl_ms may also be a
// number in a string; an empty metadata object means none; the payload is
// compacted. Errors wrap ErrInvalidMessage and name the field. It does not
// run Validate; on error it leaves m unchanged.
func (m *Message) UnmarshalJSON(data []byte) error {
	d := codec.NewDecoder(data)
	defer d.Release()
	var out Message
	if err := out.decode(&d.Decoder, 0); err != nil {
		return err
	}
	if _, err := d.ReadToken(); err != io.EOF {
		return fmt.Errorf("%w: data after the message", ErrInvalidMessage)
	}
	*m = out
	return nil
}

// UnmarshalJSONFrom decodes the next JSON value of dec into m, as
// UnmarshalJSON does; it implements encoding/json/v2's UnmarshalerFrom.
func (m *Message) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	return m.decode(dec, 0)
}

// DecodeJSON decodes the next JSON value of dec into m, as
// UnmarshalJSONFrom does, except that a message naming no type (or a null
// one) gets typ, when typ is not zero. The wire protocol decodes the
// message of a frame so: its type defaults to the frame's op.
func (m *Message) DecodeJSON(dec *jsontext.Decoder, typ MessageType) error {
	return m.decode(dec, typ)
}

// The fields of the JSON form, in the order of fieldNames.
const (
	fieldID = iota
	fieldSender
	fieldRecipient
	fieldTopic
	fieldRequestID
	fieldCorrelationID
	fieldType
	fieldPayload
	fieldPriority
	fieldTimestamp
	fieldAttempts
	fieldRequiresAck
	fieldRedelivered
	fieldTTL
	fieldMetadata
)

// numText is the number of text fields, which come first.
const numText = fieldType

// fieldNames are the JSON names of the fields, for encoding/json's match
// regardless of case.
var fieldNames = [...]string{
	fieldID: "id", fieldSender: "sender", fieldRecipient: "recipient", fieldTopic: "topic",
	fieldRequestID: "request_id", fieldCorrelationID: "correlation_id", fieldType: "type",
	fieldPayload: "payload", fieldPriority: "priority", fieldTimestamp: "timestamp", fieldAttempts: "attempts",
	fieldRequiresAck: "requires_ack", fieldRedelivered: "redelivered", fieldTTL: "ttl_ms", fieldMetadata: "metadata",
}

// fieldOf returns the field the object name v (quoted, as read) selects, or
// -1 for an unknown field.
func fieldOf(v jsontext.Value) int {
	switch string(v) { // the exact names, as MarshalJSON writes them
	case `"id"`:
		return fieldID
	case `"type"`:
		return fieldType
	case `"sender"`:
		return fieldSender
	case `"recipient"`:
		return fieldRecipient
	case `"topic"`:
		return fieldTopic
	case `"request_id"`:
		return fieldRequestID
	case `"correlation_id"`:
		return fieldCorrelationID
	case `"payload"`:
		return fieldPayload
	case `"priority"`:
		return fieldPriority
	case `"timestamp"`:
		return fieldTimestamp
	case `"attempts"`:
		return fieldAttempts
	case `"requires_ack"`:
		return fieldRequiresAck
	case `"redelivered"`:
		return fieldRedelivered
	case `"ttl_ms"`:
		return fieldTTL
	case `"metadata"`:
		return fieldMetadata
	}
	return codec.Match(v, fieldNames[:]...)
}

// span is a run of a decoder's buffer, from off to end.
type span struct{ off, end int32 }

// metaSpan is one metadata entry in a decoder's buffer.
type metaSpan struct{ k, v span }

// fields holds what a message decode has read so far, but for the text of
// the string fields, the metadata entries and the compacted payload: those
// are gathered in a buffer local to decode (on the stack unless it outgrows
// its scratch array, which is why it is not in this struct) and end up in
// one allocation.
type fields struct {
	text        [numText]span
	payload     span
	ttl         span // the text of ttl_ms, parsed at the end
	hasPay      bool
	hasTTL      bool
	typ         MessageType
	prio        uint8
	ack         bool
	redelivered bool
	attempts    int
	ts          time.Time
	err         error // the first error in a field's value; decoding goes on to the end
}

// fail records that the value v of field is wrong, unless an earlier field
// was.
func (f *fields) fail(field int, v jsontext.Value, format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf("%w: %s: %s, got %s", ErrInvalidMessage, fieldNames[field], fmt.Sprintf(format, args...), codec.Describe(v))
	}
}

// syntaxError wraps an error of the JSON syntax.
func syntaxError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
}

// decode reads one message from dec into m (see UnmarshalJSON); typ, if not
// zero, is the type of a message that names none. An error in a field's
// value is returned once the whole message is read, so that dec is past
// it; a syntax error is returned at once. On error m is unchanged.
func (m *Message) decode(dec *jsontext.Decoder, typ MessageType) error {
	var (
		scratch [384]byte
		buf     = scratch[:0]
		metaArr [8]metaSpan
		meta    = metaArr[:0]
		f       = fields{prio: DefaultPriority}
	)
	if k := dec.PeekKind(); k != '{' {
		v, err := dec.ReadValue()
		if err != nil {
			return syntaxError(err)
		}
		return fmt.Errorf("%w: want an object, got %s", ErrInvalidMessage, codec.Describe(v))
	}
	if _, err := dec.ReadToken(); err != nil {
		return syntaxError(err)
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return syntaxError(err)
		}
		switch field := fieldOf(name); field {
		case -1: // unknown
			err = dec.SkipValue()
		case fieldMetadata:
			buf, meta, err = f.metadata(dec, buf, meta)
		default:
			buf, err = f.field(dec, field, buf)
		}
		if err != nil {
			return syntaxError(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return syntaxError(err)
	}
	if f.err != nil {
		return f.err
	}
	return f.finish(m, typ, buf, meta)
}

// field reads the value of field (not metadata) and appends its text, if it
// keeps any, to buf. It returns only syntax errors; it records the others
// (see fail).
func (f *fields) field(dec *jsontext.Decoder, field int, buf []byte) ([]byte, error) {
	if field == fieldPayload {
		// Compacted as it is read, null included.
		start := len(buf)
		buf, err := codec.AppendCompactFrom(dec, buf)
		f.payload, f.hasPay = span{int32(start), int32(len(buf))}, true
		return buf, err
	}
	v, err := dec.ReadValue()
	if err != nil {
		return buf, err
	}
	k := v.Kind()
	if k == 'n' { // null leaves a field as it was, as encoding/json does
		if field == fieldPriority {
			f.prio = DefaultPriority
		}
		return buf, nil
	}
	switch field {
	case fieldType:
		if k != '"' {
			f.fail(field, v, "want a string")
			break
		}
		var name [16]byte
		if t := lookupType(codec.AppendText(name[:0], v)); t != 0 {
			f.typ = t
		} else {
			f.fail(field, v, "want a message type")
		}
	case fieldPriority:
		if n, err := strconv.ParseUint(transient(v), 10, 64); k != '0' || err != nil || n > 255 {
			f.fail(field, v, "want an integer from 0 to 100")
		} else {
			f.prio = uint8(n)
		}
	case fieldTimestamp:
		// The call encoding/json makes, on the same bytes: escapes are not
		// decoded.
		var ts time.Time
		if err := ts.UnmarshalJSON(v); err != nil {
			f.fail(field, v, "want an RFC 3339 time in a string")
		} else {
			f.ts = ts
		}
	case fieldAttempts:
		if n, err := strconv.ParseInt(transient(v), 10, 64); k != '0' || err != nil || int64(int(n)) != n {
			f.fail(field, v, "want an integer")
		} else {
			f.attempts = int(n)
		}
	case fieldRequiresAck, fieldRedelivered:
		switch {
		case k != 't' && k != 'f':
			f.fail(field, v, "want true or false")
		case field == fieldRequiresAck:
			f.ack = k == 't'
		default:
			f.redelivered = k == 't'
		}
	case fieldTTL:
		switch {
		case k == '0':
			buf, f.ttl = appendRaw(buf, v)
		case k == '"' && codec.ValidNumber(codec.AppendText(nil, v)): // a number in a string
			buf, f.ttl = appendText(buf, v)
		default:
			f.fail(field, v, "want a number of milliseconds")
			return buf, nil
		}
		f.hasTTL = true
	default: // the text fields
		if k != '"' {
			f.fail(field, v, "want a string")
			break
		}
		buf, f.text[field] = appendText(buf, v)
	}
	return buf, nil
}

// metadata reads the value of the metadata field: an object of strings
// (null values meaning ""), merged into the entries of earlier metadata
// fields, or null, which clears them. It appends the text to buf and the
// entries to meta.
func (f *fields) metadata(dec *jsontext.Decoder, buf []byte, meta []metaSpan) ([]byte, []metaSpan, error) {
	switch dec.PeekKind() {
	case 'n':
		_, err := dec.ReadValue()
		return buf, meta[:0], err
	case '{':
	default:
		v, err := dec.ReadValue()
		if err == nil {
			f.fail(fieldMetadata, v, "want an object of strings")
		}
		return buf, meta, err
	}
	if _, err := dec.ReadToken(); err != nil {
		return buf, meta, err
	}
	for dec.PeekKind() != '}' {
		k, err := dec.ReadValue()
		if err != nil {
			return buf, meta, err
		}
		var e metaSpan
		buf, e.k = appendText(buf, k)
		v, err := dec.ReadValue()
		if err != nil {
			return buf, meta, err
		}
		switch v.Kind() {
		case '"':
			buf, e.v = appendText(buf, v)
		case 'n':
			e.v = span{int32(len(buf)), int32(len(buf))}
		default:
			f.fail(fieldMetadata, v, "want a string for %q", string(buf[e.k.off:e.k.end]))
		}
		meta = append(meta, e)
	}
	_, err := dec.ReadToken()
	return buf, meta, err
}

// appendText appends the text of the JSON string v to buf.
func appendText(buf []byte, v jsontext.Value) ([]byte, span) {
	start := len(buf)
	buf = codec.AppendText(buf, v)
	return buf, span{int32(start), int32(len(buf))}
}

// appendRaw appends v as it is to buf.
func appendRaw(buf []byte, v jsontext.Value) ([]byte, span) {
	start := len(buf)
	buf = append(buf, v...)
	return buf, span{int32(start), int32(len(buf))}
}

// lookupType returns the type whose wire name is name, or 0.
func lookupType(name []byte) MessageType {
	for t := TypeDirect; t < typeEnd; t++ {
		if typeNames[t] == string(name) {
			return t
		}
	}
	return 0
}

// transient returns v as a string without copying it, for a parse that
// keeps nothing of it.
func transient(v []byte) string { return unsafe.String(unsafe.SliceData(v), len(v)) }

// finish builds the message that was read into m, from the text in buf and
// the metadata entries in meta.
func (f *fields) finish(m *Message, typ MessageType, buf []byte, meta []metaSpan) error {
	if f.typ == 0 {
		if f.typ = typ; typ == 0 {
			return fmt.Errorf("%w: missing type", ErrInvalidMessage)
		}
	}
	var ttl time.Duration
	if f.hasTTL {
		var err error
		if ttl, err = parseMillis(transient(buf[f.ttl.off:f.ttl.end])); err != nil {
			return err
		}
	}
	// One allocation holds the buffer: the payload (its capacity ends with
	// it, so that appending to it cannot overwrite the text) and the text.
	var block []byte
	if len(buf) > 0 {
		block = slices.Clone(buf)
	}
	str := func(s span) string {
		if s.off == s.end {
			return ""
		}
		return unsafe.String(&block[s.off], s.end-s.off)
	}
	var md map[string]string
	if len(meta) > 0 {
		md = make(map[string]string, len(meta))
		for _, e := range meta {
			md[str(e.k)] = str(e.v)
		}
	}
	*m = Message{
		ID:            str(f.text[fieldID]),
		Type:          f.typ,
		Sender:        str(f.text[fieldSender]),
		Recipient:     str(f.text[fieldRecipient]),
		Topic:         str(f.text[fieldTopic]),
		RequestID:     str(f.text[fieldRequestID]),
		CorrelationID: str(f.text[fieldCorrelationID]),
		Priority:      f.prio,
		Timestamp:     f.ts,
		Attempts:      f.attempts,
		RequiresAck:   f.ack,
		Redelivered:   f.redelivered,
		TTL:           ttl,
		Metadata:      md,
	}
	if f.hasPay {
		m.Payload = block[f.payload.off:f.payload.end:f.payload.end]
		m.markPayloadChecked(true)
	}
	return nil
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
// duration. s is a JSON number.
func parseMillis(s string) (time.Duration, error) {
	in := s
	bad := func(why string) (time.Duration, error) {
		// A copy: s may be a decoder's buffer (see transient).
		return 0, fmt.Errorf("%w: ttl_ms %q: %s", ErrInvalidMessage, strings.Clone(in), why)
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
