package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/testutil"
)

// frameSeeds are frames for the differential tests: the frames clients and
// the daemon exchange, and variations on every field, kind of value and
// syntax around them.
var frameSeeds = []string{
	`{"op":"ping","id":"1"}`,
	` { "op" : "hello" , "id" : "1" , "version" : 1 , "client" : "py" } `,
	`{"op":"register","id":"2","agent":"w","window":256}`,
	`{"op":"register","id":"3","agent":"w","durable":true}`,
	`{"op":"register","id":"4","agent":"w","durable":"yes"}`,
	`{"op":"credit","agent":"w","n":64}`,
	`{"op":"send","id":"3","message":{"recipient":"b","payload":{"a":[1,2,{"b":"\"}"}]},"priority":9,"ttl_ms":1.5}}`,
	`{"op":"publish","message":{"topic":"a.b","requires_ack":true,"metadata":{"traceparent":"x"}}}`,
	`{"op":"respond","message":{"request_id":"r","payload":"\u00e9"}}`,
	`{"op":"request","id":"9","timeout_ms":5000,"message":{"recipient":"w"}}`,
	`{"op":"deliver","agent":"w","message":{"id":"m","type":"direct","sender":"a","recipient":"w","payload":1,"priority":50,"timestamp":"2026-11-27T10:00:00.123Z"}}`,
	`{"op":"ok","id":"5","message_id":"m"}`,
	`{"op":"error","id":"6","code":"no_recipient","error":"agentbus: no such recipient"}`,
	`{"op":"replay","seq":18446744073709551615,"to":"x"}`,
	`{"op":"replay","seq":-1}`,
	`{"op":"replay","seq":1.5,"id":"s"}`,
	`{"op":"dead_letters","reason":"expired","limit":10,"topic":"a.>"}`,
	`{"op":"history","sender":"a","recipient":"b","type":"publish","limit":0}`,
	`{"op":"stats","id":"s","stats":{"totals":{"sent":1},"x":"\u003c"}}`,
	`{"op":"stats","id":"s","stats":null}`,
	`{"op":"ping","id":"é"}`,
	`{"op":"ping","id":"a\"b\u0041\ud83d"}`,
	`{"op":"ping","limit":1.0}`,
	`{"op":"ping","limit":01}`,
	`{"op":"ping","limit":"1","id":"x"}`,
	`{"op":"ping","limit":99999999999999999999}`,
	`{"op":"ping","timeout_ms":-9223372036854775808}`,
	`{"op":"ping","window":-1,"n":-0}`,
	`{"op":"ping","OP":"pong"}`,
	`{"OP":"ping","Id":"7","AGENT":"a"}`,
	`{"op":"ping","MESSAGE_ID":"m","Max_Frame":3}`,
	`{"o\u0070":"ping"}`,
	`{"op":"ping","op":"pong"}`,
	`{"op":"ping","op":null}`,
	`{"op":"ping","id":null,"agent":null,"limit":null,"message":null}`,
	`{"op":"ping","unknown":[1,{"a":"}"}]}`,
	`{"op":"send","message":null}`,
	`{"op":"send","message":{}}`,
	`{"op":"send","message":{"type":"fax"}}`,
	`{"op":"send","message":{"type":null,"recipient":"b"}}`,
	`{"op":"send","message":{"type":""}}`,
	`{"op":"send","message":{"Type":"heartbeat"}}`,
	`{"op":"send","message":{"recipient":"b"},"message":{"topic":"t"}}`,
	`{"op":"send","message":{"recipient":"b"},"message":null}`,
	`{"message":{"recipient":"b"},"op":"send","id":"late op"}`,
	`{"message":{"recipient":"b"},"op":"ping"}`,
	`{"message":{"priority":"high"},"op":"send","id":"bad msg before op"}`,
	`{"op":"send","id":"9","message":"x"}`,
	`{"op":"send","id":"9","message":[]}`,
	`{"op":"send","message":{"priority":"high"},"id":"after"}`,
	`{"op":"send","message":{"priority":300},"limit":"x","id":"two errors"}`,
	`{"op":"send","message":{"recipient":"b"}}}`,
	`{"op":"send","message":{"recipient":"b"}`,
	`{"op":"ping"} x`,
	`{"op":"ping"} {}`,
	`{"op":"ping"}` + "\n",
	`{"op":1,"id":"8"}`,
	`{"op":["x"],"id":"8"}`,
	`{"id":"7"}`,
	`{}`,
	`{"op":""}`,
	`[]`,
	`"op"`,
	`null`,
	``,
	`nope`,
	"{\"op\":\"x\xff\"}",
	"{\"op\":\"ping\",\"id\":\"\xff\"}",
	`{"op":"ping","id":"1",}`,
	`{"op":"ping" "id":"1"}`,
	`{"op":"send","message":{"recipient":"b","payload":}}`,
}

