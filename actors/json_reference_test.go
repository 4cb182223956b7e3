package actors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/internal/testutil"
)

// wireMessage is the JSON form of Message as encoding/json reads it into a
// struct: the reference the decoder must match.
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

// decodeReference is UnmarshalJSON by way of encoding/json, as it was
// written before the decoder moved to jsontext: the reference that
// UnmarshalJSON must match on every input.
func decodeReference(m *Message, data []byte) error {
	var w wireMessage
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMessage, err)
	}
	var ttl time.Duration
	if w.TTL != "" {
		var err error
		if ttl, err = parseMillis(w.TTL.String()); err != nil {
			return err
		}
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
	if !w.Type.Valid() {
		return fmt.Errorf("%w: missing type", ErrInvalidMessage)
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
	if len(payload) > 0 {
		m.markPayloadChecked(true)
	}
	return nil
}

// typicalJSON is a typical ~280-byte message, as MarshalJSON writes it.
const typicalJSON = `{"id":"0192f1c4-7d2a-7000-8000-00000000002a","type":"request","sender":"planner",` +
	`"recipient":"coder","correlation_id":"conv-3","payload":{"task":"build","deps":["api","db"],"budget":4000},` +
	`"priority":70,"timestamp":"2026-11-27T10:00:00.123456789Z","ttl_ms":1500,` +
	`"metadata":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}`

// decodeSeeds returns inputs for the differential tests: FuzzMessageJSON's
// seeds, messages as MarshalJSON writes them, and variations on every
// field, every kind of value and the syntax around them.
func decodeSeeds(t testing.TB) []string {
	seeds := []string{
		// Seeds of old crashes and edge cases.
		`{"type":"direct"}`,
		`{"id":"x","type":"request","sender":"a","recipient":"b","topic":"t","request_id":"r","correlation_id":"c",` +
			`"payload":{"k":[1,2,{"z":null}]},"priority":99,"timestamp":"2026-11-27T10:00:00.123456789Z",` +
			`"attempts":2,"requires_ack":true,"ttl_ms":1.500001,"metadata":{"a":"1","b":""}}`,
		`{"type":"broadcast","payload": [ 1, "two" ] ,"ttl_ms":-0.5}`,
		`{"type":"ack","timestamp":"2026-01-02T03:04:05+01:30","priority":0}`,
		`{"type":"publish","topic":"a\u2028b\"c\\d\u0000","metadata":{"\ud83d\ude00":"\n"}}`,
		`{"type":"error","sender":"\xff\xfe","payload":"\xff"}`,
		`{"type":"control","ttl_ms":"12.25","unknown":{"deep":[[[]]]}}`,
		`{"type":"heartbeat","ttl_ms":9223372036853.999999}`,
		`{"type":"heartbeat","ttl_ms":9223372036854.775807}`,  // the largest TTL: once refused
		`{"type":"heartbeat","ttl_ms":-9223372036854.775808}`, // the smallest: once encoded as invalid JSON
		`{"type":"heartbeat","ttl_ms":9223372036854.775808}`,
		`{"type":"subscribe","timestamp":"0001-01-01T00:00:00Z"}`,
		`{"type":"direct","ttl_ms":1e3}`,
		`{"type":"direct","priority":256}`,
		`[]`,
		``,
		`null`,

		typicalJSON,
		// Whitespace, unknown fields, missing and null fields.
		" \t\r\n{ \"type\" :\n\"direct\" , \"payload\" : { \"a\" : [ 1 , 2 ] , \"s\" : \"two  spaces\" } }\n ",
		`{"type":"broadcast","payload":"a b"}`,
		`{"type":"broadcast","payload":" "}`,
		`{"type":"broadcast","payload":"\" \\"}`,
		`{"future":{"x":[1,{"y":"}]"}]},"type":"direct","recipient":"b","z":1,"priority":7,"w":"\"","v":[true,false,null,-1.5e+3]}`,
		`{"type":"broadcast","id":null,"payload":null,"ttl_ms":null,"timestamp":null,"metadata":null,"priority":null,` +
			`"attempts":null,"requires_ack":null,"sender":null,"recipient":null,"topic":null,"request_id":null,"correlation_id":null}`,
		`{"type":null}`,
		`{}`,
		`{ }`,
		`{"type":"direct","metadata":{}}`,
		`{"type":"direct","metadata":{"a":null,"b":"2","a":"3"}}`,
		`{"type":"direct","metadata":{"a":"1","b":null}}`,
		`{"type":"direct","metadata":{"a":1}}`,
		`{"type":"direct","metadata":{"a":{}}}`,
		`{"type":"direct","metadata":{"A":"x","\u0041":"y","é":"\u00e9"}}`,
		`{"type":"direct","metadata":["a"]}`,
		`{"type":"direct","metadata":"a"}`,
		// Duplicates.
		`{"type":"direct","type":"broadcast","sender":"a","sender":"b"}`,
		`{"type":"direct","priority":5,"priority":null}`,
		`{"type":"direct","metadata":{"a":"1"},"metadata":{"b":"2"}}`,
		`{"type":"direct","metadata":{"a":"1"},"metadata":null}`,
		`{"type":"direct","id":"a","id":null}`,
		`{"type":"direct","timestamp":"2026-11-27T10:00:00Z","timestamp":null}`,
		// Keys in other cases or spellings, which encoding/json folds.
		`{"TYPE":"direct"}`,
		`{"Type":"direct","ID":"x","Sender":"s"}`,
		`{"type":"direct","\u0069d":"x"}`,
		`{"type":"direct","ſender":"x","\u017fender":"y"}`,
		`{"type":"direct","K":"x","topic":"t"}`,
		`{"type":"direct","request-id":"x","requestid":"y"}`,
		// Escapes and Unicode.
		`{"type":"direct","id":"\"\\\/\b\f\n\r\t\u0000\u001f\u00e9\u20ac\uFFFD\u2028"}`,
		`{"type":"dir\u0065ct"}`,
		`{"type":"direct","sender":"\ud83d\ude00"}`,
		`{"type":"direct","sender":"\ud83d"}`,
		`{"type":"direct","sender":"\ude00\ud83d"}`,
		`{"type":"direct","sender":"\ud83dx"}`,
		`{"type":"direct","sender":"😀 ünï €","recipient":"日本"}`,
		"{\"type\":\"direct\",\"sender\":\"a\xffb\"}",
		"{\"type\":\"direct\",\"sender\":\"\xed\xa0\x80\"}",
		"{\"type\":\"direct\",\"sender\":\"\xe2\x82\"}",
		"{\"type\":\"direct\",\"sender\":\"\\n\xe2\x82\"}",
		"{\"type\":\"direct\",\"payload\":\"\xff\",\"x\":\"\xff\"}",
		"{\"type\":\"direct\",\"sender\":\"a\x7fb\"}",
		// Types.
		`{"type":"Direct"}`,
		`{"type":""}`,
		`{"type":1}`,
		`{"type":"bogus"}`,
		`{"type":"direct\u0000"}`,
		// Numbers.
		`{"type":"direct","priority":0}`,
		`{"type":"direct","priority":255}`,
		`{"type":"direct","priority":-0}`,
		`{"type":"direct","priority":-1}`,
		`{"type":"direct","priority":1.0}`,
		`{"type":"direct","priority":1e2}`,
		`{"type":"direct","priority":"50"}`,
		`{"type":"direct","priority":true}`,
		`{"type":"direct","priority":1000}`,
		`{"type":"direct","attempts":-0}`,
		`{"type":"direct","attempts":-3}`,
		`{"type":"direct","attempts":9223372036854775807}`,
		`{"type":"direct","attempts":-9223372036854775808}`,
		`{"type":"direct","attempts":9223372036854775808}`,
		`{"type":"direct","attempts":999999999999999999}`,
		`{"type":"direct","attempts":1.0}`,
		`{"type":"direct","attempts":"3"}`,
		`{"type":"direct","attempts":[]}`,
		`{"type":"direct","ttl_ms":0}`,
		`{"type":"direct","ttl_ms":-0.0}`,
		`{"type":"direct","ttl_ms":1.5000000000}`,
		`{"type":"direct","ttl_ms":0.0000001}`,
		`{"type":"direct","ttl_ms":"2"}`,
		`{"type":"direct","ttl_ms":""}`,
		`{"type":"direct","ttl_ms":"soon"}`,
		`{"type":"direct","ttl_ms":true}`,
		`{"type":"direct","ttl_ms":{}}`,
		`{"type":"direct","ttl_ms":1E3}`,
		`{"type":"direct","requires_ack":true}`,
		`{"type":"direct","requires_ack":false}`,
		`{"type":"direct","requires_ack":"yes"}`,
		`{"type":"direct","requires_ack":1}`,
		`{"type":"direct","redelivered":true}`,
		`{"type":"direct","redelivered":"yes"}`,
		// Timestamps.
		`{"type":"direct","timestamp":"2026-11-27T10:00:00Z"}`,
		`{"type":"direct","timestamp":"2026-11-27T10:00:00.5-07:00"}`,
		`{"type":"direct","timestamp":"2026-11-27T10:00:00+00:00"}`,
		`{"type":"direct","timestamp":"2026-11-27T10:00:00"}`,
		`{"type":"direct","timestamp":"2026-11-27t10:00:00z"}`,
		`{"type":"direct","timestamp":"2026-11-27T10:00:00\u005a"}`,
		`{"type":"direct","timestamp":"yesterday"}`,
		`{"type":"direct","timestamp":1}`,
		`{"type":"direct","timestamp":{}}`,
		`{"type":"direct","timestamp":""}`,
		// Fields of the wrong JSON type, and malformed input.
		`{"type":"direct","id":7}`,
		`{"type":"direct","id":true}`,
		`{"type":"direct","id":{}}`,
		`{"type":"direct","sender":[]}`,
		`{"type":"direct"} {}`,
		`{"type":"direct"`,
		`{"type":"direct",}`,
		`{"type":"direct","payload":}`,
		`{"type":"direct","payload":[1,]}`,
		`{"type":"direct","payload":01}`,
		`"direct"`,
		`1`,
	}
	// Payloads and unknown values nested up to where encoding/json stops
	// (10000 levels, the message's object included).
	for _, depth := range []int{9000, 9998, 9999, 10000} {
		deep := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		seeds = append(seeds, `{"type":"direct","payload":`+deep+`}`, `{"type":"direct","x":`+deep+`}`)
	}
	seeds = append(seeds, `{"type":"direct","ttl_ms":1.5e+2}`, `{"type":"direct","ttl_ms":15e-1}`,
		`{"type":"direct","ttl_ms":-}`, `{"type":"direct","ttl_ms":01}`, `{"type":"direct","ttl_ms":1.}`)
	// Every type, and messages as MarshalJSON writes them.
	for tp := TypeDirect; tp < typeEnd; tp++ {
		m := &Message{
			ID: "0192f1c4-7d2a-7000-8000-000000000001", Type: tp, Sender: "planner", Recipient: "coder",
			Topic: "jobs.build", RequestID: "req-9", CorrelationID: "conv-3",
			Payload:   json.RawMessage(`{"task":"build","deps":["a","b"],"n":1.5e3,"ok":true,"none":null}`),
			Priority:  uint8(tp) * 9,
			Timestamp: time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC),
			Attempts:  int(tp) - 3, RequiresAck: tp%2 == 0, Redelivered: tp%3 == 0, TTL: time.Duration(tp) * 1500001,
			Metadata: map[string]string{"traceparent": "00-abc-def-01", "b": "2", "a": ""},
		}
		for _, s := range []string{"", "say \"hi\"\n", "a\u2028b", "\x00\x1f", "a\xffb", "😀 ünï"} {
			m.Sender, m.Metadata["k"+s] = "s"+s, s
			b, err := m.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			seeds = append(seeds, string(b))
			var ind bytes.Buffer
			if err := json.Indent(&ind, b, " ", "\t"); err != nil {
				t.Fatal(err)
			}
			seeds = append(seeds, ind.String())
		}
		b, err := (&Message{Type: tp}).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, string(b))
	}
	return seeds
}

