package actors_test

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
)

// full returns a message with every field set.
func full() *actors.Message {
	return &actors.Message{
		ID:            "0192f1c4-7d2a-7000-8000-000000000001",
		Type:          actors.TypeRequest,
		Sender:        "planner",
		Recipient:     "coder",
		Topic:         "jobs.build",
		RequestID:     "req-9",
		CorrelationID: "conv-3",
		Payload:       json.RawMessage(`{"task":"build","deps":["a","b"],"n":1.5e3,"ok":true,"none":null}`),
		Priority:      0, // must survive: only a missing priority means 50
		Timestamp:     time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC),
		Attempts:      3,
		RequiresAck:   true,
		Redelivered:   true,
		TTL:           1500001 * time.Nanosecond,
		Metadata:      map[string]string{"traceparent": "00-abc-def-01", "b": "2", "a": ""},
	}
}

func roundTrip(t *testing.T, m *actors.Message) *actors.Message {
	t.Helper()
	b, err := json.Marshal(m)
	require.NoError(t, err)
	require.True(t, json.Valid(b), "invalid JSON: %s", b)
	var got actors.Message
	require.NoError(t, json.Unmarshal(b, &got), "decoding %s", b)
	return &got
}

func TestJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		give func(*actors.Message)
	}{
		{name: "every field"},
		{name: "minimal", give: func(m *actors.Message) { *m = actors.Message{Type: actors.TypeBroadcast, Priority: 50} }},
		{name: "no payload", give: func(m *actors.Message) { m.Payload = nil }},
		{name: "payload string", give: func(m *actors.Message) { m.Payload = json.RawMessage(`"just text"`) }},
		{name: "payload number", give: func(m *actors.Message) { m.Payload = json.RawMessage(`-0.5e-7`) }},
		{name: "payload null", give: func(m *actors.Message) { m.Payload = json.RawMessage(`null`) }},
		{name: "payload unicode", give: func(m *actors.Message) { m.Payload = json.RawMessage(`["\u2028","é","\ud83d\ude00"]`) }},
		{name: "priority 100", give: func(m *actors.Message) { m.Priority = 100 }},
		{name: "priority above the maximum", give: func(m *actors.Message) { m.Priority = 255 }},
		{name: "no timestamp", give: func(m *actors.Message) { m.Timestamp = time.Time{} }},
		{name: "whole-second timestamp", give: func(m *actors.Message) { m.Timestamp = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{name: "from NewMessage", give: func(m *actors.Message) {
			*m = *actors.NewMessage(actors.TypePublish, "a", json.RawMessage(`{}`)).WithTopic("x.y")
		}},
		{name: "negative attempts", give: func(m *actors.Message) { m.Attempts = -2 }},
		{name: "large attempts", give: func(m *actors.Message) { m.Attempts = math.MaxInt64 }},
		{name: "no metadata", give: func(m *actors.Message) { m.Metadata = nil }},
		{name: "every type", give: func(m *actors.Message) { m.Type = actors.TypeControl }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := full()
			if tt.give != nil {
				tt.give(m)
			}
			assert.Equal(t, exported(m), exported(roundTrip(t, m)))
		})
	}
}