// decodeReference is Decode as it was written with encoding/json before
// the decoder moved to jsontext: the reference for the frame's fields.
// (The message it holds is decoded with UnmarshalJSON, which actors'
// tests check against encoding/json in the same way.)
func decodeReference(data []byte) (*Frame, error) {
	if !utf8.Valid(data) {
		return nil, errNotUTF8
	}
	var w struct {
		Frame
		Message json.RawMessage `json:"message,omitempty"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		var f struct {
			Op any `json:"op"`
			ID any `json:"id"`
		}
		if json.Unmarshal(data, &f) != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidFrame, err)
		}
		op, _ := f.Op.(string)
		id, _ := f.ID.(string)
		return &Frame{Op: op, ID: id}, fmt.Errorf("%w: %v", ErrInvalidFrame, err)
	}
	f := &w.Frame
	if f.Op == "" {
		return f, fmt.Errorf("%w: missing op", ErrInvalidFrame)
	}
	if len(w.Message) > 0 && string(w.Message) != "null" {
		raw := string(w.Message)
		if t := defaultType(f.Op); t != 0 && strings.HasPrefix(raw, "{") {
			// The default type first: a type the message names comes later
			// and wins.
			rest := strings.TrimLeft(raw[1:], " \t\r\n")
			sep := ","
			if strings.HasPrefix(rest, "}") {
				sep = ""
			}
			raw = `{"type":"` + t.String() + `"` + sep + rest
		}
		f.Message = new(agentbus.Message)
		if err := json.Unmarshal([]byte(raw), f.Message); err != nil {
			return &Frame{Op: f.Op, ID: f.ID}, fmt.Errorf("%w: message: %v", ErrInvalidFrame, err)
		}
	}
	return f, nil
}

// exportedFrame returns f for comparison: its message (and history
// messages) without their unexported caches.
func exportedFrame(f *Frame) Frame {
	c := *f
	if c.Message != nil {
		m := testutil.Exported(c.Message)
		c.Message = &m
	}
	return c
}

// checkDecodeMatchesReference decodes data with Decode and with
// decodeReference, and fails unless both accept it with the same frame, or
// both refuse it with ErrInvalidFrame and the same op and id salvaged.
// The letters, messages and topics of the dead_letters, history and topics
// answers, which encoding/json/v2 decodes, are left out: encoding/json reads
// them with other rules (names regardless of case, for one), and only the
// daemon writes them.
func checkDecodeMatchesReference(t *testing.T, data []byte) {
	t.Helper()
	lower := strings.ToLower(string(data))
	if strings.Contains(lower, `"letters"`) || strings.Contains(lower, `"messages"`) || strings.Contains(lower, `"topics"`) {
		return
	}
	got, err := Decode(data)
	want, wantErr := decodeReference(data)
	require.Equal(t, wantErr == nil, err == nil, "input %q: Decode gave error %v, encoding/json %v", data, err, wantErr)
	if err != nil {
		if !errors.Is(err, agentbus.ErrInvalidMessage) {
			require.ErrorIs(t, err, ErrInvalidFrame, "input %q", data)
		}
		if !json.Valid(data) {
			require.Nil(t, got, "input %q: a frame that is not JSON gives no frame", data)
			return
		}
		if want == nil {
			want = &Frame{}
		}
		if got == nil {
			got = &Frame{}
		}
		assert.Equal(t, want.Op, got.Op, "input %q: op", data)
		assert.Equal(t, want.ID, got.ID, "input %q: id", data)
		return
	}
	require.Equal(t, exportedFrame(want), exportedFrame(got), "input %q", data)
}

func TestDecodeMatchesReference(t *testing.T) {
	for _, s := range frameSeeds {
		checkDecodeMatchesReference(t, []byte(s))
	}
}

// TestDecodeMalformed checks every prefix of some frames, and the frames
// with each byte replaced by a character of JSON syntax.
func TestDecodeMalformed(t *testing.T) {
	for _, s := range []string{
		`{"op":"send","id":"3","message":{"recipient":"b","payload":{"a":[1,"\"}"]},"priority":9,"ttl_ms":1.5},"limit":2}`,
		`{"id":"a\u0041","agent":null,"op":"deliver","seq":7,"x":[{"y":"]"}]}`,
	} {
		for _, b := range testutil.Malformed(s, "\"{}[],: 0-.eEtfnu\x00") {
			checkDecodeMatchesReference(t, b)
		}
	}
}

// FuzzDecodeMatchesReference: Decode reads every frame as encoding/json
// did (decodeReference).
func FuzzDecodeMatchesReference(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkDecodeMatchesReference)
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{`{"op":"replay","seq":"7"}`, `seq: want an unsigned integer, got "7"`},
		{`{"op":"dead_letters","limit":1.5}`, `limit: want an integer, got 1.5`},
		{`{"op":1}`, `op: want a string, got 1`},
		{`{"op":"send","message":"x"}`, `message: want an object, got "x"`},
	} {
		_, err := Decode([]byte(tc.in))
		require.ErrorIs(t, err, ErrInvalidFrame, tc.in)
		assert.Contains(t, err.Error(), tc.want, tc.in)
		assert.NotContains(t, err.Error(), "Go ", "no Go type names: %v", err)
	}
	// A bad value of a message's field is a bad message, not a bad frame.
	for _, tc := range []struct {
		in   string
		want string
	}{
		{`{"op":"send","message":{"priority":"high"}}`, `message: agentbus: invalid message: priority: want an integer from 0 to 100, got "high"`},
		{`{"op":"send","message":{"priority":300}}`, `priority: want an integer from 0 to 100, got 300`},
		{`{"op":"send","message":{"attempts":{"a":1}}}`, `attempts: want an integer, got an object`},
		{`{"op":"deliver","message":{"recipient":"b"}}`, `message: agentbus: invalid message: missing type`},
	} {
		f, err := Decode([]byte(tc.in))
		require.ErrorIs(t, err, agentbus.ErrInvalidMessage, tc.in)
		assert.False(t, errors.Is(err, ErrInvalidFrame), tc.in)
		assert.Equal(t, CodeInvalidMessage, CodeOf(err))
		require.NotNil(t, f)
		assert.NotEmpty(t, f.Op)
		assert.Contains(t, err.Error(), tc.want, tc.in)
		assert.NotContains(t, err.Error(), "Go ", "no Go type names: %v", err)
		assert.NotContains(t, err.Error(), "uint8", "no Go type names: %v", err)
	}
}

func TestDecodeAnswers(t *testing.T) {
	m := agentbus.NewMessage(agentbus.TypeDirect, "a", []byte(`{"k":1}`)).WithRecipient("b")
	in := &Frame{Op: OpHistory, ID: "h", Messages: []*agentbus.Message{m, nil},
		Letters: []Letter{{Seq: 3, Reason: "expired", Time: m.Timestamp, Message: m, Attempts: 2}}}
	b, err := Encode(in)
	require.NoError(t, err)
	got, err := Decode(b)
	require.NoError(t, err)
	require.Len(t, got.Messages, 2)
	assert.Equal(t, testutil.Exported(m), testutil.Exported(got.Messages[0]))
	assert.Nil(t, got.Messages[1])
	require.Len(t, got.Letters, 1)
	assert.Equal(t, testutil.Exported(m), testutil.Exported(got.Letters[0].Message))
	assert.True(t, m.Timestamp.Equal(got.Letters[0].Time))
	assert.Equal(t, 2, got.Letters[0].Attempts)

	in = &Frame{Op: OpTopics, ID: "t", Topics: []TopicInfo{{Topic: "a.*", Subscribers: []string{"w", "x"}}}}
	b, err = Encode(in)
	require.NoError(t, err)
	got, err = Decode(b)
	require.NoError(t, err)
	assert.Equal(t, in.Topics, got.Topics)

	_, err = Decode([]byte(`{"op":"history","messages":[{"type":"fax"}],"id":"x"}`))
	require.ErrorIs(t, err, ErrInvalidFrame)
	assert.Contains(t, err.Error(), "messages:")
	f, err := Decode([]byte(`{"op":"dead_letters","letters":{"seq":1},"id":"y"}`))
	require.ErrorIs(t, err, ErrInvalidFrame)
	assert.Contains(t, err.Error(), "letters:")
	assert.Equal(t, "y", f.ID, "the id is salvaged")
	assert.True(t, errors.Is(err, ErrInvalidFrame))
}
