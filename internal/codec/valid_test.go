package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type validCase struct {
	name string
	in   string
	want bool // what encoding/json.Valid returns (asserted too)
}

// nest returns depth levels of nesting built from open/close around inner.
func nest(open, close, inner string, depth int) string {
	return strings.Repeat(open, depth) + inner + strings.Repeat(close, depth)
}

var validCases = []validCase{
	// Empty and whitespace.
	{"empty", "", false},
	{"space only", " ", false},
	{"all whitespace", " \t\r\n", false},
	{"ws around value", " \t\r\n1 \t\r\n", true},
	{"vertical tab", "\v1", false},
	{"form feed", "1\f", false},
	{"NBSP", "\u00a01", false},
	{"NUL before", "\x001", false},
	{"NUL after", "1\x00", false},
	{"BOM", "\ufeff{}", false},
	{"BOM after", "{}\ufeff", false},

	// Literals.
	{"true", "true", true},
	{"false", "false", true},
	{"null", "null", true},
	{"True", "True", false},
	{"NULL", "NULL", false},
	{"tru", "tru", false},
	{"fals", "fals", false},
	{"nul", "nul", false},
	{"truex", "truex", false},
	{"true true", "true true", false},
	{"nulll", "nulll", false},
	{"t", "t", false},
	{"NaN", "NaN", false},
	{"Infinity", "Infinity", false},
	{"undefined", "undefined", false},

	// Numbers.
	{"zero", "0", true},
	{"neg zero", "-0", true},
	{"int", "123", true},
	{"neg int", "-123", true},
	{"leading zero", "01", false},
	{"neg leading zero", "-01", false},
	{"double zero", "00", false},
	{"zero frac", "0.5", true},
	{"minus", "-", false},
	{"minus minus", "--1", false},
	{"plus", "+1", false},
	{"trailing dot", "1.", false},
	{"leading dot", ".5", false},
	{"neg leading dot", "-.5", false},
	{"exp no digits", "1e", false},
	{"exp plus no digits", "1e+", false},
	{"exp minus no digits", "1e-", false},
	{"exp", "1e5", true},
	{"EXP", "1E5", true},
	{"exp plus", "1e+5", true},
	{"exp minus", "1E-5", true},
	{"frac exp", "-12.340e-010", true},
	{"dot exp", "1.e5", false},
	{"exp dot", "1e5.0", false},
	{"double exp", "1e5e5", false},
	{"huge exponent", "1e999999999999999999999999999999", true},
	{"huge mantissa", strings.Repeat("9", 1000), true},
	{"long fraction", "0." + strings.Repeat("0", 1000) + "1", true},
	{"hex", "0x10", false},
	{"two dots", "1.2.3", false},
	{"number space number", "1 2", false},
	{"minus space", "- 1", false},
	{"number then comma", "1,", false},
	{"in array", "[-0.0e+0,1E-0,0e0]", true},
	{"zero then digit in array", "[01]", false},
	{"exp letter", "1f", false},
	{"number then letter", "12a", false},

	// Strings.
	{"empty string", `""`, true},
	{"simple string", `"abc"`, true},
	{"unterminated", `"abc`, false},
	{"lone quote", `"`, false},
	{"all escapes", `"\" \\ \/ \b \f \n \r \t"`, true},
	{"bad escape a", `"\a"`, false},
	{"bad escape x", `"\x41"`, false},
	{"bad escape 0", `"\0"`, false},
	{"bad escape U", `"\U0041"`, false},
	{"bad escape apostrophe", `"\'"`, false},
	{"escape at end", `"\`, false},
	{"escaped quote unterminated", `"\"`, false},
	{"u escape", `"\u0041"`, true},
	{"u escape mixed case", `"\uAbCd\uabcd\uABCD"`, true},
	{"u escape short", `"\u12"`, false},
	{"u escape 3 digits", `"\u123"`, false},
	{"u escape nonhex", `"\u12G4"`, false},
	{"u escape truncated", `"\u12`, false},
	{"u escape no digits", `"\u"`, false},
	{"lone high surrogate", `"\uD800"`, true},
	{"lone low surrogate", `"\uDC00"`, true},
	{"reversed surrogates", `"\uDC00\uD800"`, true},
	{"surrogate pair", `"\uD83D\uDE00"`, true},
	{"u0000 escape", `"\u0000"`, true},
	{"raw NUL", "\"\x00\"", false},
	{"raw newline", "\"a\nb\"", false},
	{"raw tab", "\"a\tb\"", false},
	{"raw CR", "\"\r\"", false},
	{"raw 0x1f", "\"\x1f\"", false},
	{"raw 0x20", "\" \"", true},
	{"raw DEL", "\"\x7f\"", true},
	{"unicode", `"héllo, 世界 🚀"`, true},
	{"U+2028", "\"\u2028\u2029\"", true},
	{"invalid utf8 0xff", "\"\xff\"", true},
	{"invalid utf8 0x80", "\"\x80\x80\"", true},
	{"truncated utf8", "\"\xe4\xb8\"", true},
	{"overlong utf8", "\"\xc0\xaf\"", true},
	{"utf8 surrogate", "\"\xed\xa0\x80\"", true},
	{"invalid utf8 outside string", "\xff", false},
	{"invalid utf8 after value", "1\xff", false},
	{"single quotes", `'a'`, false},
	{"long string", `"` + strings.Repeat("abcdefgh", 200) + `"`, true},
	{"long string control at end", `"` + strings.Repeat("abcdefgh", 20) + "\x01\"", false},
	{"long string unterminated", `"` + strings.Repeat("abcdefgh", 20), false},
	{"long string escape each 7", `"` + strings.Repeat(`abcde\n`, 30) + `"`, true},
	{"string then string", `"a""b"`, false},

	// Arrays.
	{"empty array", "[]", true},
	{"empty array ws", "[ \n]", true},
	{"array", "[1,2,3]", true},
	{"array ws", "[ 1 , 2 , 3 ]", true},
	{"trailing comma array", "[1,2,]", false},
	{"leading comma array", "[,1]", false},
	{"double comma", "[1,,2]", false},
	{"comma only", "[,]", false},
	{"missing comma", "[1 2]", false},
	{"unclosed array", "[1,2", false},
	{"unclosed empty array", "[", false},
	{"close only", "]", false},
	{"mismatched close", "[}", false},
	{"mismatched nested", "[{]}", false},
	{"extra close", "[]]", false},
	{"colon in array", "[1:2]", false},
	{"nested arrays", "[[],[[]],[[[1]]]]", true},
	{"array of everything", `[null,true,false,0,-1.5e3,"s",[],{}]`, true},

	// Objects.
	{"empty object", "{}", true},
	{"empty object ws", "{ \t}", true},
	{"object", `{"a":1}`, true},
	{"object ws", ` { "a" : 1 , "b" : [ ] } `, true},
	{"trailing comma object", `{"a":1,}`, false},
	{"leading comma object", `{,"a":1}`, false},
	{"missing colon", `{"a" 1}`, false},
	{"missing value", `{"a":}`, false},
	{"missing key", `{:1}`, false},
	{"unquoted key", `{a:1}`, false},
	{"number key", `{1:1}`, false},
	{"null key", `{null:1}`, false},
	{"key only", `{"a"}`, false},
	{"double colon", `{"a"::1}`, false},
	{"comma instead of colon", `{"a",1}`, false},
	{"colon instead of comma", `{"a":1:"b":2}`, false},
	{"unclosed object", `{"a":1`, false},
	{"unclosed object after key", `{"a"`, false},
	{"unclosed object after colon", `{"a":`, false},
	{"unclosed object after comma", `{"a":1,`, false},
	{"unclosed empty object", "{", false},
	{"duplicate keys", `{"a":1,"a":2}`, true},
	{"escaped key", `{"\u0041\n":1}`, true},
	{"bad escape key", `{"\q":1}`, false},
	{"control char in key", "{\"a\x01\":1}", false},
	{"nested objects", `{"a":{"b":{"c":{}}}}`, true},
	{"object in array in object", `{"a":[{"b":[1,{"c":null}]}]}`, true},

	// Top-level structure.
	{"multiple values", "{} {}", false},
	{"multiple values no ws", "{}{}", false},
	{"two arrays", "[][]", false},
	{"value then garbage", `{"a":1}x`, false},
	{"value then comma", "[1],", false},
	{"top-level comma list", "1,2", false},
	{"top-level string", `"x"`, true},
	{"top-level key value", `"a":1`, false},
	{"comment", "// x\n1", false},
	{"block comment", "/* x */ 1", false},
	{"trailing newline", "{}\n", true},
	{"CRLF", "{\r\n\"a\":1\r\n}\r\n", true},

	// Realistic payload.
	{"task", `{"task":"summarize","doc":"reports/q3-revenue.md","budget":{"tokens":4000,"seconds":30},"tags":["finance","urgent"]}`, true},

	// Nesting depth: encoding/json accepts up to 10000 levels.
	{"array depth 256", nest("[", "]", "", 256), true},
	{"array depth 257", nest("[", "]", "", 257), true},
	{"array depth 9999", nest("[", "]", "", 9999), true},
	{"array depth 10000", nest("[", "]", "", maxDepth), true},
	{"array depth 10001", nest("[", "]", "", maxDepth+1), false},
	{"array depth 10000 with value", nest("[", "]", "1", maxDepth), true},
	{"array depth 10001 with value", nest("[", "]", "1", maxDepth+1), false},
	{"object depth 10000", nest(`{"a":`, "}", "{}", maxDepth-1), true},
	{"object depth 10001", nest(`{"a":`, "}", "{}", maxDepth), false},
	{"mixed depth 10000", nest(`[{"k":`, "}]", "null", maxDepth/2), true},
	{"mixed depth 10001", "[" + nest(`[{"k":`, "}]", "null", maxDepth/2) + "]", false},
	{"depth 10001 unclosed", strings.Repeat("[", maxDepth+1), false},
	{"depth 10000 unclosed", strings.Repeat("[", maxDepth), false},
	{"depth 10000 bad close", strings.Repeat("[", maxDepth) + strings.Repeat("}", maxDepth), false},
	{"depth 10000 mismatch deep", strings.Repeat("[", maxDepth-1) + "{}" + strings.Repeat("]", maxDepth-2) + "}", false},
	{"very deep", nest("[", "]", "", 1_000_000), false},
	{"deep siblings", "[" + strings.Repeat(nest("[", "]", "", 300)+",", 50) + "1]", true},
	{"deep then shallow mismatch", nest("[", "]", `{"a":[1]}`, 300) + "]", false},
	{"deep object kinds preserved", nest("[", "]", nest(`{"a":`, "}", "[]", 200)+`,{"b":2}`, 200), true},
	{"deep kind mismatch", nest("[", "]", nest(`{"a":`, "}", "[]", 200)+`,"b":2`, 200), false},
}

func TestValidTable(t *testing.T) {
	t.Parallel()
	for _, tc := range validCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			require.Equal(t, tc.want, json.Valid(in), "table expectation disagrees with encoding/json.Valid")
			assert.Equal(t, json.Valid(in), Valid(in))
		})
	}
}

