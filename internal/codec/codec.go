// Package codec is agentbus's one JSON policy, on top of jsontext
// (github.com/go-json-experiment/json/jsontext, the code that is becoming
// encoding/json/v2's): which syntax is accepted, how strings are written,
// and a pooled decoder for byte slices. The message envelope (actors) and
// the wire protocol (internal/protocol) read and write JSON only through it
// and jsontext, so both accept and write the same JSON. It holds one scanner
// of its own, for validity only, where jsontext measured too slow for every
// fresh message (valid.go).
//
// # Syntax accepted
//
// Exactly what encoding/json accepts (encoding/json.Valid): one RFC 8259
// value with optional white space around it; object names may repeat;
// strings may hold invalid UTF-8 and \u escapes of lone UTF-16 surrogates,
// which decode to U+FFFD as encoding/json decodes them; nesting is at most
// 10000 levels deep.
//
// # Strings written
//
// In their shortest form (RFC 8785, section 3.2.2.2), as jsontext writes
// them: '"' and '\' are escaped with a backslash, control characters as
// \b, \f, \n, \r, \t or \u00XX, and everything else, '<', '>', '&', U+2028
// and U+2029 included, is written as UTF-8. Invalid UTF-8 becomes U+FFFD.
// A frame therefore never holds a raw newline. JSON values that are not
// ours (a message's payload) are written as given, only compacted.
package codec

