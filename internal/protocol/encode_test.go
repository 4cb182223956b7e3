package protocol

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
)

// unescapeHTML undoes the escaping of <, > and & that encoding/json applies
// to the output of a json.Marshaler (the message) and that AppendFrame
// leaves out; both forms decode to the same string.
var unescapeHTML = strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&")

// requireEncodesAsJSON checks that AppendFrame writes f exactly as
// encoding/json does (up to the HTML escapes above), after bytes already in
// the buffer.
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
	assert.Equal(t, unescapeHTML.Replace(string(want)), unescapeHTML.Replace(string(got[len("prefix"):])))
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
	} {
		t.Run(f.Op, func(t *testing.T) { requireEncodesAsJSON(t, f) })
	}
}

// FuzzAppendFrameMatchesEncodingJSON: every frame Decode accepts is written
// by AppendFrame as encoding/json writes it.
func FuzzAppendFrameMatchesEncodingJSON(f *testing.F) {
	for _, s := range fastSeeds {
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

// prefixType is withDefaultType as it always was: "type":t put first,
// whether or not the object names its own type.
func prefixType(raw json.RawMessage, t string) json.RawMessage {
	trimmed := strings.TrimLeft(string(raw), " \t\r\n")
	if t == "" || trimmed == "" || trimmed[0] != '{' {
		return raw
	}
	rest := strings.TrimLeft(trimmed[1:], " \t\r\n")
	out := `{"type":"` + t + `"`
	if rest != "" && rest[0] != '}' {
		out += ","
	}
	return json.RawMessage(out + rest)
}

func TestWithDefaultTypeLeavesOutARedundantDefault(t *testing.T) {
	for _, tc := range []struct {
		in   string
		same bool // returned as it is
	}{
		{`{"type":"direct","recipient":"b"}`, true},
		{` {"id":"x","type":"heartbeat","payload":{"type":1}}`, true},
		{`{"payload":{"type":"x"},"Type":"control"}`, true},
		{`{"type":null}`, false},
		{`{"type":1}`, false},
		{`{"type":"direct","type":"publish"}`, false},
		{`{"type":"direct","TYPE":"publish"}`, false},
		{`{"ty\u0070e":"direct"}`, false},
		{`{"recipient":"b"}`, false},
		{`{"recipient":"b","payload":{"type":"direct"}}`, false},
		{`{}`, false},
		{`{"type":"direct"`, false},
	} {
		got := withDefaultType(json.RawMessage(tc.in), "request")
		if tc.same {
			assert.Equal(t, tc.in, string(got), tc.in)
		} else {
			assert.Equal(t, string(prefixType(json.RawMessage(tc.in), "request")), string(got), tc.in)
		}
	}
	// A message in a request frame as the Go client writes it decodes on
	// the fast path: its type is not repeated.
	m := agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`{"a":1}`))
	m.Recipient = "w"
	b, err := Encode(&Frame{Op: OpRequest, ID: "1", Message: m})
	require.NoError(t, err)
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	require.Contains(t, string(b), string(raw))
	assert.Equal(t, string(raw), string(withDefaultType(raw, "request")))
}

// FuzzWithDefaultTypeMatchesPrefix: leaving the default type out changes
// nothing a message decodes to, nor whether it decodes.
func FuzzWithDefaultTypeMatchesPrefix(f *testing.F) {
	for _, s := range []string{`{"type":"direct","recipient":"b"}`, `{"Type":"publish"}`, `{"type":null}`,
		`{"recipient":"b","payload":{"type":"x"}}`, `{"type":"direct","type":"fax"}`, `{"type":"fax"}`,
		` { "type" : "request" , "payload" : [1,"\"}"] } `, `{"type":"direct",}`, `{"type":"direct"} x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return
		}
		for _, typ := range []string{"direct", "request", "response", "publish"} {
			var a, b agentbus.Message
			errA := a.UnmarshalJSON(withDefaultType(data, typ))
			errB := b.UnmarshalJSON(prefixType(data, typ))
			require.Equal(t, errA == nil, errB == nil, "%q: %v / %v", data, errA, errB)
			if errA == nil {
				require.True(t, reflect.DeepEqual(a, b), "%q\n%+v\n%+v", data, a, b)
			}
		}
	})
}