// TestValidPrefixes checks every prefix and suffix of each table input.
// Prefixes exercise every kind of truncation; bytes after the end of the
// slice (still in the backing array) must never be read.
func TestValidPrefixes(t *testing.T) {
	t.Parallel()
	for _, tc := range validCases {
		if len(tc.in) > 500 {
			continue
		}
		in := []byte(tc.in)
		for k := 0; k <= len(in); k++ {
			pre, suf := in[:k], in[k:]
			require.Equal(t, json.Valid(pre), Valid(pre), "%s: prefix %q", tc.name, pre)
			require.Equal(t, json.Valid(suf), Valid(suf), "%s: suffix %q", tc.name, suf)
		}
	}
}

// TestValidExhaustiveShort compares against encoding/json for every input
// of up to four bytes over an alphabet of syntactically interesting bytes.
func TestValidExhaustiveShort(t *testing.T) {
	t.Parallel()
	alphabet := []byte("{}[]\":,-+.0159eEtfnu\\/ \t\n\x00\x1f\x7f\xc3\xff")
	const maxLen = 3
	buf := make([]byte, 0, maxLen)
	var walk func(int)
	walk = func(k int) {
		if got, want := Valid(buf), json.Valid(buf); got != want {
			require.Equal(t, want, got, "input %q", buf)
		}
		if k == maxLen {
			return
		}
		for _, c := range alphabet {
			buf = append(buf, c)
			walk(k + 1)
			buf = buf[:len(buf)-1]
		}
	}
	walk(0)
}

