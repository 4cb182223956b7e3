package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/codec"
)

// members returns the members of the JSON object b in order, each value
// as encoding/json decodes it.
func members(t *testing.T, b []byte) [][2]any {
	t.Helper()
	var out [][2]any
	dec := jsontext.NewDecoder(bytes.NewReader(b), jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true))
	tok, err := dec.ReadToken()
	require.NoError(t, err)
	require.Equal(t, jsontext.Kind('{'), tok.Kind())
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		require.NoError(t, err)
		name := tok.String()
		v, err := dec.ReadValue()
		require.NoError(t, err)
		var val any
		require.NoError(t, json.Unmarshal(v, &val))
		out = append(out, [2]any{name, val})
	}
	return out
}

// requireEncodesAsJSON checks that AppendFrame writes f, after bytes
// already in the buffer, as encoding/json does: the same members in the
// same order with the same values (encoding/json escapes strings its own
// way), and that it fails where encoding/json does.
func requireEncodesAsJSON(t *testing.T, f *Frame) {
	t.Helper()
	want, wantErr := json.Marshal(f)
	got, err := AppendFrame([]byte("prefix"), f)
	if wantErr != nil {
		require.Error(t, err, "encoding/json failed: %v", wantErr)
		assert.Equal(t, "prefix", string(got), "on error the buffer is returned as it was")
		return
	}
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(got), "prefix"))
	got = got[len("prefix"):]
	require.True(t, json.Valid(got), "%q", got)
	require.NotContains(t, string(got), "\n")
	assert.Equal(t, members(t, want), members(t, got))
}

func TestAppendFrameMatchesEncodingJSON(t *testing.T) {
	m := agentbus.NewMessage(agentbus.TypeRequest, "a", []byte(`{"x":[1,2,"\u00e9"],"h":"<b>&"}`))
	m.Recipient, m.Priority, m.TTL = "b", 77, 1500*time.Millisecond
	m.Metadata = map[string]string{"traceparent": "00-x-y-01"}
	for _, f := range []*Frame{
		{Op: OpPing},
		{Op: OpHello, ID: "1", Version: 1, Client: "py<1>"},
		{Op: OpWelcome, ID: "1", Version: 1, Server: "agentbus/0.1", MaxFrame: 10551296},
		{Op: OpRegister, ID: "2", Agent: "w", Window: 256},
		{Op: OpRegister, ID: "3", Agent: "w", Durable: true},
		{Op: OpCredit, Agent: "w", N: 64},
		{Op: OpRequest, ID: "3", Message: m, TimeoutMS: 5000},
		{Op: OpRespond, ID: "4", Message: m},
		{Op: OpResponse, ID: "3", Message: m},
		{Op: OpDeliver, Agent: "w", Message: m},
		{Op: OpDeliver, Agent: "quote\"and\\slash<tag>\u2028", Message: m},
		{Op: OpOK, ID: "5", MessageID: "m"},
		{Op: OpOK, ID: "ünïcode\n"},
		{Op: OpAck, ID: "6", Agent: "w", MessageID: "m"},
		{Op: OpNack, ID: "7", MessageID: "m", Error: "it broke: \"badly\""},
		{Op: OpError, ID: "8", Code: CodeNoRecipient, Error: "agentbus: no such recipient: \"nobody\""},
		{Op: OpReplay, ID: "9", Seq: 1<<64 - 1, To: "x"},
		{Op: OpDeadLetters, Reason: "expired", Agent: "a", Topic: "a.>", Limit: 10},
		{Op: OpHistory, Sender: "a", Recipient: "b", Type: "publish", Limit: -1},
		{Op: OpSubscribe, Agent: "a", Topic: "progress.*"},
		{Op: "future\xff", ID: "\xfe", TimeoutMS: -3, Version: -1},
		{Op: OpDeliver, Agent: "w", Message: &agentbus.Message{}}, // no type: both fail
		{Op: OpStats, ID: "s", Stats: json.RawMessage(`{"a":1}`)},
		{Op: OpStats, ID: "s", Stats: json.RawMessage(`{"a": [1, "<\u003e"]}`)},
		{Op: OpStats, ID: "s", Stats: json.RawMessage(`{"a":`)}, // not JSON: both fail
		{Op: OpHistory, ID: "h", Messages: []*agentbus.Message{m, nil, m}},
		{Op: OpHistory, ID: "h", Messages: []*agentbus.Message{{}}}, // no type: both fail
		{Op: OpDeadLetters, ID: "d", Letters: []Letter{{Seq: 1, Reason: "expired", Time: m.Timestamp, Message: m,
			Agent: "b<", Error: "it\nbroke", Attempts: 3, Replays: 1}, {Seq: 2, Reason: "x", Value: "int 4"}}},
		{Op: OpDeadLetters, ID: "d", Letters: []Letter{{Seq: 1, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}}, // both fail
		{Op: OpTopics, ID: "t", Topics: []TopicInfo{{Topic: "a.*", Subscribers: []string{"w", "x<"}}, {Topic: "b"},
			{Topic: "c", Subscribers: []string{}}}},
	} {
		t.Run(f.Op, func(t *testing.T) { requireEncodesAsJSON(t, f) })
	}
}

// FuzzAppendFrameMatchesEncodingJSON: every frame Decode accepts is written
// by AppendFrame as encoding/json writes it.
func FuzzAppendFrameMatchesEncodingJSON(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Decode(data)
		if err != nil {
			return
		}
		requireEncodesAsJSON(t, fr)
	})
}

