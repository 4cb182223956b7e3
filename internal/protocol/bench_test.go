package protocol_test

import (
	"testing"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/protocol"
)

var payload = []byte(`{"task":"review","file":"internal/server/conn.go","line":42,"severity":"info","note":"looks fine to me"}`)

func frame(b *testing.B) []byte {
	m := agentbus.NewMessage(agentbus.TypeDirect, "producer", payload)
	m.Recipient = "consumer"
	f, err := protocol.Encode(&protocol.Frame{Op: protocol.OpDeliver, Agent: "consumer", Message: m})
	if err != nil {
		b.Fatal(err)
	}
	return f
}

func BenchmarkDecode(b *testing.B) {
	f := frame(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(f)))
	for b.Loop() {
		if _, err := protocol.Decode(f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	m := agentbus.NewMessage(agentbus.TypeDirect, "producer", payload)
	m.Recipient = "consumer"
	f := &protocol.Frame{Op: protocol.OpDeliver, Agent: "consumer", Message: m}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := protocol.Encode(f); err != nil {
			b.Fatal(err)
		}
	}
}