func TestJSONRoundTripTTL(t *testing.T) {
	tests := []struct {
		give     time.Duration
		wantJSON string // the ttl_ms member, or "" for none
	}{
		{give: 0},
		{give: 1, wantJSON: `"ttl_ms":0.000001`},
		{give: 10, wantJSON: `"ttl_ms":0.00001`},
		{give: 999999, wantJSON: `"ttl_ms":0.999999`},
		{give: time.Millisecond, wantJSON: `"ttl_ms":1`},
		{give: 1500 * time.Microsecond, wantJSON: `"ttl_ms":1.5`},
		{give: 1500001, wantJSON: `"ttl_ms":1.500001`},
		{give: 1000001, wantJSON: `"ttl_ms":1.000001`},
		{give: time.Hour, wantJSON: `"ttl_ms":3600000`},
		{give: -time.Millisecond, wantJSON: `"ttl_ms":-1`},
		{give: -1, wantJSON: `"ttl_ms":-0.000001`},
		{give: -1500001, wantJSON: `"ttl_ms":-1.500001`},
		{give: math.MaxInt64, wantJSON: `"ttl_ms":9223372036854.775807`},
		{give: math.MaxInt64 - 1e6, wantJSON: `"ttl_ms":9223372036853.775807`},
		{give: math.MinInt64, wantJSON: `"ttl_ms":-9223372036854.775808`},
		{give: math.MinInt64 + 1, wantJSON: `"ttl_ms":-9223372036854.775807`},
	}
	for _, tt := range tests {
		t.Run(tt.give.String(), func(t *testing.T) {
			m := &actors.Message{Type: actors.TypeBroadcast, TTL: tt.give}
			b, err := json.Marshal(m)
			require.NoError(t, err)
			if tt.wantJSON == "" {
				assert.NotContains(t, string(b), "ttl_ms")
			} else {
				assert.Contains(t, string(b), ","+tt.wantJSON+"}")
			}
			assert.Equal(t, tt.give, roundTrip(t, m).TTL)
		})
	}
}

func TestJSONFormat(t *testing.T) {
	m := &actors.Message{
		ID:        "x",
		Type:      actors.TypeDirect,
		Sender:    "a",
		Recipient: "b",
		Payload:   json.RawMessage(`{"k":1}`),
		Priority:  50,
		Timestamp: time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC),
		TTL:       1500 * time.Millisecond,
		Metadata:  map[string]string{"z": "1", "a": "2"},
	}
	b, err := m.MarshalJSON()
	require.NoError(t, err)
	assert.Equal(t, `{"id":"x","type":"direct","sender":"a","recipient":"b","payload":{"k":1},"priority":50,`+
		`"timestamp":"2026-11-27T10:00:00.123456789Z","ttl_ms":1500,"metadata":{"a":"2","z":"1"}}`, string(b))

	b, err = (&actors.Message{Type: actors.TypeAck}).MarshalJSON()
	require.NoError(t, err)
	assert.Equal(t, `{"id":"","type":"ack","priority":0}`, string(b), "empty fields are left out, priority never")

	prefix := []byte("prefix:")
	b, err = m.AppendJSON(prefix)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(b), "prefix:{"), "AppendJSON appends: %s", b)
}

