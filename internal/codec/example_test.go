package codec_test

import (
	"fmt"

	"github.com/descartes/agentbus/internal/codec"
)

func Example() {
	fmt.Println(codec.Valid([]byte(`{"a": [1, "x"]}`)), codec.Valid([]byte(`{"a": [1,]}`)))

	b := codec.AppendString(nil, "<b> & \"quotes\"\n")
	fmt.Println(string(b))

	b, err := codec.AppendCompact(nil, []byte(`{ "note" : "looks fine", "n" : [ 1 , 2 ] }`))
	fmt.Println(string(b), err)

	d := codec.NewDecoder([]byte(`"caf\u00e9"`))
	defer d.Release()
	v, err := d.ReadValue()
	fmt.Println(string(codec.AppendText(nil, v)), err)
	// Output:
	// true false
	// "<b> & \"quotes\"\n"
	// {"note":"looks fine","n":[1,2]} <nil>
	// café <nil>
}