import (
	"bytes"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Valid reports whether data is one JSON value in the syntax accepted (see
// the package doc): it returns what encoding/json.Valid returns. It is safe
// for concurrent use, does not block and does not allocate; it neither
// keeps nor modifies data. (It is the package's own scanner, 2.5 times as
// fast as jsontext's: see valid.go.)
func Valid(data []byte) bool { return scanValid(data) }

// validJSONText is Valid by way of jsontext, the reference scanValid is
// checked against.
func validJSONText(data []byte) bool {
	return jsontext.Value(data).IsValid(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
}

// AppendString appends s to b as a JSON string, escaped as the package doc
// says, and returns the extended buffer. It is safe for concurrent use.
func AppendString[S ~string | ~[]byte](b []byte, s S) []byte {
	// The one error AppendQuote reports is invalid UTF-8, which it has
	// already replaced with U+FFFD.
	b, _ = jsontext.AppendQuote(b, s)
	return b
}

// AppendCompact appends the JSON value v to b without the white space
// between its tokens, if v is valid (see Valid): strings and numbers are
// kept byte for byte, so the result is what encoding/json.Compact makes of
// v. Otherwise it returns b as it was and the syntax error. It is safe for
// concurrent use and does not modify v.
func AppendCompact(b, v []byte) ([]byte, error) {
	out, err := jsontext.AppendFormat(b, v, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true),
		jsontext.PreserveRawStrings(true))
	if err != nil {
		return b, err
	}
	return out, nil
}

// AppendFormatted appends the JSON value v to b without the white space
// between its tokens and with its strings written as the package doc says,
// if v is valid (see Valid). Otherwise it returns b as it was and the
// syntax error. It is for JSON of ours made by another encoder (such as
// encoding/json, which escapes '<', '>' and '&'), so that what is sent
// follows one policy. It is safe for concurrent use and does not modify v.
func AppendFormatted(b, v []byte) ([]byte, error) {
	out, err := jsontext.AppendFormat(b, v, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if err != nil {
		return b, err
	}
	return out, nil
}

// AppendCompactFrom reads the next JSON value of dec and appends it to b
// without the white space between its tokens, each token as it was read:
// what AppendCompact makes of the value (a value with no such white space is
// copied as it was read). It returns the decoder's syntax error, if any,
// with b as it was.
func AppendCompactFrom(dec *jsontext.Decoder, b []byte) ([]byte, error) {
	out, err := appendCompactFrom(dec, b)
	if err != nil {
		return b, err
	}
	return out, nil
}

func appendCompactFrom(dec *jsontext.Decoder, b []byte) ([]byte, error) {
	// The value is read whole and copied when it has no white space between
	// its tokens, which is what machine-written JSON is. Read token by token
	// it was 14 % of the daemon's CPU in BenchmarkCrossProcess/bus-stream;
	// read whole, protocol's BenchmarkDecode went from 3.9 to 3.6 µs a frame
	// (docs/performance.md, "Across processes").
	v, err := dec.ReadValue()
	if err != nil {
		return b, err
	}
	if !hasLayout(v) {
		return append(b, v...), nil
	}
	return AppendCompact(b, v)
}

// hasLayout reports whether v, a valid JSON value, has white space outside
// its strings.
func hasLayout(v []byte) bool {
	for i := 0; i < len(v); {
		switch v[i] {
		case '"':
			if i = scanString(v, i+1); i < 0 {
				return true // not valid after all: let AppendCompact say why
			}
		case ' ', '\t', '\n', '\r':
			return true
		default:
			i++
		}
	}
	return false
}

// AppendText appends the text of the JSON string v, as a Decoder read it
// (quotes included), to b. Escapes are decoded; invalid UTF-8 and lone
// surrogates become U+FFFD, as encoding/json decodes them.
func AppendText(b []byte, v jsontext.Value) []byte {
	if len(v) >= 2 {
		// Most strings have no escape and are valid UTF-8: their text is
		// what is between the quotes.
		if text := v[1 : len(v)-1]; bytes.IndexByte(text, '\\') < 0 && utf8.Valid(text) {
			return append(b, text...)
		}
	}
	// v has passed the decoder: the only errors left to report are invalid
	// UTF-8 and surrogates, which AppendUnquote has replaced with U+FFFD.
	b, _ = jsontext.AppendUnquote(b, v)
	return b
}

// Describe returns the JSON value v as an error message shows it: "an
// object", "an array", or its text, cut after 40 bytes.
func Describe(v jsontext.Value) string {
	const max = 40
	switch v.Kind() {
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	if len(v) > max {
		return string(v[:max]) + "…"
	}
	return string(v)
}

// Match returns the one of names that the object name v (quoted, as a
// Decoder read it) selects, as encoding/json matches a name to a struct
// field: the name equal to v's text, or else the first equal to it under
// Unicode case folding (strings.EqualFold); or -1 if none does.
func Match(v jsontext.Value, names ...string) int {
	var scratch [64]byte
	key := string(AppendText(scratch[:0], v))
	for i, n := range names {
		if key == n {
			return i
		}
	}
	for i, n := range names {
		if strings.EqualFold(key, n) {
			return i
		}
	}
	return -1
}

// ValidNumber reports whether s is exactly one JSON number, with no white
// space around it.
func ValidNumber[S ~string | ~[]byte](s S) bool {
	// A JSON number starts with '-' or a digit and ends with a digit: then
	// it has no white space around it, and Valid says whether it is one.
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	return len(s) > 0 && (s[0] == '-' || digit(s[0])) && digit(s[len(s)-1]) && Valid([]byte(s))
}

// Decoder is a jsontext.Decoder that reads a byte slice in the syntax
// accepted (see the package doc), taken from a pool: decoding a frame or a
// message allocates no decoder. A Decoder is not safe for concurrent use.
type Decoder struct {
	jsontext.Decoder
	in bytes.Buffer // the input; jsontext reads a bytes.Buffer in place
}

var decoders = sync.Pool{New: func() any { return new(Decoder) }}

// NewDecoder returns a Decoder reading data, which it neither copies nor
// modifies; data must not change until Release. Call Release when done.
func NewDecoder(data []byte) *Decoder {
	d := decoders.Get().(*Decoder)
	d.in = *bytes.NewBuffer(data)
	d.Reset(&d.in, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	return d
}

// Release returns d to the pool; neither d nor any value it read may be
// used afterwards.
func (d *Decoder) Release() {
	d.in = bytes.Buffer{}
	d.Reset(&d.in) // drops the decoder's reference to the input
	decoders.Put(d)
}