func TestJSONPayloadCompacted(t *testing.T) {
	spaced := json.RawMessage(" {\n\t\"a\" : [ 1 , 2 ],\r\n \"s\": \"keep  these  spaces\" } ")
	const compact = `{"a":[1,2],"s":"keep  these  spaces"}`

	m := &actors.Message{Type: actors.TypeBroadcast, Payload: spaced}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"payload":`+compact+`,`)

	var got actors.Message
	in := `{"type":"broadcast","payload":` + string(spaced) + `}`
	require.NoError(t, json.Unmarshal([]byte(in), &got))
	assert.Equal(t, compact, string(got.Payload))
}

func TestJSONDecodeDefaults(t *testing.T) {
	tests := []struct {
		name string
		give string
		want actors.Message
	}{
		{
			name: "missing priority is the default",
			give: `{"type":"broadcast"}`,
			want: actors.Message{Type: actors.TypeBroadcast, Priority: actors.DefaultPriority},
		},
		{
			name: "null priority is the default",
			give: `{"type":"broadcast","priority":null}`,
			want: actors.Message{Type: actors.TypeBroadcast, Priority: actors.DefaultPriority},
		},
		{
			name: "explicit zero priority",
			give: `{"type":"broadcast","priority":0}`,
			want: actors.Message{Type: actors.TypeBroadcast},
		},
		{
			name: "unknown fields are ignored",
			give: `{"future":{"x":[1,{"y":null}]},"type":"direct","recipient":"b","z":1,"priority":7}`,
			want: actors.Message{Type: actors.TypeDirect, Recipient: "b", Priority: 7},
		},
		{
			name: "empty metadata is nil",
			give: `{"type":"broadcast","metadata":{}}`,
			want: actors.Message{Type: actors.TypeBroadcast, Priority: actors.DefaultPriority},
		},
		{
			name: "null fields",
			give: `{"type":"broadcast","id":null,"payload":null,"ttl_ms":null,"timestamp":null,"metadata":null}`,
			want: actors.Message{Type: actors.TypeBroadcast, Priority: actors.DefaultPriority, Payload: json.RawMessage(`null`)},
		},
		{
			name: "ttl with trailing zeros",
			give: `{"type":"broadcast","ttl_ms":1.5000000000}`,
			want: actors.Message{Type: actors.TypeBroadcast, Priority: actors.DefaultPriority, TTL: 1500 * time.Microsecond},
		},
		{
			name: "ttl as a string",
			give: `{"type":"broadcast","ttl_ms":"2"}`,
			want: actors.Message{Type: actors.TypeBroadcast, Priority: actors.DefaultPriority, TTL: 2 * time.Millisecond},
		},
		{
			name: "negative zero ttl",
			give: `{"type":"broadcast","ttl_ms":-0.0}`,
			want: actors.Message{Type: actors.TypeBroadcast, Priority: actors.DefaultPriority},
		},
		{
			name: "last duplicate wins",
			give: `{"type":"direct","type":"broadcast","sender":"a","sender":"b"}`,
			want: actors.Message{Type: actors.TypeBroadcast, Sender: "b", Priority: actors.DefaultPriority},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got actors.Message
			require.NoError(t, json.Unmarshal([]byte(tt.give), &got))
			assert.Equal(t, tt.want, exported(&got))
		})
	}
}

func TestJSONDecodeInvalid(t *testing.T) {
	tests := []struct {
		name string
		give string
	}{
		{name: "empty input", give: ``},
		{name: "array", give: `[]`},
		{name: "string", give: `"direct"`},
		{name: "number", give: `1`},
		{name: "null", give: `null`},
		{name: "truncated", give: `{"type":"direct"`},
		{name: "missing type", give: `{"recipient":"b"}`},
		{name: "null type", give: `{"type":null}`},
		{name: "empty type", give: `{"type":""}`},
		{name: "unknown type", give: `{"type":"bogus"}`},
		{name: "type in capitals", give: `{"type":"Direct"}`},
		{name: "type as number", give: `{"type":1}`},
		{name: "priority 300", give: `{"type":"direct","priority":300}`},
		{name: "priority 256", give: `{"type":"direct","priority":256}`},
		{name: "negative priority", give: `{"type":"direct","priority":-1}`},
		{name: "fractional priority", give: `{"type":"direct","priority":1.5}`},
		{name: "priority as string", give: `{"type":"direct","priority":"50"}`},
		{name: "ttl with exponent", give: `{"type":"direct","ttl_ms":1e3}`},
		{name: "ttl with capital exponent", give: `{"type":"direct","ttl_ms":1E3}`},
		{name: "ttl with fraction and exponent", give: `{"type":"direct","ttl_ms":1.5e+2}`},
		{name: "ttl with negative exponent", give: `{"type":"direct","ttl_ms":15e-1}`},
		{name: "ttl finer than a nanosecond", give: `{"type":"direct","ttl_ms":0.0000001}`},
		{name: "ttl finer than a nanosecond after zeros", give: `{"type":"direct","ttl_ms":1.0000000001}`},
		{name: "ttl out of range", give: `{"type":"direct","ttl_ms":9223372036855}`},
		{name: "ttl just out of range", give: `{"type":"direct","ttl_ms":9223372036854.775808}`},
		{name: "negative ttl out of range", give: `{"type":"direct","ttl_ms":-9223372036854.775809}`},
		{name: "ttl far out of range", give: `{"type":"direct","ttl_ms":99999999999999999999999}`},
		{name: "ttl as a bad string", give: `{"type":"direct","ttl_ms":"soon"}`},
		{name: "ttl as bool", give: `{"type":"direct","ttl_ms":true}`},
		{name: "bad timestamp", give: `{"type":"direct","timestamp":"yesterday"}`},
		{name: "timestamp without zone", give: `{"type":"direct","timestamp":"2026-11-27T10:00:00"}`},
		{name: "attempts as string", give: `{"type":"direct","attempts":"3"}`},
		{name: "fractional attempts", give: `{"type":"direct","attempts":1.5}`},
		{name: "metadata value not a string", give: `{"type":"direct","metadata":{"a":1}}`},
		{name: "metadata not an object", give: `{"type":"direct","metadata":["a"]}`},
		{name: "requires_ack not a bool", give: `{"type":"direct","requires_ack":"yes"}`},
		{name: "id not a string", give: `{"type":"direct","id":7}`},
		{name: "trailing data", give: `{"type":"direct"} {}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m actors.Message
			err := m.UnmarshalJSON([]byte(tt.give))
			require.ErrorIs(t, err, actors.ErrInvalidMessage)
			if json.Valid([]byte(tt.give)) { // else encoding/json refuses before it calls UnmarshalJSON
				require.ErrorIs(t, json.Unmarshal([]byte(tt.give), &m), actors.ErrInvalidMessage, "through encoding/json")
			}
		})
	}
}