// checkMatchesReference decodes data with UnmarshalJSON and with
// decodeReference into two equal messages, and fails unless the outcomes
// are the same.
func checkMatchesReference(t *testing.T, data []byte) {
	t.Helper()
	start := Message{ID: "old", Type: TypeAck, Payload: json.RawMessage(`[]`), Priority: 3, Attempts: 9,
		Metadata: map[string]string{"old": "1"}}
	got, want := start, start
	err := got.UnmarshalJSON(data)
	wantErr := decodeReference(&want, data)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("input %q: UnmarshalJSON gave error %v, encoding/json %v", data, err, wantErr)
	}
	if err != nil {
		if !errors.Is(err, ErrInvalidMessage) {
			t.Fatalf("input %q: error %v does not wrap ErrInvalidMessage", data, err)
		}
		if !reflect.DeepEqual(exportedFields(&got), exportedFields(&start)) {
			t.Fatalf("input %q: the message changed on error: %#v", data, exportedFields(&got))
		}
		return
	}
	if !reflect.DeepEqual(exportedFields(&got), exportedFields(&want)) {
		t.Fatalf("input %q:\ngot  %#v\nwant %#v", data, exportedFields(&got), exportedFields(&want))
	}
	if got.payloadCompact() != want.payloadCompact() {
		t.Fatalf("input %q: payload marked checked and compact: %v, want %v", data, got.payloadCompact(), want.payloadCompact())
	}
	if len(got.Payload) > 0 && &got.Payload[0] == &data[0] {
		t.Fatalf("input %q: payload aliases the input", data)
	}
}