// TestValidStringBytes places every byte value, and pairs of special
// bytes, at every offset of string bodies up to 10 (pairs: 9) bytes long.
func TestValidStringBytes(t *testing.T) {
	t.Parallel()
	fillers := []byte{'a', 0x7f, 0xff}
	special := []byte{'"', '\\', 0x00, 0x1f, 0x20, 0x21, 'u', 'n', 0x7f, 0x80, 0xa2, 0xdc, 0xff}
	for _, fill := range fillers {
		for size := 1; size <= 10; size++ {
			body := bytes.Repeat([]byte{fill}, size)
			for p := range size {
				for c := range 256 {
					in := append(append([]byte{'"'}, body...), '"')
					in[1+p] = byte(c)
					require.Equal(t, json.Valid(in), Valid(in), "input %q", in)
				}
				if fill != 'a' && fill != 0xff || size > 9 {
					continue
				}
				for q := p + 1; q < size; q++ {
					for _, c1 := range special {
						for _, c2 := range special {
							in := append(append([]byte{'"'}, body...), '"')
							in[1+p], in[1+q] = c1, c2
							require.Equal(t, json.Valid(in), Valid(in), "input %q", in)
						}
					}
				}
			}
		}
	}
}

// genValue appends a random JSON value to b.
func genValue(r *rand.Rand, b []byte, depth int) []byte {
	k := r.IntN(9)
	if depth > 6 && k >= 7 {
		k = r.IntN(7)
	}
	switch k {
	case 0:
		return append(b, "null"...)
	case 1:
		return append(b, "true"...)
	case 2:
		return append(b, "false"...)
	case 3, 4:
		return genNumber(r, b)
	case 5, 6:
		return genString(r, b)
	case 7:
		b = append(b, '[')
		for j := range r.IntN(5) {
			if j > 0 {
				b = append(b, ',')
			}
			b = genSpace(r, b)
			b = genValue(r, b, depth+1)
			b = genSpace(r, b)
		}
		return append(b, ']')
	default:
		b = append(b, '{')
		for j := range r.IntN(5) {
			if j > 0 {
				b = append(b, ',')
			}
			b = genSpace(r, b)
			b = genString(r, b)
			b = genSpace(r, b)
			b = append(b, ':')
			b = genSpace(r, b)
			b = genValue(r, b, depth+1)
		}
		return append(b, '}')
	}
}