func TestJSONTTLErrorQuotesInput(t *testing.T) {
	var m actors.Message
	err := m.UnmarshalJSON([]byte(`{"type":"direct","ttl_ms":-1e3}`))
	require.ErrorIs(t, err, actors.ErrInvalidMessage)
	assert.Contains(t, err.Error(), `"-1e3"`)
}

func TestJSONMarshalInvalid(t *testing.T) {
	tests := []struct {
		name string
		give *actors.Message
	}{
		{name: "zero type", give: &actors.Message{}},
		{name: "unknown type", give: &actors.Message{Type: actors.TypeControl + 1}},
		{name: "payload not JSON", give: &actors.Message{Type: actors.TypeBroadcast, Payload: json.RawMessage(`{"a":`)}},
		{name: "payload not JSON with spaces", give: &actors.Message{Type: actors.TypeBroadcast, Payload: json.RawMessage(`{"a": `)}},
		{name: "payload only spaces", give: &actors.Message{Type: actors.TypeBroadcast, Payload: json.RawMessage(`  `)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.give.MarshalJSON()
			require.ErrorIs(t, err, actors.ErrInvalidMessage)
		})
	}
}

// stdString is what encoding/json makes of s: the reference for how text
// fields must survive a round trip (invalid UTF-8 becomes U+FFFD).
func stdString(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	var out string
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

// TestJSONStrings checks the escaping policy of internal/codec on every
// text field: only '"', '\\' and control characters are escaped; '<', '>',
// '&', U+2028 and U+2029 are written as UTF-8; invalid UTF-8 becomes U+FFFD;
// and every string decodes to what encoding/json makes of it.
func TestJSONStrings(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		wantRaw string // a fragment the encoded form must contain, if set
	}{
		{name: "plain", give: "hello"},
		{name: "empty key value", give: ""},
		{name: "quote", give: `say "hi"`, wantRaw: `say \"hi\"`},
		{name: "backslash", give: `C:\path\`, wantRaw: `C:\\path\\`},
		{name: "newline tab return", give: "a\nb\tc\rd", wantRaw: `a\nb\tc\rd`},
		{name: "NUL", give: "a\x00b", wantRaw: `a\u0000b`},
		{name: "controls", give: "\x01\x08\x0c\x1f", wantRaw: `\u0001\b\f\u001f`},
		{name: "DEL passes", give: "a\x7fb", wantRaw: "a\x7fb"},
		{name: "html passes", give: "<a href='x'>&</a>", wantRaw: "<a href='x'>&</a>"},
		{name: "line separator passes", give: "a\u2028b", wantRaw: "a\u2028b"},
		{name: "paragraph separator passes", give: "a\u2029b", wantRaw: "a\u2029b"},
		{name: "invalid byte", give: "a\xffb", wantRaw: "a\uFFFDb"},
		{name: "truncated rune", give: "a\xe2\x82", wantRaw: "a\uFFFD\uFFFD"},
		{name: "surrogate half", give: "\xed\xa0\x80", wantRaw: "\uFFFD\uFFFD\uFFFD"},
		{name: "real replacement char", give: "a\uFFFDb"},
		{name: "emoji", give: "😀 ünï", wantRaw: "😀 ünï"},
		{name: "mixed", give: "\"\\\n\x00\u2028\xff😀", wantRaw: `\"\\\n\u0000` + "\u2028\uFFFD😀"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &actors.Message{
				ID: tt.give, Type: actors.TypeDirect, Sender: tt.give, Recipient: tt.give, Topic: tt.give,
				RequestID: tt.give, CorrelationID: tt.give,
				Metadata: map[string]string{"k" + tt.give: tt.give},
			}
			b, err := json.Marshal(m)
			require.NoError(t, err)
			require.True(t, json.Valid(b), "invalid JSON: %q", b)
			assert.True(t, utf8.Valid(b), "invalid UTF-8: %q", b)
			for _, c := range b {
				require.False(t, c < 0x20, "a raw control character in %q", b)
			}
			b, err = m.MarshalJSON() // as it is, without encoding/json's HTML escaping
			require.NoError(t, err)
			if tt.wantRaw != "" {
				assert.Contains(t, string(b), tt.wantRaw)
			}

			want := stdString(t, tt.give)
			got := roundTrip(t, m)
			for _, s := range []string{got.ID, got.Sender, got.Recipient, got.Topic, got.RequestID, got.CorrelationID} {
				assert.Equal(t, want, s)
			}
			assert.Equal(t, map[string]string{stdString(t, "k"+tt.give): want}, got.Metadata)
		})
	}
}

