package codec

// The one scanner of its own the package keeps: payload validity, checked on
// every fresh message's Send. jsontext's Value.IsValid, which agrees with it
// on every input (FuzzValid and FuzzValidAgreesWithJSONText), costs about 2.5
// times as much: on the reference machine, for the 126-byte task payload of
// the benchmarks, 150-160 ns against 400-430 ns (encoding/json.Valid: 600-850
// ns), which is a fresh Send 40 % slower (BenchmarkSend/bus-new, 960 -> 1370
// ns). BenchmarkValid measures all three. It validates only: every decoder
// reads JSON with jsontext.
//
// It accepts exactly the inputs accepted by encoding/json.Valid: a single RFC
// 8259 JSON value with optional surrounding whitespace (space, tab, newline,
// carriage return). Like encoding/json, it does not validate UTF-8 inside
// strings (any byte >= 0x20 other than '"' and '\\' is accepted), it accepts
// \u escapes that denote lone or mismatched UTF-16 surrogates, and it rejects
// values nested more than 10000 levels deep. Validation is iterative; nesting
// is tracked in a bit stack (one bit per open container) held in fixed-size
// arrays on the goroutine stack, so no input can cause recursion or a heap
// allocation.

import (
	"encoding/binary"
	"math/bits"
)

// maxDepth is the deepest nesting accepted, matching maxNestingDepth in
// encoding/json's scanner: depth 10000 is valid, depth 10001 is not.
const maxDepth = 10000

// shallowWords is the size, in 64-bit words, of the bit stack used by the
// first validation attempt (256 levels). Inputs nesting deeper than that
// are re-validated from the start with a bit stack large enough for
// maxDepth levels (about 1.2 KiB, still on the goroutine stack), so that
// ordinary inputs do not pay for zeroing the large stack.
const shallowWords = 4

const deepWords = (maxDepth + 63) / 64

type result uint8

const (
	resultInvalid result = iota
	resultValid
	resultTooDeep // nesting exceeded the supplied bit stack; retry with a bigger one
)

// scanValid reports whether data is a valid JSON encoding. It returns exactly
// what encoding/json.Valid (and jsontext with the package's options) returns
// for the same input.
//
// Valid is a pure function: it does not retain or modify data, does not
// allocate, never blocks, and is safe for concurrent use. It runs in time
// linear in len(data) and uses a bounded amount of stack regardless of the
// input's nesting depth.
func scanValid(data []byte) bool {
	var stack [shallowWords]uint64
	r := validate(data, stack[:])
	if r != resultTooDeep {
		return r == resultValid
	}
	return validDeep(data)
}

// validDeep validates data with a bit stack that can hold maxDepth levels.
// It is kept out of line so that Valid's frame stays small.
//
//go:noinline
func validDeep(data []byte) bool {
	var stack [deepWords]uint64
	return validate(data, stack[:]) == resultValid
}

// validate checks data using stack as a bit stack of open container kinds
// (bit set: object, bit clear: array). It reports resultTooDeep if the
// nesting outgrows stack before any error is found and before maxDepth is
// exceeded. stack does not escape.
func validate(data []byte, stack []uint64) result {
	n := len(data)
	i := 0
	depth := 0        // number of currently open containers
	inObject := false // kind of the innermost open container, if depth > 0
	var c byte

value: // expecting a value, possibly preceded by whitespace
	i = skipSpace(data, i)
	if i >= n {
		return resultInvalid
	}
	c = data[i]
	switch c {
	case '"':
		i = scanString(data, i+1)
		if i < 0 {
			return resultInvalid
		}
	case '{':
		if depth >= maxDepth {
			return resultInvalid
		}
		if depth>>6 >= len(stack) {
			return resultTooDeep
		}
		stack[depth>>6] |= 1 << (depth & 63)
		depth++
		inObject = true
		i = skipSpace(data, i+1)
		if i < n && data[i] == '}' {
			i++
			goto pop
		}
		goto key
	case '[':
		if depth >= maxDepth {
			return resultInvalid
		}
		if depth>>6 >= len(stack) {
			return resultTooDeep
		}
		stack[depth>>6] &^= 1 << (depth & 63)
		depth++
		inObject = false
		i = skipSpace(data, i+1)
		if i < n && data[i] == ']' {
			i++
			goto pop
		}
		goto value
	case 't':
		if n-i < 4 || binary.LittleEndian.Uint32(data[i:]) != 't'|'r'<<8|'u'<<16|'e'<<24 {
			return resultInvalid
		}
		i += 4
	case 'f':
		if n-i < 5 || binary.LittleEndian.Uint32(data[i+1:]) != 'a'|'l'<<8|'s'<<16|'e'<<24 {
			return resultInvalid
		}
		i += 5
	case 'n':
		if n-i < 4 || binary.LittleEndian.Uint32(data[i:]) != 'n'|'u'<<8|'l'<<16|'l'<<24 {
			return resultInvalid
		}
		i += 4
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		i = scanNumber(data, i)
		if i < 0 {
			return resultInvalid
		}
	default:
		return resultInvalid
	}

endValue: // a complete value ends just before data[i]
	i = skipSpace(data, i)
	if depth == 0 {
		if i == n {
			return resultValid
		}
		return resultInvalid
	}
	if i >= n {
		return resultInvalid
	}
	c = data[i]
	if inObject {
		if c == ',' {
			i = skipSpace(data, i+1)
			goto key
		}
		if c == '}' {
			i++
			goto pop
		}
		return resultInvalid
	}
	if c == ',' {
		i++
		goto value
	}
	if c == ']' {
		i++
		goto pop
	}
	return resultInvalid

pop: // the innermost container has just been closed
	depth--
	if depth > 0 {
		d := depth - 1
		inObject = stack[d>>6]>>(d&63)&1 != 0
	}
	goto endValue

key: // expecting an object key at data[i] (whitespace already skipped)
	if i >= n || data[i] != '"' {
		return resultInvalid
	}
	i = scanString(data, i+1)
	if i < 0 {
		return resultInvalid
	}
	i = skipSpace(data, i)
	if i >= n || data[i] != ':' {
		return resultInvalid
	}
	i++
	goto value
}