// TestAppendFrameEscaping checks the one escaping policy (see
// internal/codec) on every string a frame holds, the message's and the
// stats' included: only '"', '\\' and control characters are escaped.
func TestAppendFrameEscaping(t *testing.T) {
	const text = "<a href=\"x\">&</a>\u2028\t\xff"
	const written = `<a href=\"x\">&</a>` + "\u2028" + `\t` + "\uFFFD"
	m := agentbus.NewMessage(agentbus.TypeDirect, text, []byte(`{"p":"<\u003c>"}`)).WithRecipient(text)
	for _, f := range []*Frame{
		{Op: OpDeliver, Agent: text, Message: m},
		{Op: OpError, ID: text, Code: CodeInternal, Error: text},
		{Op: OpStats, Stats: json.RawMessage(`{"agents":{"<a href=\"x\">\u0026</a>\u2028\t\ufffd":1}}`)},
		{Op: OpDeadLetters, Letters: []Letter{{Seq: 1, Reason: text, Error: text, Time: m.Timestamp, Message: m}}},
		{Op: OpHistory, Messages: []*agentbus.Message{m}},
	} {
		b, err := Encode(f)
		require.NoError(t, err)
		assert.Contains(t, string(b), written, "%s", b)
		const payload = `"p":"<\u003c>"` // payloads are written as given
		if f.Message != nil || f.Letters != nil || f.Messages != nil {
			assert.Contains(t, string(b), payload)
		}
		for _, esc := range []string{`\u003c`, `\u003e`, `\u0026`, `\u2028`, `\ufffd`} {
			assert.NotContains(t, strings.ReplaceAll(string(b), payload, ""), esc, "%s", b)
		}
	}
}

// TestAppendOp: a known op is written as codec.AppendString writes it.
func TestAppendOp(t *testing.T) {
	for _, op := range []string{OpHello, OpRegister, OpUnregister, OpSend, OpPublish, OpSubscribe, OpUnsubscribe,
		OpRequest, OpRespond, OpAck, OpNack, OpStats, OpDeadLetters, OpReplay, OpHistory, OpPing, OpCredit, OpSync,
		OpTopics, OpDeadLetter, OpPurgeDeadLetters, OpSubscribers,
		OpWelcome, OpOK, OpError, OpPong, OpResponse, OpDeliver, "", "fut\"ure\n"} {
		assert.Equal(t, string(codec.AppendString(nil, op)), string(appendOp(nil, op)), "%q", op)
	}
}