// TestJSONPayloadWrittenAsCompacted checks that the payload AppendJSON writes
// is what json.Compact makes of it, whether its white space is inside strings
// (written as is, without compacting), between tokens (compacted) or the
// payload is not JSON (refused).
func TestJSONPayloadWrittenAsCompacted(t *testing.T) {
	for _, p := range []string{
		`0`, `{}`, `"a b"`, `{"note":"looks fine to me","n":1}`, `{"a": 1}`, "[1,\n2]",
		`{"s":"tab\there","e":"\" x"}`, `{"q":"\\" }`, `{"x":"y z"`, `nope nope`, `"unterminated `,
		`[" ",{"k":" "},[" "]]`, `"a \u00e9 \\ b"`, ` "lead"`, `"trail" `, `"\\\\" `,
	} {
		t.Run(p, func(t *testing.T) { requirePayloadCompacted(t, []byte(p)) })
	}
}

// FuzzJSONPayloadWrittenAsCompacted: for any payload, AppendJSON writes what
// json.Compact makes of it, or refuses it when json.Compact does.
func FuzzJSONPayloadWrittenAsCompacted(f *testing.F) {
	for _, p := range []string{`{"note":"looks fine to me"}`, `[1, 2]`, `"\" "`, `{"a":"\\"} `} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) == 0 {
			return // no payload is written at all
		}
		requirePayloadCompacted(t, payload)
	})
}

func requirePayloadCompacted(t *testing.T, payload []byte) {
	t.Helper()
	m := &actors.Message{Type: actors.TypeDirect, Payload: payload}
	got, err := m.AppendJSON(nil)
	var want strings.Builder
	compact := new(bytes.Buffer)
	if cerr := json.Compact(compact, payload); cerr != nil {
		require.Error(t, err, "json.Compact refuses %q", payload)
		return
	}
	require.NoError(t, err)
	want.WriteString(`"payload":`)
	want.Write(compact.Bytes())
	want.WriteString(`,"priority":`)
	assert.Contains(t, string(got), want.String())
}