// skipSpace returns the index of the first non-whitespace byte at or after
// data[i], or len(data).
func skipSpace(data []byte, i int) int {
	for i < len(data) {
		c := data[i]
		if c > ' ' || (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			return i
		}
		i++
	}
	return i
}

const (
	lsb = 0x0101010101010101 // lowest bit of every byte
	msb = 0x8080808080808080 // highest bit of every byte
)

// scanString scans the rest of a string whose opening quote is at data[i-1].
// It returns the index just past the closing quote, or -1 if the string is
// malformed or unterminated.
func scanString(data []byte, i int) int {
	n := len(data)
	for {
		// Skip 8 ordinary bytes at a time. In each 64-bit word, flag bytes
		// that are < 0x20, == '"' or == '\\'. The lowest flag is exact (a
		// borrow can only produce spurious flags above a true one), so the
		// first special byte is found by counting trailing zeros.
		for n-i >= 8 {
			x := binary.LittleEndian.Uint64(data[i:])
			q := x ^ (lsb * '"')
			b := x ^ (lsb * '\\')
			t := ((x - lsb*0x20) &^ x) | ((q - lsb) &^ q) | ((b - lsb) &^ b)
			t &= msb
			if t != 0 {
				i += bits.TrailingZeros64(t) >> 3
				break
			}
			i += 8
		}
		if i >= n {
			return -1
		}
		c := data[i]
		switch {
		case c == '"':
			return i + 1
		case c == '\\':
			if i+1 >= n {
				return -1
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if n-i < 6 || !isHex[data[i+2]] || !isHex[data[i+3]] ||
					!isHex[data[i+4]] || !isHex[data[i+5]] {
					return -1
				}
				i += 6
			default:
				return -1
			}
		case c < 0x20:
			return -1
		default:
			i++ // only reached for the final bytes when fewer than 8 remain
		}
	}
}

// scanNumber scans a number starting at data[i] (a '-' or a digit). It
// returns the index just past the number, or -1 if it is malformed. What
// follows the number is checked by the caller.
func scanNumber(data []byte, i int) int {
	n := len(data)
	if data[i] == '-' {
		i++
		if i >= n {
			return -1
		}
	}
	// Integer part: 0 | [1-9][0-9]*
	switch c := data[i]; {
	case c == '0':
		i++
	case c-'1' < 9:
		i++
		for i < n && data[i]-'0' < 10 {
			i++
		}
	default:
		return -1
	}
	// Fraction: (\.[0-9]+)?
	if i < n && data[i] == '.' {
		i++
		if i >= n || data[i]-'0' >= 10 {
			return -1
		}
		i++
		for i < n && data[i]-'0' < 10 {
			i++
		}
	}
	// Exponent: ([eE][+-]?[0-9]+)?
	if i < n && data[i]|0x20 == 'e' {
		i++
		if i < n && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= n || data[i]-'0' >= 10 {
			return -1
		}
		i++
		for i < n && data[i]-'0' < 10 {
			i++
		}
	}
	return i
}

var isHex = [256]bool{
	'0': true, '1': true, '2': true, '3': true, '4': true,
	'5': true, '6': true, '7': true, '8': true, '9': true,
	'a': true, 'b': true, 'c': true, 'd': true, 'e': true, 'f': true,
	'A': true, 'B': true, 'C': true, 'D': true, 'E': true, 'F': true,
}
