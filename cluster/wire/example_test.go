package wire_test

import (
	"fmt"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/cluster/wire"
)

// A message crosses between nodes as an encoded Envelope inside a Frame,
// and is validated as it is decoded.
func ExampleDecode() {
	m := actors.NewMessage(actors.TypeDirect, "planner", []byte(`{"task":1}`)).WithRecipient("coder").WithPriority(80)
	got, err := wire.Decode(wire.Encode(m), 1<<20)
	fmt.Println(got.Sender, "->", got.Recipient, got.Priority, string(got.Payload), err)

	_, err = wire.Decode([]byte{0x12, 0x01}, 1<<20)
	fmt.Println(err != nil)
	// Output:
	// planner -> coder 80 {"task":1} <nil>
	// true
}
