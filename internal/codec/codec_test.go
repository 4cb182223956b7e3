package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAppendString checks the escaping policy of the package doc.
func TestAppendString(t *testing.T) {
	for _, tc := range []struct{ give, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`say "hi" \o/`, `"say \"hi\" \\o/"`},
		{"\n\r\t\b\f", `"\n\r\t\b\f"`},
		{"\x00\x01\x1f", `"\u0000\u0001\u001f"`},
		{"\x7f", "\"\x7f\""},
		{"<a href='x'>&amp;</a>", `"<a href='x'>&amp;</a>"`},
		{"\u2028\u2029", "\"\u2028\u2029\""},
		{"é 世 😀", `"é 世 😀"`},
		{"a\xffb\xe2\x82", "\"a\uFFFDb\uFFFD\uFFFD\""},
		{"\xed\xa0\x80", "\"\uFFFD\uFFFD\uFFFD\""},
	} {
		got := AppendString([]byte("x"), tc.give)
		assert.Equal(t, "x"+tc.want, string(got), "%q", tc.give)
		assert.Equal(t, string(got), string(AppendString([]byte("x"), []byte(tc.give))), "the same for bytes")
		var back, want string
		require.NoError(t, json.Unmarshal(got[1:], &back))
		std, err := json.Marshal(tc.give)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(std, &want))
		assert.Equal(t, want, back, "%q decodes to what encoding/json makes of it", tc.give)
	}
}

// FuzzAppendString: every string is written as valid UTF-8 JSON without a
// raw control character, and decodes to what encoding/json decodes from
// its own encoding.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b\\c", "\n\x00\x7f", "<>&\u2028", "\xff\xe2\x82", "😀"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := AppendString(nil, s)
		require.True(t, utf8.Valid(got), "%q", got)
		require.True(t, json.Valid(got), "%q", got)
		for _, c := range got {
			require.False(t, c < 0x20, "raw control character in %q", got)
		}
		std, err := json.Marshal(s)
		require.NoError(t, err)
		var a, b string
		require.NoError(t, json.Unmarshal(got, &a))
		require.NoError(t, json.Unmarshal(std, &b))
		require.Equal(t, b, a, "%q", s)
	})
}

// requireCompacts checks AppendCompact and AppendCompactFrom against
// encoding/json.Compact on v: the same output, or an error from all.
func requireCompacts(t *testing.T, v []byte) {
	t.Helper()
	orig := bytes.Clone(v)
	var want bytes.Buffer
	wantErr := json.Compact(&want, v)

	got, err := AppendCompact([]byte("x"), v)
	require.Equal(t, orig, v, "v is not modified")
	if wantErr != nil {
		require.Error(t, err, "json.Compact refuses %q", v)
		require.Equal(t, "x", string(got), "on error b is returned as it was")
	} else {
		require.NoError(t, err, "%q", v)
		require.Equal(t, "x"+want.String(), string(got), "%q", v)
	}

	d := NewDecoder(v)
	defer d.Release()
	got, err = AppendCompactFrom(&d.Decoder, []byte("x"))
	if err == nil { // then the value must be all there is
		if _, err = d.ReadToken(); err == io.EOF {
			err = nil
		} else {
			err = errors.New("more after the value")
		}
	}
	if wantErr != nil {
		require.Error(t, err, "json.Compact refuses %q", v)
		return
	}
	require.NoError(t, err, "%q", v)
	require.Equal(t, "x"+want.String(), string(got), "%q", v)
}

func TestAppendCompact(t *testing.T) {
	for _, v := range []string{
		`0`, `{}`, `[]`, `"a b"`, `{"note":"looks fine to me","n":1}`, `{"a": 1}`, "[1,\n2]", " \t{ \"a\" : [ 1 , { } , [ ] ] } \r\n",
		`{"s":"tab\there","e":"\" x"}`, `{"q":"\\" }`, `{"x":"y z"`, `nope nope`, `"unterminated `, `1 2`, ``, ` `,
		`[" ",{"k":" "},[" "]]`, `"a \u00e9 \\ b \/"`, ` "lead"`, `"trail" `, "\"\xff \"", `{"a":1,"a":2}`, `[1,]`,
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000), strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	} {
		requireCompacts(t, []byte(v))
	}
}

