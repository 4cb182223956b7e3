package protocol_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protocol"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantErr  bool
		badMsg   bool   // the error is agentbus.ErrInvalidMessage, not protocol.ErrInvalidFrame
		op, id   string // what is read, also on error
		msgType  agentbus.MessageType
	}{
		{name: "ping", in: `{"op":"ping","id":"1"}`, op: "ping", id: "1"},
		{name: "unknown fields ignored", in: `{"op":"ping","id":"1","future":{"x":[1]}}`, op: "ping", id: "1"},
		{name: "send defaults to direct", in: `{"op":"send","message":{"recipient":"b"}}`, op: "send", msgType: agentbus.TypeDirect},
		{name: "empty message object", in: `{"op":"publish","message":{}}`, op: "publish", msgType: agentbus.TypePublish},
		{name: "explicit type wins", in: `{"op":"send","message":{"type":"heartbeat","recipient":"b"}}`, op: "send", msgType: agentbus.TypeHeartbeat},
		{name: "request", in: `{"op":"request","message":{ "recipient":"b"}}`, op: "request", msgType: agentbus.TypeRequest},
		{name: "respond", in: `{"op":"respond","message":{"request_id":"r"}}`, op: "respond", msgType: agentbus.TypeResponse},
		{name: "null message", in: `{"op":"send","message":null}`, op: "send"},
		{name: "not json", in: `nope`, wantErr: true},
		{name: "array", in: `[]`, wantErr: true},
		{name: "no op", in: `{"id":"7"}`, wantErr: true, id: "7"},
		{name: "op not a string", in: `{"op":1,"id":"8"}`, wantErr: true, id: "8"},
		{name: "message not an object", in: `{"op":"send","id":"9","message":"x"}`, wantErr: true, op: "send", id: "9"},
		{name: "bad message type", in: `{"op":"send","id":"a","message":{"type":"fax"}}`, wantErr: true, badMsg: true, op: "send", id: "a"},
		{name: "bad priority", in: `{"op":"send","message":{"priority":"high"}}`, wantErr: true, badMsg: true, op: "send"},
		{name: "invalid utf-8", in: "{\"op\":\"ping\",\"id\":\"\xff\"}", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := protocol.Decode([]byte(tc.in))
			if tc.wantErr {
				if tc.badMsg {
					require.ErrorIs(t, err, agentbus.ErrInvalidMessage)
				} else {
					require.ErrorIs(t, err, protocol.ErrInvalidFrame)
				}
				if tc.op != "" || tc.id != "" {
					require.NotNil(t, f)
					assert.Equal(t, tc.op, f.Op)
					assert.Equal(t, tc.id, f.ID)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.op, f.Op)
			assert.Equal(t, tc.id, f.ID)
			if tc.msgType != 0 {
				require.NotNil(t, f.Message)
				assert.Equal(t, tc.msgType, f.Message.Type)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	m := agentbus.NewMessage(agentbus.TypeRequest, "a", []byte(`{"x":[1,2,"\u00e9"]}`))
	m.Recipient, m.Priority, m.TTL = "b", 77, 1500*time.Millisecond
	frames := []*protocol.Frame{
		{Op: protocol.OpDeliver, Agent: "b", Message: m},
		{Op: protocol.OpDeliver, Agent: "quote\"and\\slash<tag>", Message: m},
		{Op: protocol.OpOK, ID: "1", MessageID: "m1"},
		{Op: protocol.OpOK, ID: "ünïcode\n"},
		{Op: protocol.OpWelcome, ID: "h", Version: 1, Server: "agentbus/0.1", MaxFrame: 1 << 20},
		{Op: protocol.OpError, ID: "2", Code: protocol.CodeNoRecipient, Error: "no such recipient"},
		{Op: protocol.OpDeadLetters, ID: "3", Letters: []protocol.Letter{protocol.FromLetter(deadletter.Letter{
			Seq: 4, Message: m, Reason: deadletter.Expired, Agent: "b", Time: time.Unix(1, 0).UTC()})}},
		{Op: protocol.OpStats, ID: "4", Stats: json.RawMessage(`{"totals":{"sent":1}}`)},
	}
	for _, f := range frames {
		t.Run(f.Op, func(t *testing.T) {
			b, err := protocol.Encode(f)
			require.NoError(t, err)
			require.True(t, json.Valid(b), string(b))
			require.NotContains(t, string(b), "\n")
			g, err := protocol.Decode(b)
			require.NoError(t, err)
			want, _ := json.Marshal(f)
			got, _ := json.Marshal(g)
			assert.JSONEq(t, string(want), string(got))
		})
	}
	_, err := protocol.Encode(&protocol.Frame{Op: protocol.OpDeliver, Message: &agentbus.Message{}})
	require.Error(t, err, "a message of no type cannot be encoded")
}

func TestFromLetterForeignValue(t *testing.T) {
	l := protocol.FromLetter(deadletter.Letter{Seq: 1, Value: 42, Reason: deadletter.NoRecipient})
	assert.Equal(t, "int 42", l.Value)
	assert.Nil(t, l.Message)
}

func TestCodes(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range protocol.Codes() {
		require.False(t, seen[c], "duplicate code %s", c)
		seen[c] = true
		// Every code survives the trip through an error frame.
		err := protocol.FrameError(&protocol.Frame{Op: protocol.OpError, Code: c, Error: "x"})
		assert.Equal(t, c, protocol.CodeOf(err), c)
	}
	for _, tc := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("wrapped: %w", agentbus.ErrNoRecipient), protocol.CodeNoRecipient},
		{agentbus.ErrBackpressureTimeout, protocol.CodeBackpressureTimeout},
		{agentbus.ErrRequestTimeout, protocol.CodeRequestTimeout},
		{agentbus.ErrTransportClosed, protocol.CodeTransportClosed},
		{protocol.ErrInvalidFrame, protocol.CodeInvalidFrame},
		{errors.New("mystery"), protocol.CodeInternal},
	} {
		assert.Equal(t, tc.code, protocol.CodeOf(tc.err), tc.err.Error())
		f := protocol.ErrorFrame("id", tc.err)
		back := protocol.FrameError(f)
		if tc.code != protocol.CodeInternal {
			assert.ErrorIs(t, back, errors.Unwrap(back))
		}
		assert.Equal(t, tc.err.Error(), back.Error())
	}
	assert.ErrorIs(t, protocol.FrameError(&protocol.Frame{Code: "from_the_future"}), protocol.ErrInternal)
	assert.Contains(t, protocol.FrameError(&protocol.Frame{Code: "closed"}).Error(), "closed")
	assert.ErrorIs(t, protocol.FrameError(&protocol.Frame{Code: "no_recipient"}), agentbus.ErrNoRecipient)
}

// FuzzDecode feeds arbitrary frames to the decoder: it never panics, and a
// frame it accepts encodes again to a frame that decodes to the same.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"op":"ping","id":"1"}`,
		`{"op":"send","id":"2","message":{"recipient":"b","payload":{"a":[1,2]},"priority":9,"ttl_ms":1.5}}`,
		`{"op":"publish","message":{"topic":"a.b","requires_ack":true,"metadata":{"traceparent":"x"}}}`,
		`{"op":"respond","message":{"request_id":"r","payload":"\u00e9"}}`,
		`{"op":"hello","version":1,"client":"c"}`,
		`{"op":"send","message":{}}`,
		`{"op":"send","message":{ }}`,
		`{"op":"send","message":[]}`,
		`{"op":1}`,
		"{\"op\":\"x\xff\"}",
		`nope`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := protocol.Decode(data)
		if err != nil {
			if !errors.Is(err, agentbus.ErrInvalidMessage) {
				require.ErrorIs(t, err, protocol.ErrInvalidFrame)
			}
			return
		}
		b, err := protocol.Encode(fr)
		require.NoError(t, err)
		again, err := protocol.Decode(b)
		require.NoError(t, err, "%s", b)
		require.Equal(t, fr.Op, again.Op)
		require.Equal(t, fr.ID, again.ID)
		if fr.Message != nil {
			require.NotNil(t, again.Message)
			require.Equal(t, fr.Message.ID, again.Message.ID)
			require.Equal(t, fr.Message.Type, again.Message.Type)
			require.Equal(t, fr.Message.Priority, again.Message.Priority)
			require.Equal(t, string(fr.Message.Payload), string(again.Message.Payload))
		}
	})
}

