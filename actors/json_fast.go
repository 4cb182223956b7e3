package actors

import (
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/descartes/agentbus/internal/jsonvalid"
)

// The text fields of Message that the fast decoder collects, in the order
// of its strs.
const (
	strID = iota
	strSender
	strRecipient
	strTopic
	strRequestID
	strCorrelationID
	numStrs
)

// The fields of the JSON form, as bits of the set of fields seen.
const (
	seenID uint16 = 1 << iota
	seenType
	seenSender
	seenRecipient
	seenTopic
	seenRequestID
	seenCorrelationID
	seenPayload
	seenPriority
	seenTimestamp
	seenAttempts
	seenRequiresAck
	seenRedelivered
	seenTTL
	seenMetadata
)

// maxFastDepth bounds the nesting of a value the fast path skips or keeps
// as the payload: with the message object around it, encoding/json refuses
// more than 10000 levels, and jsonvalid.Valid, which sees the value alone,
// would accept one more.
const maxFastDepth = 9000

// textSpan is a decoded string held in the fast decoder's buf, from off to
// end.
type textSpan struct{ off, end int32 }

// metaSpan is one metadata entry held in the fast decoder's buf.
type metaSpan struct{ k, v textSpan }

// unmarshalFast decodes data into m exactly as unmarshalSlow does, if data
// is in the form it handles, and reports whether it did. Otherwise it returns
// false, leaving m unchanged, and unmarshalSlow must decode data (and return
// the error, if there is one).
//
// The fast path handles a JSON object whose keys are lower-case ASCII without
// escapes (encoding/json matches keys regardless of case, and folds some
// non-ASCII letters to ASCII), with no field of Message twice, whose fields
// have the JSON types Message expects, or null, and decode without error. It
// checks the syntax as it goes, and has jsonvalid.Valid check the payload and
// the values of unknown fields. It falls back on everything else, and also
// on a \u escape of a UTF-16 surrogate or invalid UTF-8 in a string it
// decodes, a priority or attempts that is not a plain integer in range,
// ttl_ms as a string, a metadata value that is neither a string nor null,
// and a payload or unknown value nested more than maxFastDepth levels.
func (m *Message) unmarshalFast(data []byte) bool {
	i := skipSpace(data, 0)
	if byteAt(data, i) != '{' {
		return false
	}
	// The decoded text of every string field and metadata entry is gathered
	// in buf, on the stack unless it outgrows scratch, and ends up in one
	// allocation with the payload.
	var (
		scratch     [384]byte
		buf         = scratch[:0]
		strs        [numStrs]textSpan
		metaArr     [8]metaSpan
		meta        = metaArr[:0]
		seen        uint16
		typ         MessageType
		payload     []byte // the raw value, in data
		prio        = uint8(DefaultPriority)
		ts          time.Time
		attempts    int
		requiresAck bool
		redelivered bool
		ttl         time.Duration
		hasMeta     bool
	)
	i = skipSpace(data, i+1)
	if byteAt(data, i) != '"' {
		return false // not a key: an empty object has no type
	}
	for {
		// A key: data[i] is its opening quote.
		start := i + 1
		for i = start; ; i++ {
			if i >= len(data) {
				return false
			}
			c := data[i]
			if c == '"' {
				break
			}
			if c == '\\' || c < 0x20 || c >= utf8.RuneSelf || c-'A' < 26 {
				return false
			}
		}
		key := data[start:i]
		if i = skipSpace(data, i+1); byteAt(data, i) != ':' {
			return false
		}
		i = skipSpace(data, i+1) // at the value
		c := byteAt(data, i)
		isNull := hasLiteral(data, i, "null")
		var bit uint16
		switch string(key) {
		case "id":
			bit = seenID
			buf, i = appendText(buf, &strs[strID], data, i)
		case "sender":
			bit = seenSender
			buf, i = appendText(buf, &strs[strSender], data, i)
		case "recipient":
			bit = seenRecipient
			buf, i = appendText(buf, &strs[strRecipient], data, i)
		case "topic":
			bit = seenTopic
			buf, i = appendText(buf, &strs[strTopic], data, i)
		case "request_id":
			bit = seenRequestID
			buf, i = appendText(buf, &strs[strRequestID], data, i)
		case "correlation_id":
			bit = seenCorrelationID
			buf, i = appendText(buf, &strs[strCorrelationID], data, i)
		case "type":
			bit = seenType
			if isNull {
				i += 4
				break
			}
			var name textSpan
			if buf, i = appendText(buf, &name, data, i); i < 0 {
				return false
			}
			typ = lookupType(buf[name.off:name.end])
			buf = buf[:name.off]
			if typ == 0 {
				return false
			}
		case "payload":
			bit = seenPayload
			end := skipValue(data, i)
			if end < 0 || !jsonvalid.Valid(data[i:end]) {
				return false
			}
			payload = data[i:end]
			i = end
		case "priority":
			bit = seenPriority
			if isNull {
				i += 4
				break
			}
			end := skipNumber(data, i)
			v, ok := plainUint(data[i:end], 3)
			if !ok || v > 255 {
				return false
			}
			prio = uint8(v)
			i = end
		case "timestamp":
			bit = seenTimestamp
			if isNull {
				i += 4
				break
			}
			end, _, _ := scanString(data, i)
			// The same call encoding/json makes, on the same bytes.
			if end < 0 || ts.UnmarshalJSON(data[i:end]) != nil {
				return false
			}
			i = end
		case "attempts":
			bit = seenAttempts
			if isNull {
				i += 4
				break
			}
			end := skipNumber(data, i)
			num, neg := data[i:end], c == '-'
			if neg {
				num = num[1:]
			}
			v, ok := plainUint(num, 18)
			if !ok {
				return false
			}
			if attempts = int(v); neg {
				attempts = -attempts
			}
			i = end
		case "requires_ack":
			bit = seenRequiresAck
			if i = boolAt(data, i, &requiresAck); i < 0 {
				return false
			}
		case "redelivered":
			bit = seenRedelivered
			if i = boolAt(data, i, &redelivered); i < 0 {
				return false
			}
		case "ttl_ms":
			bit = seenTTL
			if isNull {
				i += 4
				break
			}
			end := skipNumber(data, i)
			num := data[i:end]
			if !validNumber(num) {
				return false
			}
			if ms, ok := plainUint(num, 12); ok { // the usual whole milliseconds
				ttl = time.Duration(ms) * time.Millisecond
			} else {
				v, err := parseMillis(unsafe.String(&num[0], len(num))) // not retained
				if err != nil {
					return false
				}
				ttl = v
			}
			i = end
		case "metadata":
			bit = seenMetadata
			if isNull {
				i += 4
				break
			}
			if c != '{' {
				return false
			}
			if buf, meta, i = appendMetadata(buf, meta, data, i); i < 0 {
				return false
			}
			hasMeta = len(meta) > 0
		default: // an unknown field, which encoding/json ignores
			end := skipValue(data, i)
			if end < 0 || !jsonvalid.Valid(data[i:end]) {
				return false
			}
			i = end
		}
		if i < 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
		i = skipSpace(data, i)
		if c := byteAt(data, i); c == '}' {
			break
		} else if c != ',' {
			return false
		}
		if i = skipSpace(data, i+1); byteAt(data, i) != '"' {
			return false
		}
	}
	if skipSpace(data, i+1) != len(data) || typ == 0 {
		return false
	}

	// One allocation holds the payload, compacted, followed by the text.
	// The payload's capacity ends where the text begins, so that appending to
	// it cannot overwrite the text.
	var text string
	if n := len(payload) + len(buf); n > 0 {
		block := appendCompact(make([]byte, 0, n), payload)
		if payload != nil {
			payload = block[:len(block):len(block)]
		}
		if len(buf) > 0 {
			rest := block[len(block):cap(block)]
			copy(rest, buf)
			text = unsafe.String(&rest[0], len(buf))
		}
	}
	str := func(s textSpan) string { return text[s.off:s.end] }
	var md map[string]string
	if hasMeta {
		md = make(map[string]string, len(meta))
		for _, e := range meta {
			md[str(e.k)] = str(e.v)
		}
	}
	*m = Message{
		ID:            str(strs[strID]),
		Type:          typ,
		Sender:        str(strs[strSender]),
		Recipient:     str(strs[strRecipient]),
		Topic:         str(strs[strTopic]),
		RequestID:     str(strs[strRequestID]),
		CorrelationID: str(strs[strCorrelationID]),
		Payload:       payload,
		Priority:      prio,
		Timestamp:     ts,
		Attempts:      attempts,
		RequiresAck:   requiresAck,
		Redelivered:   redelivered,
		TTL:           ttl,
		Metadata:      md,
	}
	if len(payload) > 0 {
		m.markPayloadChecked()
	}
	return true
}