// FuzzAppendCompact: AppendCompact and AppendCompactFrom make what
// encoding/json.Compact makes of any input, or refuse what it refuses.
func FuzzAppendCompact(f *testing.F) {
	for _, tc := range validCases {
		if len(tc.in) <= 4096 {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(requireCompacts)
}

func TestAppendFormatted(t *testing.T) {
	got, err := AppendFormatted([]byte("x"), []byte(` {"\u003ca\u003e": [1, "\u0026\u2028\ufffd\/", 2.50]} `))
	require.NoError(t, err)
	assert.Equal(t, "x{\"<a>\":[1,\"&\u2028\uFFFD/\",2.50]}", string(got), "strings in the shortest form; numbers as they are")
	got, err = AppendFormatted([]byte("x"), []byte(`{"a":`))
	require.Error(t, err)
	assert.Equal(t, "x", string(got))
}

func TestAppendText(t *testing.T) {
	for _, tc := range []struct{ give, want string }{
		{`""`, ""},
		{`"plain"`, "plain"},
		{`"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"`, "\"\\/\b\f\n\r\té😀"},
		{`"\ud83d"`, "\uFFFD"},
		{`"\ude00\ud83d"`, "\uFFFD\uFFFD"},
		{`"\ud83dx"`, "\uFFFDx"},
		{"\"a\xffb\"", "a\uFFFDb"},
		{"\"\xe2\x82\"", "\uFFFD\uFFFD"},
	} {
		var want string
		require.NoError(t, json.Unmarshal([]byte(tc.give), &want))
		require.Equal(t, tc.want, want, "the table agrees with encoding/json")
		assert.Equal(t, "x"+tc.want, string(AppendText([]byte("x"), jsontext.Value(tc.give))), tc.give)
	}
}

func TestMatch(t *testing.T) {
	names := []string{"id", "type", "request_id", "sender"}
	for _, tc := range []struct {
		give string
		want int
	}{
		{`"id"`, 0},
		{`"ID"`, 0},
		{`"Type"`, 1},
		{`"\u0069d"`, 0},
		{`"REQUEST_ID"`, 2},
		{`"request-id"`, -1},
		{`"requestid"`, -1},
		{`"ſender"`, 3}, // U+017F folds to s, as encoding/json matches it
		{`"x"`, -1},
		{`""`, -1},
	} {
		assert.Equal(t, tc.want, Match(jsontext.Value(tc.give), names...), tc.give)
	}
}

func TestValidNumber(t *testing.T) {
	for _, tc := range []struct {
		give string
		want bool
	}{
		{"0", true}, {"-1.5e+3", true}, {"12", true}, {"", false}, {"01", false}, {"1.", false}, {".5", false},
		{" 1", false}, {"1 ", false}, {"-", false}, {"1 2", false}, {"+1", false}, {"1e", false}, {`"1"`, false},
	} {
		assert.Equal(t, tc.want, ValidNumber(tc.give), "%q", tc.give)
		assert.Equal(t, tc.want, ValidNumber([]byte(tc.give)), "%q", tc.give)
	}
}

// TestDecoderReuse: a decoder from the pool reads its own input, whatever
// the one before it read, and leaves the input as it was.
func TestDecoderReuse(t *testing.T) {
	for _, in := range []string{`{"a":[1,2]}`, `"x"`, `[`, `{"b":"\u00e9"}`, ``} {
		data := []byte(in)
		orig := bytes.Clone(data)
		d := NewDecoder(data)
		v, err := d.ReadValue()
		if json.Valid(data) {
			require.NoError(t, err, in)
			assert.Equal(t, strings.TrimSpace(in), string(v))
		} else {
			require.Error(t, err, in)
		}
		d.Release()
		assert.Equal(t, orig, data, "the input is not modified")
	}
}