func genSpace(r *rand.Rand, b []byte) []byte {
	for r.IntN(4) == 0 {
		b = append(b, " \t\n\r"[r.IntN(4)])
	}
	return b
}

func genNumber(r *rand.Rand, b []byte) []byte {
	if r.IntN(3) == 0 {
		b = append(b, '-')
	}
	if r.IntN(4) == 0 {
		b = append(b, '0')
	} else {
		b = fmt.Appendf(b, "%d", 1+r.IntN(1_000_000))
	}
	if r.IntN(3) == 0 {
		b = fmt.Appendf(b, ".%d", r.IntN(10000))
	}
	if r.IntN(4) == 0 {
		b = append(b, "eE"[r.IntN(2)])
		if r.IntN(2) == 0 {
			b = append(b, "+-"[r.IntN(2)])
		}
		b = fmt.Appendf(b, "%d", r.IntN(400))
	}
	return b
}

func genString(r *rand.Rand, b []byte) []byte {
	b = append(b, '"')
	for range r.IntN(40) {
		switch r.IntN(12) {
		case 0:
			const esc = `"\/bfnrt`
			b = append(b, '\\', esc[r.IntN(len(esc))])
		case 1:
			b = fmt.Appendf(b, `\u%04x`, r.IntN(0x10000))
		case 2:
			const odd = "é世🚀\x7f\xff" // bytes chosen singly: often invalid UTF-8
			b = append(b, odd[r.IntN(len(odd))])
		default:
			c := byte(' ' + r.IntN(0x5f)) // printable ASCII
			if c == '"' || c == '\\' {
				c = '_'
			}
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// TestValidRandom generates random valid documents, then mutates them, and
// compares against encoding/json.
func TestValidRandom(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	iters := 5000
	if testing.Short() {
		iters = 1000
	}
	interesting := []byte("{}[]\",:\\-+.0eE tfnu\x00\x1f\x80")
	for range iters {
		doc := genSpace(r, genValue(r, genSpace(r, nil), 0))
		require.True(t, json.Valid(doc), "generator produced invalid JSON %q", doc)
		require.True(t, Valid(doc), "input %q", doc)
		for range 4 {
			m := bytes.Clone(doc)
			for range 1 + r.IntN(3) {
				p := r.IntN(len(m) + 1)
				switch r.IntN(3) {
				case 0: // replace
					if p < len(m) {
						m[p] = interesting[r.IntN(len(interesting))]
					}
				case 1: // insert
					m = append(m[:p], append([]byte{interesting[r.IntN(len(interesting))]}, m[p:]...)...)
				default: // delete
					if p < len(m) {
						m = append(m[:p], m[p+1:]...)
					}
				}
			}
			require.Equal(t, json.Valid(m), Valid(m), "input %q", m)
		}
	}
}

// TestValidDoesNotAllocate: valid input is checked without allocating (the
// decoder comes from a pool); only a refusal allocates, for its error.
func TestValidDoesNotAllocate(t *testing.T) {
	inputs := [][]byte{
		[]byte(`{"task":"summarize","doc":"reports/q3-revenue.md","budget":{"tokens":4000,"seconds":30},"tags":["finance","urgent"]}`),
		[]byte(nest("[", "]", "", 200)),
		[]byte(nest(`{"a":[`, "]}", "", 100)),
		benchKiB,
	}
	for _, in := range inputs {
		allocs := testing.AllocsPerRun(20, func() { Valid(in) })
		assert.Zero(t, allocs, "input of length %d", len(in))
	}
}

func TestValidDoesNotModifyInput(t *testing.T) {
	t.Parallel()
	in := []byte(`{"a":["x\n",1.5e3,true,null,{"b":"\uD800"}]}`)
	orig := bytes.Clone(in)
	require.True(t, Valid(in))
	require.Equal(t, orig, in)
}

func TestValidConcurrent(t *testing.T) {
	t.Parallel()
	payloads := [][]byte{
		[]byte(`{"task":"summarize","budget":{"tokens":4000}}`),
		[]byte(`{"task":"summarize",}`),
		[]byte(nest("[", "]", "", maxDepth)),
		[]byte(nest("[", "]", "", maxDepth+1)),
	}
	want := make([]bool, len(payloads))
	for i, p := range payloads {
		want[i] = json.Valid(p)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 50 {
				i := (g + k) % len(payloads)
				if Valid(payloads[i]) != want[i] {
					t.Errorf("payload %d: got %v, want %v", i, !want[i], want[i])
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzValid is a differential fuzz test against encoding/json.Valid.
func FuzzValid(f *testing.F) {
	for _, tc := range validCases {
		if len(tc.in) <= 4096 {
			f.Add([]byte(tc.in))
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 50 {
		f.Add(genValue(r, nil, 0))
	}
	f.Add(benchTask)
	f.Add(benchKiB)
	f.Add([]byte(nest("[", "]", "", 300)))
	f.Add([]byte(nest(`{"a":`, "}", "1", 300)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json.Valid = %v", b, got, want)
		}
	})
}

// FuzzValidAgreesWithJSONText checks the package's scanner against jsontext,
// with the options the decoders use.
func FuzzValidAgreesWithJSONText(f *testing.F) {
	for _, tc := range validCases {
		if len(tc.in) <= 4096 {
			f.Add([]byte(tc.in))
		}
	}
	f.Add(benchTask)
	f.Add([]byte("\"\xff\xfe\""))
	f.Add([]byte(`"\ud800"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), validJSONText(b); got != want {
			t.Fatalf("Valid(%q) = %v, jsontext = %v", b, got, want)
		}
	})
}