// FuzzDecodeIntoMatchesDecode: DecodeInto into a frame already used gives
// what Decode gives, error and salvaged op and id included.
func FuzzDecodeIntoMatchesDecode(f *testing.F) {
	for _, s := range []string{
		`{"op":"ping","id":"1"}`,
		`{"op":"send","id":"2","message":{"recipient":"b","payload":{"a":[1,2]}}}`,
		`{"op":"respond","message":{"request_id":"r","payload":"\u00e9"}}`,
		`{"op":"stats","id":"s","stats":{"a":1}}`,
		`{"op":"send","id":"9","message":"x"}`,
		`{"id":"7"}`, `nope`, "{\"op\":\"x\xff\"}",
	} {
		f.Add([]byte(s))
	}
	used := &protocol.Frame{Op: "old", ID: "old", Agent: "old", Limit: 9, Message: agentbus.NewMessage(agentbus.TypeDirect, "x", nil),
		Stats: json.RawMessage(`{}`), Letters: []protocol.Letter{{Seq: 1}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantErr := protocol.Decode(data)
		got := *used
		err := protocol.DecodeInto(&got, data)
		require.Equal(t, wantErr == nil, err == nil, "%q", data)
		if err != nil {
			require.Equal(t, wantErr.Error(), err.Error())
			if want == nil {
				want = &protocol.Frame{}
			}
			require.Equal(t, want.Op, got.Op)
			require.Equal(t, want.ID, got.ID)
			return
		}
		wantJSON, err1 := json.Marshal(want)
		gotJSON, err2 := json.Marshal(&got)
		require.NoError(t, err1)
		require.NoError(t, err2)
		require.Equal(t, string(wantJSON), string(gotJSON))
	})
}
