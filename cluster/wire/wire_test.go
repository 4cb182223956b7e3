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
	b, err := wire.Marshal(&wire.Frame{Kind: wire.Kind_DELIVER, From: "n/1", Seq: 9, Message: wire.Encode(m)})
	require.NoError(t, err)
	f, err := wire.Unmarshal(b)
	require.NoError(t, err)
	got, err := wire.Decode(f.GetMessage(), 1<<20)
	require.NoError(t, err)
	assert.Equal(t, m, got)
	assert.EqualValues(t, 9, f.GetSeq())
}

func TestDecodeRefuses(t *testing.T) {
	ok := func() *wire.Envelope {
		return wire.Encode(actors.NewMessage(actors.TypeDirect, "a", []byte(`1`)).WithRecipient("b"))
	}
	tests := []struct {
		name   string
		mutate func(e *wire.Envelope) *wire.Envelope
	}{
		{"nil", func(*wire.Envelope) *wire.Envelope { return nil }},
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
			_, err := wire.Decode(tt.mutate(ok()), 1000)
			require.ErrorIs(t, err, wire.ErrMalformed)
		})
	}
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
