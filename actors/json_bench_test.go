package actors_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
)

// encodeTokens writes m as AppendJSON does, token by token through a
// jsontext.Encoder: the library's way, which BenchmarkAppendJSON measures
// AppendJSON against (docs/performance.md, "JSON codec").
func encodeTokens(enc *jsontext.Encoder, m *actors.Message) error {
	str := func(name, v string) {
		if v != "" {
			_ = enc.WriteToken(jsontext.String(name))
			_ = enc.WriteToken(jsontext.String(v))
		}
	}
	_ = enc.WriteToken(jsontext.BeginObject)
	_ = enc.WriteToken(jsontext.String("id"))
	_ = enc.WriteToken(jsontext.String(m.ID))
	_ = enc.WriteToken(jsontext.String("type"))
	_ = enc.WriteToken(jsontext.String(m.Type.String()))
	str("sender", m.Sender)
	str("recipient", m.Recipient)
	str("topic", m.Topic)
	str("request_id", m.RequestID)
	str("correlation_id", m.CorrelationID)
	if len(m.Payload) > 0 {
		_ = enc.WriteToken(jsontext.String("payload"))
		if err := enc.WriteValue(jsontext.Value(m.Payload)); err != nil {
			return err
		}
	}
	_ = enc.WriteToken(jsontext.String("priority"))
	_ = enc.WriteToken(jsontext.Uint(uint64(m.Priority)))
	if !m.Timestamp.IsZero() {
		_ = enc.WriteToken(jsontext.String("timestamp"))
		_ = enc.WriteToken(jsontext.String(m.Timestamp.Format(time.RFC3339Nano)))
	}
	if m.Attempts != 0 {
		_ = enc.WriteToken(jsontext.String("attempts"))
		_ = enc.WriteToken(jsontext.Int(int64(m.Attempts)))
	}
	if m.RequiresAck {
		_ = enc.WriteToken(jsontext.String("requires_ack"))
		_ = enc.WriteToken(jsontext.True)
	}
	if m.Redelivered {
		_ = enc.WriteToken(jsontext.String("redelivered"))
		_ = enc.WriteToken(jsontext.True)
	}
	if m.TTL != 0 {
		_ = enc.WriteToken(jsontext.String("ttl_ms"))
		ms := strconv.FormatFloat(float64(m.TTL)/float64(time.Millisecond), 'f', -1, 64)
		_ = enc.WriteValue(jsontext.Value(ms))
	}
	if len(m.Metadata) > 0 {
		_ = enc.WriteToken(jsontext.String("metadata"))
		_ = enc.WriteToken(jsontext.BeginObject)
		keys := make([]string, 0, len(m.Metadata))
		for k := range m.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			_ = enc.WriteToken(jsontext.String(k))
			_ = enc.WriteToken(jsontext.String(m.Metadata[k]))
		}
		_ = enc.WriteToken(jsontext.EndObject)
	}
	return enc.WriteToken(jsontext.EndObject)
}

// benchMessages are a fresh message (its payload not yet known to be
// compact) and a decoded one (known compact), as the daemon encodes them.
func benchMessages(tb testing.TB) map[string]*actors.Message {
	fresh := actors.NewMessage(actors.TypeRequest, "planner",
		json.RawMessage(`{"task":"review","file":"internal/server/conn.go","line":42,"severity":"info","note":"looks fine to me"}`)).
		WithRecipient("coder").WithTTL(1500*time.Millisecond).WithMetadata(actors.TraceParent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	b, err := fresh.MarshalJSON()
	require.NoError(tb, err)
	var decoded actors.Message
	require.NoError(tb, decoded.UnmarshalJSON(b))
	return map[string]*actors.Message{"fresh": fresh, "decoded": &decoded}
}

func TestEncodeTokensWritesAppendJSON(t *testing.T) {
	for name, m := range benchMessages(t) {
		var buf bytes.Buffer
		enc := jsontext.NewEncoder(&buf, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true),
			jsontext.PreserveRawStrings(true))
		require.NoError(t, encodeTokens(enc, m))
		want, err := m.AppendJSON(nil)
		require.NoError(t, err)
		require.Equal(t, string(want)+"\n", buf.String(), name)
	}
}

// BenchmarkAppendJSON measures AppendJSON against the same message written
// token by token through a reused jsontext.Encoder, in the same run.
func BenchmarkAppendJSON(b *testing.B) {
	for name, m := range benchMessages(b) {
		b.Run(name+"/AppendJSON", func(b *testing.B) {
			out := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if out, err = m.AppendJSON(out[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(name+"/jsontext.Encoder", func(b *testing.B) {
			var buf bytes.Buffer
			enc := jsontext.NewEncoder(&buf)
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				enc.Reset(&buf, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true),
					jsontext.PreserveRawStrings(true))
				if err := encodeTokens(enc, m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
