package wire_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/cluster/wire"
)

func TestRoundTrip(t *testing.T) {
	m := actors.NewMessage(actors.TypeRequest, "a", []byte(`{"x":[1,2]}`)).WithRecipient("b").
		WithTopic("t.u").WithRequestID("r1").WithCorrelationID("c1").WithPriority(77).
		WithTTL(1500*time.Millisecond).WithMetadata("traceparent", "00-x").RequireAck()
	m.Attempts = 2
	require.NoError(t, m.Validate(0)) // as the bus did when it accepted it
	d := wire.EncodeDelivery(m, 3*time.Second, "n/1")
	c := cap(d)
	d = wire.AppendSeq(d, 1<<63) // the longest sequence number
	assert.Equal(t, c, cap(d), "the room EncodeDelivery left holds the seq")
	b, err := wire.Marshal(&wire.Frame{Kind: wire.Kind_DELIVER, From: "n/1", Deliveries: [][]byte{d}})
	require.NoError(t, err)
	f, err := wire.Unmarshal(b)
	require.NoError(t, err)
	in, err := wire.DecodeDelivery(f.GetDeliveries()[0])
	require.NoError(t, err)
	assert.Equal(t, wire.Incoming{Seq: 1 << 63, Message: wire.Encode(m), Patience: 3 * time.Second, Origin: "n/1"}, in)
	got, err := wire.Decode(in.Message, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, m, got)

	// The hand-written delivery is the Delivery of wire.proto, so a frame's
	// deliveries are what a repeated Delivery field holds.
	var pd wire.Delivery
	require.NoError(t, proto.Unmarshal(d, &pd))
	assert.EqualValues(t, uint64(1<<63), pd.GetSeq())
	assert.Equal(t, wire.Encode(m), pd.GetMessage())
	assert.Equal(t, int64(3*time.Second), pd.GetPatienceNs())
	assert.Equal(t, "n/1", pd.GetOrigin())
	sameIn, err := wire.DecodeDelivery(mustMarshalProto(t, &pd))
	require.NoError(t, err)
	assert.Equal(t, in, sameIn)

	// The hand-written encoding is the Envelope of wire.proto.
	var e wire.Envelope
	require.NoError(t, proto.Unmarshal(wire.Encode(m), &e))
	assert.Equal(t, m.ID, e.GetId())
	assert.Equal(t, "00-x", e.GetMetadata()["traceparent"])
	assert.EqualValues(t, 77, e.GetPriority())
	assert.Equal(t, m.Timestamp.UnixNano(), e.GetTimestampUnixNano())
	assert.True(t, e.GetRequiresAck())
	again, err := wire.Decode(mustMarshal(t, &e), 1<<20)
	require.NoError(t, err)
	assert.Equal(t, m, again)
}

func mustMarshal(t *testing.T, e *wire.Envelope) []byte { return mustMarshalProto(t, e) }

