package transport

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// step is one result of lineReader.next.
type step struct {
	frame string
	err   error
}

// expectLines computes, independently of lineReader, what it must return
// for data: every '\n'-terminated line, less one trailing '\r', is a frame,
// skipped if empty, ErrFrameTooLarge if longer than max; a non-empty
// unterminated tail is ErrPartialFrame; then io.EOF.
func expectLines(data []byte, max int) []step {
	var out []step
	lines := strings.Split(string(data), "\n")
	tail := lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		l = strings.TrimSuffix(l, "\r")
		switch {
		case l == "":
		case len(l) > max:
			out = append(out, step{err: ErrFrameTooLarge})
		default:
			out = append(out, step{frame: l})
		}
	}
	if tail != "" {
		out = append(out, step{err: ErrPartialFrame})
	}
	return append(out, step{err: io.EOF})
}

// Ways for readAll to read: copied lines (next), lent lines (lend), or
// both in turn.
var readModes = map[string]func(i int) bool{
	"copied":    func(int) bool { return false },
	"lent":      func(int) bool { return true },
	"alternate": func(i int) bool { return i%2 == 1 },
}

// readAll runs lr until io.EOF or another error that is not a frame
// error, or until it returned too many results. The i-th call lends its
// line if lend(i); a lent line is used only before the next call.
func readAll(t *testing.T, lr *lineReader, limit int, lend func(i int) bool) []step {
	t.Helper()
	var out []step
	for i := range limit {
		f, err := lr.read(lend(i))
		if err == nil {
			if len(f) > lr.max {
				t.Fatalf("frame of %d bytes, max %d", len(f), lr.max)
			}
			if bytes.IndexByte(f, '\n') >= 0 {
				t.Fatalf("frame %q contains a newline", f)
			}
			out = append(out, step{frame: string(f)})
			continue
		}
		out = append(out, step{err: err})
		if !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrPartialFrame) {
			return out
		}
	}
	t.Fatalf("no io.EOF after %d results", limit)
	return nil
}

// chunkReader returns at most the next size from sizes bytes per Read,
// cycling, to split the input at arbitrary points.
type chunkReader struct {
	r     io.Reader
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	n := 1
	if len(c.sizes) > 0 {
		n = 1 + int(c.sizes[c.i%len(c.sizes)])
		c.i++
	}
	return c.r.Read(p[:min(n, len(p))])
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, tc := range []struct {
		name string
		in   string
		max  int
	}{
		{"empty", "", 8},
		{"one line", "abc\n", 8},
		{"lines", "a\nbb\nccc\n", 8},
		{"blank lines", "\n\n\na\n\n", 8},
		{"crlf", "a\r\nb\r\n\r\n", 8},
		{"only one cr stripped", "a\r\r\n", 8},
		{"cr alone", "\r\n", 8},
		{"cr in the middle", "a\rb\n", 8},
		{"at the cap", "12345678\n", 8},
		{"at the cap with crlf", "12345678\r\n", 8},
		{"one over", "123456789\nok\n", 8},
		{"one over with crlf", "123456789\r\nok\n", 8},
		{"far over", long + "\nok\n", 8},
		{"far over with crlf", long + "\r\nok\n", 8},
		{"partial", "a\nbc", 8},
		{"partial cr", "a\n\r", 8},
		{"partial and too long", "a\n" + long, 8},
		{"long lines fit", long + "\n" + long + "\n", 100},
		{"long line over by one", long + "x\n" + long + "\n", 100},
	} {
		for _, bufSize := range []int{1, 3, 16, 4096} {
			for name, wrap := range map[string]func(io.Reader) io.Reader{
				"whole":      func(r io.Reader) io.Reader { return r },
				"one byte":   iotest.OneByteReader,
				"half":       iotest.HalfReader,
				"data + err": iotest.DataErrReader,
			} {
				for mode, lend := range readModes {
					t.Run(tc.name+"/"+name+"/"+mode, func(t *testing.T) {
						lr := newLineReader(wrap(strings.NewReader(tc.in)), tc.max, bufSize)
						want := expectLines([]byte(tc.in), tc.max)
						require.Equal(t, want, readAll(t, lr, len(tc.in)+2, lend), "buffer %d", bufSize)
						// io.EOF is sticky.
						_, err := lr.next()
						require.Equal(t, io.EOF, err)
					})
				}
			}
		}
	}
}

func TestLineReaderResumesAfterError(t *testing.T) {
	// iotest.TimeoutReader fails its second read, once: the line in
	// progress survives.
	in := "first\n" + strings.Repeat("s", 40) + "\nlast\n"
	lr := newLineReader(iotest.TimeoutReader(iotest.HalfReader(strings.NewReader(in))), 64, 8)
	var got []string
	var timeouts int
	for {
		f, err := lr.next()
		if errors.Is(err, iotest.ErrTimeout) {
			timeouts++
			continue
		}
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got = append(got, string(f))
	}
	require.Equal(t, 1, timeouts)
	require.Equal(t, []string{"first", strings.Repeat("s", 40), "last"}, got)
}

// badReader breaks the io.Reader contract.
type badReader struct{ n int }

func (r badReader) Read([]byte) (int, error) { return r.n, nil }

func TestLineReaderBadReader(t *testing.T) {
	for _, n := range []int{-1, 0, 1 << 20} {
		lr := newLineReader(badReader{n}, 8, 16)
		_, err := lr.next()
		require.ErrorIs(t, err, errBadRead, "count %d", n)
	}
}

func TestLineReaderMemoryIsBounded(t *testing.T) {
	const max = 1000
	lr := newLineReader(strings.NewReader(strings.Repeat("x", 50*max)+"\n"+strings.Repeat("y", max)+"\n"), max, 64)
	_, err := lr.next()
	require.ErrorIs(t, err, ErrFrameTooLarge)
	f, err := lr.next()
	require.NoError(t, err)
	require.Len(t, f, max)
	require.LessOrEqual(t, cap(f), max+1)
}

func TestCheckFrame(t *testing.T) {
	require.NoError(t, checkFrame([]byte("a\rb"), 3))
	require.ErrorIs(t, checkFrame([]byte("abcd"), 3), ErrFrameTooLarge)
	require.ErrorIs(t, checkFrame([]byte("a\r"), 3), ErrInvalidFrame)
	require.Equal(t, DefaultMaxFrameSize, maxFrameSize(-1))
	require.Equal(t, 7, maxFrameSize(7))
}

func FuzzLineReader(f *testing.F) {
	for _, seed := range []string{
		"", "\n", "a\n", "a\r\n", "\r\n\r\n", "abc", "a\nb\nc",
		"0123456789abcdef\nshort\n", "toolongtoolongtoolong\r\nok\r\n\n",
		"\r", "\r\r\n", "x\n\n\ny", `{"k":"v"}` + "\n",
	} {
		f.Add([]byte(seed), uint8(8), uint8(4), []byte{0, 3, 1})
	}
	f.Fuzz(func(t *testing.T, data []byte, max, bufSize uint8, chunks []byte) {
		m := 1 + int(max%64)
		lr := newLineReader(&chunkReader{r: bytes.NewReader(data), sizes: chunks}, m, 1+int(bufSize%32))
		want := expectLines(data, m)
		got := readAll(t, lr, len(data)+2, readModes[[]string{"copied", "lent", "alternate"}[len(chunks)%3]])
		if len(got) != len(want) {
			t.Fatalf("max %d: got %d results %v, want %d %v", m, len(got), got, len(want), want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("max %d: result %d is %+v, want %+v", m, i, got[i], want[i])
			}
		}
	})
}