// boolAt sets *v from the literal true or false at data[i] (null leaves it)
// and returns the index past it, or -1 for anything else.
func boolAt(data []byte, i int, v *bool) int {
	switch {
	case hasLiteral(data, i, "null"):
		return i + 4
	case hasLiteral(data, i, "true"):
		*v = true
		return i + 4
	case hasLiteral(data, i, "false"):
		return i + 5
	}
	return -1
}

// appendText appends the decoded string at data[i] to buf and sets *s to
// it; for null, it leaves both as they are. It returns buf and the index past
// the value, or -1 if the value is neither or the fast path does not handle
// the string.
func appendText(buf []byte, s *textSpan, data []byte, i int) ([]byte, int) {
	if hasLiteral(data, i, "null") {
		return buf, i + 4
	}
	end, esc, high := scanString(data, i)
	if end < 0 {
		return buf, -1
	}
	raw := data[i+1 : end-1]
	// encoding/json replaces invalid UTF-8 with U+FFFD; leave that to it.
	// Escapes are ASCII, so they do not change which bytes are valid.
	if high && !utf8.Valid(raw) {
		return buf, -1
	}
	off := len(buf)
	if !esc {
		buf = append(buf, raw...)
	} else if buf = appendUnescaped(buf, raw); buf == nil {
		return buf, -1
	}
	*s = textSpan{int32(off), int32(len(buf))}
	return buf, end
}