// TestJSONDecodeErrorsNameTheField: a bad value is refused with the field's
// JSON name and what it should be, never a Go type.
func TestJSONDecodeErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ give, want string }{
		{`{"type":"direct","priority":"50"}`, `priority: want an integer from 0 to 100, got "50"`},
		{`{"type":"direct","priority":256}`, `priority: want an integer from 0 to 100, got 256`},
		{`{"type":"direct","attempts":1.5}`, `attempts: want an integer, got 1.5`},
		{`{"type":"direct","id":7}`, `id: want a string, got 7`},
		{`{"type":"direct","sender":["a"]}`, `sender: want a string, got an array`},
		{`{"type":"fax"}`, `type: want a message type, got "fax"`},
		{`{"type":1}`, `type: want a string, got 1`},
		{`{"type":"direct","requires_ack":"yes"}`, `requires_ack: want true or false, got "yes"`},
		{`{"type":"direct","timestamp":"yesterday"}`, `timestamp: want an RFC 3339 time in a string, got "yesterday"`},
		{`{"type":"direct","ttl_ms":true}`, `ttl_ms: want a number of milliseconds, got true`},
		{`{"type":"direct","metadata":{"a":1}}`, `metadata: want a string for "a", got 1`},
		{`{"type":"direct","metadata":[]}`, `metadata: want an object of strings, got an array`},
		{`{"recipient":"b"}`, `missing type`},
		{`[]`, `want an object, got an array`},
		{`{"type":"direct","payload":` + strings.Repeat(`"long"`, 1) + `,"id":"` + strings.Repeat("x", 100) + `"} x`, `data after the message`},
		{`{"type":"direct","id":"` + strings.Repeat("x", 100) + `","sender":` + strings.Repeat("1", 100) + `}`, `sender: want a string, got 1111111111111111111111111111111111111111…`},
	} {
		var m actors.Message
		err := m.UnmarshalJSON([]byte(tc.give))
		require.ErrorIs(t, err, actors.ErrInvalidMessage, tc.give)
		assert.Contains(t, err.Error(), tc.want, tc.give)
		for _, goName := range []string{"uint8", "int64", "actors.", "wireMessage", "Go "} {
			assert.NotContains(t, err.Error(), goName, tc.give)
		}
	}
}

// TestJSONDecodeSyntaxError: a syntax error says where it is.
func TestJSONDecodeSyntaxError(t *testing.T) {
	var m actors.Message
	err := m.UnmarshalJSON([]byte(`{"type":"direct","payload":{"a" 1}}`))
	require.ErrorIs(t, err, actors.ErrInvalidMessage)
	assert.Contains(t, err.Error(), "/payload/a")
}

// TestJSONDecodeFrom: a message decodes from a jsontext.Decoder, with a
// default type when it names none (as the wire protocol reads it), and
// through encoding/json/v2, which calls UnmarshalJSONFrom.
func TestJSONDecodeFrom(t *testing.T) {
	dec := jsontext.NewDecoder(strings.NewReader(`{"recipient":"b"} {"type":null} {"type":"heartbeat","recipient":"c"} {}`))
	var m actors.Message
	require.NoError(t, m.DecodeJSON(dec, actors.TypeRequest))
	assert.Equal(t, actors.TypeRequest, m.Type)
	assert.Equal(t, "b", m.Recipient)
	require.NoError(t, m.DecodeJSON(dec, actors.TypeDirect))
	assert.Equal(t, actors.TypeDirect, m.Type, "a null type takes the default")
	require.NoError(t, m.DecodeJSON(dec, actors.TypeDirect))
	assert.Equal(t, actors.TypeHeartbeat, m.Type, "a type named wins")
	require.ErrorIs(t, m.UnmarshalJSONFrom(dec), actors.ErrInvalidMessage, "no default: no type")

	var got []*actors.Message
	require.NoError(t, jsonv2.Unmarshal([]byte(`[{"type":"direct","payload":{ "a" : 1 }},null]`), &got))
	require.Len(t, got, 2)
	assert.Equal(t, `{"a":1}`, string(got[0].Payload))
	assert.Nil(t, got[1])
}