// exportedFields returns a copy of m without its unexported fields.
func exportedFields(m *Message) Message {
	c := *m
	c.checked, c.checkedData, c.replyTo = 0, nil, nil
	return c
}

func TestUnmarshalMatchesReference(t *testing.T) {
	for _, s := range decodeSeeds(t) {
		checkMatchesReference(t, []byte(s))
	}
}

// TestUnmarshalMalformed checks every prefix of some messages, and the
// messages with each byte replaced by a character of JSON syntax.
func TestUnmarshalMalformed(t *testing.T) {
	for _, s := range []string{
		typicalJSON,
		`{"id":"a\"\u00e9","type":"request","payload": [1,{"a":"\"]"},-2.5e+3,true,false,null] ,` +
			`"priority":7,"timestamp":"2026-11-27T10:00:00Z","attempts":-12,"requires_ack":false,` +
			`"ttl_ms":-1.25,"metadata":{"a":null,"b":"\t"},"x":{"y":[]},"z":"\u0041"}`,
	} {
		for _, b := range testutil.Malformed(s, "\"{}[],: 0-.eEtfnu\x00\x80") {
			checkMatchesReference(t, b)
		}
	}
}

// FuzzUnmarshalMatchesReference checks that UnmarshalJSON decodes every
// input exactly as encoding/json does (decodeReference): the same fields,
// or an error wrapping ErrInvalidMessage from both.
func FuzzUnmarshalMatchesReference(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(checkMatchesReference)
}