// appendUnescaped appends the decoded form of raw, the valid contents of a
// JSON string, to buf. It returns nil for a \u escape of a UTF-16 surrogate,
// which it leaves to encoding/json.
func appendUnescaped(buf, raw []byte) []byte {
	for j := 0; j < len(raw); j++ {
		c := raw[j]
		if c != '\\' {
			buf = append(buf, c)
			continue
		}
		j++
		switch raw[j] {
		case 'b':
			c = '\b'
		case 'f':
			c = '\f'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 't':
			c = '\t'
		case 'u':
			var r rune
			for _, h := range raw[j+1 : j+5] {
				r = r<<4 | rune(unhex(h))
			}
			if r >= 0xd800 && r < 0xe000 {
				return nil
			}
			buf = utf8.AppendRune(buf, r)
			j += 4
			continue
		default: // '"', '\\' and '/' stand for themselves
			c = raw[j]
		}
		buf = append(buf, c)
	}
	return buf
}

// unhex returns the value of the hexadecimal digit c.
func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// appendMetadata decodes the metadata object at data[i], appending its text
// to buf and its entries to meta. A null value means the empty string, as
// encoding/json decodes it into a map. It returns buf, meta and the index
// past the object, or -1 if the fast path does not handle it.
func appendMetadata(buf []byte, meta []metaSpan, data []byte, i int) ([]byte, []metaSpan, int) {
	i = skipSpace(data, i+1)
	if byteAt(data, i) == '}' {
		return buf, meta, i + 1
	}
	for {
		var e metaSpan
		if byteAt(data, i) != '"' {
			return buf, meta, -1
		}
		if buf, i = appendText(buf, &e.k, data, i); i < 0 {
			return buf, meta, -1
		}
		if i = skipSpace(data, i); byteAt(data, i) != ':' {
			return buf, meta, -1
		}
		i = skipSpace(data, i+1)                         // at the value
		e.v = textSpan{int32(len(buf)), int32(len(buf))} // what null leaves
		if buf, i = appendText(buf, &e.v, data, i); i < 0 {
			return buf, meta, -1
		}
		meta = append(meta, e)
		i = skipSpace(data, i)
		if c := byteAt(data, i); c == '}' {
			return buf, meta, i + 1
		} else if c != ',' {
			return buf, meta, -1
		}
		i = skipSpace(data, i+1)
	}
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

// plainUint returns the value of num if it is a JSON integer of 1 to
// maxDigits decimal digits, with no sign.
func plainUint(num []byte, maxDigits int) (uint64, bool) {
	if len(num) == 0 || len(num) > maxDigits || (num[0] == '0' && len(num) > 1) {
		return 0, false
	}
	var v uint64
	for _, c := range num {
		if c-'0' >= 10 {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}

// validNumber reports whether num is a JSON number.
func validNumber(num []byte) bool {
	j := 0
	if j < len(num) && num[j] == '-' {
		j++
	}
	switch {
	case j == len(num):
		return false
	case num[j] == '0':
		j++
	case num[j]-'1' < 9:
		for j < len(num) && num[j]-'0' < 10 {
			j++
		}
	default:
		return false
	}
	if j < len(num) && num[j] == '.' {
		j++
		d := j
		for j < len(num) && num[j]-'0' < 10 {
			j++
		}
		if j == d {
			return false
		}
	}
	if j < len(num) && num[j]|0x20 == 'e' {
		j++
		if j < len(num) && (num[j] == '+' || num[j] == '-') {
			j++
		}
		d := j
		for j < len(num) && num[j]-'0' < 10 {
			j++
		}
		if j == d {
			return false
		}
	}
	return j == len(num)
}

// appendCompact appends v, a valid JSON value or nothing, to dst without the
// whitespace outside its strings, as json.Compact does.
func appendCompact(dst, v []byte) []byte {
	start := 0
	for j := 0; j < len(v); j++ {
		switch v[j] {
		case ' ', '\t', '\n', '\r':
			dst = append(dst, v[start:j]...)
			start = j + 1
		case '"':
			j = skipString(v, j) - 1
		}
	}
	return append(dst, v[start:]...)
}

// byteAt returns data[i], or 0 if i is past the end.
func byteAt(data []byte, i int) byte {
	if i < len(data) {
		return data[i]
	}
	return 0
}

// hasLiteral reports whether data has lit at i.
func hasLiteral(data []byte, i int, lit string) bool {
	return len(data)-i >= len(lit) && string(data[i:i+len(lit)]) == lit
}

// skipSpace returns the index of the first non-whitespace byte at or after
// data[i], or len(data).
func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString checks the JSON string whose opening quote should be at data[i].
// It returns the index past its closing quote, or -1 if there is no valid
// string there, and whether the string has escapes and non-ASCII bytes.
func scanString(data []byte, i int) (end int, esc, high bool) {
	if byteAt(data, i) != '"' {
		return -1, false, false
	}
	for i++; i < len(data); i++ {
		for i < len(data) && plainByte[data[i]] {
			i++
		}
		if i == len(data) {
			break
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, esc, high
		case c == '\\':
			esc = true
			switch byteAt(data, i+1) {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if len(data)-i < 6 {
					return -1, false, false
				}
				for _, h := range data[i+2 : i+6] {
					if h-'0' >= 10 && h|0x20-'a' >= 6 {
						return -1, false, false
					}
				}
				i += 5
			default:
				return -1, false, false
			}
		case c < 0x20:
			return -1, false, false
		case c >= utf8.RuneSelf:
			high = true
		}
	}
	return -1, false, false
}

// plainByte tells the bytes that stand for themselves in a JSON string and
// are ASCII.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// skipString returns the index past the string whose opening quote is at
// data[i], or -1 if it has no closing quote. It does not check the string.
func skipString(data []byte, i int) int {
	for i++; i < len(data); i++ {
		switch data[i] {
		case '"':
			return i + 1
		case '\\':
			i++
		}
	}
	return -1
}

// skipNumber returns the index past the bytes that may belong to a number
// at data[i].
func skipNumber(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '-', '+', '.', 'e', 'E':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index past the value at data[i], which it does not
// check, or -1 if it finds no end to it within maxFastDepth levels.
func skipValue(data []byte, i int) int {
	switch byteAt(data, i) {
	case '"':
		return skipString(data, i)
	case '{', '[':
		depth := 0
		for ; i < len(data); i++ {
			switch data[i] {
			case '{', '[':
				if depth++; depth > maxFastDepth {
					return -1
				}
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			case '"':
				if i = skipString(data, i); i < 0 {
					return -1
				}
				i--
			}
		}
		return -1
	case 't', 'n':
		return min(i+4, len(data))
	case 'f':
		return min(i+5, len(data))
	default:
		return skipNumber(data, i)
	}
}