func mustMarshalProto(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

// TestEncodedSizes checks that the encoders allocate exactly what they
// write, for messages with and without each optional field.
func TestEncodedSizes(t *testing.T) {
	full := actors.NewMessage(actors.TypeRequest, "a", []byte(`{"x":1}`)).WithRecipient("b").WithTopic("t").
		WithRequestID("r").WithCorrelationID("c").WithTTL(time.Hour).WithMetadata("k", "v").
		WithMetadata("", "").RequireAck()
	full.Attempts = 1 << 40 // clamped to int32
	old := actors.NewMessage(actors.TypeDirect, "a", nil).WithRecipient("b")
	old.Timestamp = time.Unix(-5, 0) // a negative varint: ten bytes
	for _, m := range []*actors.Message{full, old, actors.NewMessage(actors.TypeDirect, "", nil), {ID: "x"}} {
		e := wire.Encode(m)
		assert.Equal(t, len(e), cap(e))
		for _, o := range []string{"", "node/1"} {
			d := wire.EncodeDelivery(m, time.Duration(len(o)), o)
			assert.Len(t, d, cap(d)-11, "room for the seq, and no more")
			in, err := wire.DecodeDelivery(wire.AppendSeq(d, 7))
			require.NoError(t, err)
			assert.Len(t, in.Message, len(e)) // metadata goes in map order
		}
	}
}

func TestDecodeDeliveryRefuses(t *testing.T) {
	for _, b := range [][]byte{
		{0xff},             // a truncated tag
		{0x08},             // seq without its value
		{0x12, 0x05, 'x'},  // message shorter than its length
		{0x0a, 0x00},       // seq as bytes
		{0x10, 0x01},       // message as a varint
		{0x22, 0x01, 0xff}, // origin not UTF-8
		{0xa3, 0x06},       // an unknown group left open
	} {
		_, err := wire.DecodeDelivery(b)
		require.ErrorIs(t, err, wire.ErrMalformed, "%x", b)
	}
	in, err := wire.DecodeDelivery([]byte{0x08, 0x05, 0xa0, 0x06, 0x01}) // an unknown field of a newer version
	require.NoError(t, err)
	assert.EqualValues(t, 5, in.Seq)
}

func TestDecodeRefuses(t *testing.T) {
	ok := func() *wire.Envelope {
		var e wire.Envelope
		m := actors.NewMessage(actors.TypeDirect, "a", []byte(`1`)).WithRecipient("b")
		if err := proto.Unmarshal(wire.Encode(m), &e); err != nil {
			panic(err)
		}
		return &e
	}
	tests := []struct {
		name   string
		mutate func(e *wire.Envelope) *wire.Envelope
	}{
		{"empty", func(*wire.Envelope) *wire.Envelope { return &wire.Envelope{} }},
		{"no id", func(e *wire.Envelope) *wire.Envelope { e.Id = ""; return e }},
		{"unknown type", func(e *wire.Envelope) *wire.Envelope { e.Type = 99; return e }},
		{"type overflow", func(e *wire.Envelope) *wire.Envelope { e.Type = 257; return e }},
		{"priority", func(e *wire.Envelope) *wire.Envelope { e.Priority = 101; return e }},
		{"payload not JSON", func(e *wire.Envelope) *wire.Envelope { e.Payload = []byte("{"); return e }},
		{"no recipient", func(e *wire.Envelope) *wire.Envelope { e.Recipient = ""; return e }},
		{"bad recipient", func(e *wire.Envelope) *wire.Envelope { e.Recipient = "a/b"; return e }},
		{"negative ttl", func(e *wire.Envelope) *wire.Envelope { e.TtlNs = -1; return e }},
		{"too large", func(e *wire.Envelope) *wire.Envelope { e.Payload = make([]byte, 2000); return e }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wire.Decode(mustMarshal(t, tt.mutate(ok())), 1000)
			require.ErrorIs(t, err, wire.ErrMalformed)
		})
	}
}

func TestDecodeRefusesGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {0xff}, {0x0a, 0x7f}, {0x10, 0x01, 0x0a}, {0x12, 0x01, 'x'}} {
		_, err := wire.Decode(b, 1000)
		require.ErrorIs(t, err, wire.ErrMalformed, "%x", b)
	}
	bad := &wire.Envelope{Id: "x", Type: 1, Recipient: "b", Metadata: map[string]string{"k": "v"}}
	b := mustMarshal(t, bad)
	b = append(b, 0xa2, 0x06, 0x00) // an unknown field (100) of a newer version is skipped
	_, err := wire.Decode(b, 1000)
	require.NoError(t, err)
}

func TestUnmarshalRefuses(t *testing.T) {
	other, err := proto.Marshal(&wire.Frame{Version: 2, Kind: wire.Kind_STATE, From: "n/1"})
	require.NoError(t, err)
	_, err = wire.Unmarshal(other)
	require.ErrorIs(t, err, wire.ErrVersion)
	for _, b := range [][]byte{{0xff}, nil} {
		_, err = wire.Unmarshal(b)
		require.Error(t, err)
	}
	noKind, err := proto.Marshal(&wire.Frame{Version: wire.Version, From: "n/1"})
	require.NoError(t, err)
	_, err = wire.Unmarshal(noKind)
	require.ErrorIs(t, err, wire.ErrMalformed)
}