// BenchmarkUnmarshalJSON decodes a typical message with UnmarshalJSON
// (jsontext) and, as the peer in the same run, with encoding/json.
func BenchmarkUnmarshalJSON(b *testing.B) {
	data := []byte(typicalJSON)
	for _, bm := range []struct {
		name   string
		decode func(*Message, []byte) error
	}{
		{"jsontext", (*Message).UnmarshalJSON},
		{"encoding-json", decodeReference},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			var m Message
			for b.Loop() {
				if err := bm.decode(&m, data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestNewResponseKeepsPayloadChecked: a response that echoes its request's
// decoded payload is not checked nor compacted again; one with another
// payload is.
func TestNewResponseKeepsPayloadChecked(t *testing.T) {
	var req Message
	if err := req.UnmarshalJSON([]byte(`{"type":"request","sender":"a","payload":{"k": [1, 2]}}`)); err != nil {
		t.Fatal(err)
	}
	if !req.payloadCompact() {
		t.Fatal("a decoded payload is checked and compact")
	}
	if echo := req.NewResponse("b", req.Payload); !echo.payloadCompact() {
		t.Error("the echoed payload lost its mark")
	}
	if other := req.NewResponse("b", json.RawMessage(`{"k": [1, 2]}`)); other.payloadChecked() {
		t.Error("another payload must be checked")
	}
	if part := req.NewResponse("b", req.Payload[:1]); part.payloadChecked() {
		t.Error("a part of the payload must be checked")
	}
}

// TestMessageSize: the decoder's caches keep a Message in the 192-byte size
// class.
func TestMessageSize(t *testing.T) {
	if n := unsafe.Sizeof(Message{}); n > 192 {
		t.Errorf("a Message is %d bytes", n)
	}
}

// FuzzMessageJSON feeds arbitrary input to the decoder. Whatever it accepts
// must encode, and encoding is a fixed point: decoding the encoding and
// encoding again gives the same bytes and the same message.
func FuzzMessageJSON(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Message
		if err := m.UnmarshalJSON(data); err != nil {
			require.ErrorIs(t, err, ErrInvalidMessage)
			return
		}
		b1, err := m.MarshalJSON()
		require.NoError(t, err, "encoding a decoded message")
		require.True(t, json.Valid(b1), "invalid JSON: %q", b1)

		var m2 Message
		require.NoError(t, m2.UnmarshalJSON(b1), "decoding %q", b1)
		b2, err := m2.MarshalJSON()
		require.NoError(t, err)
		require.Equal(t, string(b1), string(b2), "not a fixed point")

		// The same message, up to the timestamp's *time.Location value.
		require.True(t, m.Timestamp.Equal(m2.Timestamp), "timestamp %v became %v", m.Timestamp, m2.Timestamp)
		m2.Timestamp = m.Timestamp
		require.Equal(t, exportedFields(&m), exportedFields(&m2))
	})
}
