package protocol

import (
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var fastSeeds = []string{
	`{"op":"ping","id":"1"}`,
	` { "op" : "hello" , "id" : "1" , "version" : 1 , "client" : "py" } `,
	`{"op":"register","id":"2","agent":"w","window":256}`,
	`{"op":"credit","agent":"w","n":64}`,
	`{"op":"send","id":"3","message":{"recipient":"b","payload":{"a":[1,2,{"b":"\"}"}]},"priority":9,"ttl_ms":1.5}}`,
	`{"op":"publish","message":{"topic":"a.b","requires_ack":true,"metadata":{"traceparent":"x"}}}`,
	`{"op":"respond","message":{"request_id":"r","payload":"\u00e9"}}`,
	`{"op":"request","id":"9","timeout_ms":5000,"message":{"recipient":"w"}}`,
	`{"op":"deliver","agent":"w","message":{"id":"m","type":"direct","sender":"a","recipient":"w","payload":1,"priority":50,"timestamp":"2026-11-27T10:00:00.123Z"}}`,
	`{"op":"ok","id":"5","message_id":"m"}`,
	`{"op":"error","id":"6","code":"no_recipient","error":"agentbus: no such recipient"}`,
	`{"op":"replay","seq":18446744073709551615,"to":"x"}`,
	`{"op":"replay","seq":-1}`,
	`{"op":"dead_letters","reason":"expired","limit":10,"topic":"a.>"}`,
	`{"op":"history","sender":"a","recipient":"b","type":"publish","limit":0}`,
	`{"op":"ping","id":"é"}`,
	`{"op":"ping","id":"a\"b"}`,
	`{"op":"ping","limit":1.0}`,
	`{"op":"ping","limit":01}`,
	`{"op":"ping","limit":99999999999999999999}`,
	`{"op":"ping","OP":"pong"}`,
	`{"op":"ping","op":"pong"}`,
	`{"op":"ping","unknown":[1]}`,
	`{"op":"send","message":null}`,
	`{"op":"send","message":{}}`,
	`{"op":"send","message":{"type":"fax"}}`,
	`{"op":"send","message":{"recipient":"b"}}}`,
	`{"op":"ping"} x`,
	`{}`,
	`{"id":"1"}`,
	`{"op":""}`,
	`[]`,
}

func TestDecodeFastTakesCommonFrames(t *testing.T) {
	for _, s := range fastSeeds[:11] {
		_, ok := decodeFast([]byte(s))
		assert.True(t, ok, s)
	}
	for _, s := range fastSeeds[16:] {
		_, ok := decodeFast([]byte(s))
		if ok {
			// Accepted: it must then decode the same as the general path.
			f, _ := decodeFast([]byte(s))
			g, err := decodeSlow([]byte(s))
			require.NoError(t, err, s)
			assert.True(t, reflect.DeepEqual(f, g), s)
		}
	}
}

// FuzzDecodeFastMatchesSlow: whatever the fast path accepts, the general
// path decodes to the same frame.
func FuzzDecodeFastMatchesSlow(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return // Decode refuses it before either path
		}
		fast, ok := decodeFast(data)
		if !ok {
			return
		}
		slow, err := decodeSlow(data)
		require.NoError(t, err, "%q", data)
		require.True(t, reflect.DeepEqual(fast, slow), "%q\nfast %+v\nslow %+v", data, fast, slow)
	})
}

// FuzzClosingQuote: closingQuote finds the quote the plain byte-by-byte
// scan (skip the byte after each backslash) finds.
func FuzzClosingQuote(f *testing.F) {
	for _, s := range []string{`"abc"`, `"a\"b"`, `"a\\"b`, `"\\\"x"`, `"\`, `"`, `"x\\\\\"`, `"é\u0022"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || b[0] != '"' {
			return
		}
		want := -1
		for i := 1; i < len(b); i++ {
			if b[i] == '\\' {
				i++
				continue
			}
			if b[i] == '"' {
				want = i
				break
			}
		}
		require.Equal(t, want, closingQuote(b, 0), "%q", b)
	})
}
