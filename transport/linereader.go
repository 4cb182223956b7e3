package transport

import (
	"bytes"
	"errors"
	"io"
)

// errBadRead reports an io.Reader that broke its contract (a negative
// count, a count larger than the buffer, or no progress at all).
var errBadRead = errors.New("transport: reader returned an invalid count or made no progress")

// lineReader splits a byte stream into frames, one per line, with bounded
// memory: it holds at most one read buffer plus max+1 bytes of one line.
//
// Lines end with '\n'; one '\r' before it is stripped (CRLF peers work);
// empty lines are skipped. A line longer than max bytes (after stripping)
// is discarded up to and including its newline and reported as
// ErrFrameTooLarge. At io.EOF, an unterminated non-empty tail is reported
// as ErrPartialFrame, and then io.EOF is returned. Any other error of the
// underlying reader is returned as is, once; the line in progress is kept,
// so next may be called again.
type lineReader struct {
	rd   io.Reader
	max  int
	buf  []byte
	r, w int   // buf[r:w] is read but not yet consumed
	scan int   // buf[r:scan] is known to hold no '\n'
	err  error // the reader's pending error, returned once buf is consumed

	// The line in progress, when it does not fit in buf.
	acc     []byte // its bytes so far, if not over
	spilled bool   // some of its bytes moved to acc (or were discarded)
	over    bool   // it is longer than max+1: its bytes are discarded
}

// newLineReader returns a lineReader over rd for lines of at most max bytes
// (max >= 1), with a read buffer of size bytes (size >= 1).
func newLineReader(rd io.Reader, max, size int) *lineReader {
	return &lineReader{rd: rd, max: max, buf: make([]byte, size)}
}

// next returns the next line as a fresh slice without its line ending. It
// blocks on the underlying reader as needed. Errors: ErrFrameTooLarge
// (the line was skipped), ErrPartialFrame (EOF inside a line; io.EOF
// follows), io.EOF, or the reader's error.
func (lr *lineReader) next() ([]byte, error) {
	return lr.read(false)
}

// read is next, but with lend the line it returns may be a part of the
// reader's buffer: it is then valid only until the next call.
func (lr *lineReader) read(lend bool) ([]byte, error) {
	for {
		if i := bytes.IndexByte(lr.buf[lr.scan:lr.w], '\n'); i >= 0 {
			end := lr.scan + i
			seg := lr.buf[lr.r:end]
			lr.r, lr.scan = end+1, end+1
			line, err := lr.finish(seg, lend)
			if err != nil || line != nil {
				return line, err
			}
			continue // an empty line
		}
		lr.scan = lr.w
		if lr.err != nil {
			return nil, lr.fail()
		}
		lr.makeRoom()
		if err := lr.fill(); err != nil {
			return nil, err
		}
	}
}

// buffered reports whether bytes read from the reader wait to be returned
// (a line, or the start of one).
func (lr *lineReader) buffered() bool {
	return lr.r < lr.w || lr.spilled
}

// finish ends the line in progress, whose last bytes are seg, and resets
// the line state. It returns the line (nil if it is empty and must be
// skipped) or ErrFrameTooLarge. With lend, a line that lies whole in seg is
// returned in place rather than copied.
func (lr *lineReader) finish(seg []byte, lend bool) ([]byte, error) {
	acc, over := lr.acc, lr.over
	lr.acc, lr.spilled, lr.over = nil, false, false
	if over || len(acc)+len(seg) > lr.max+1 {
		return nil, ErrFrameTooLarge
	}
	n := len(acc) + len(seg)
	if n > 0 {
		last := byte(0)
		if len(seg) > 0 {
			last = seg[len(seg)-1]
		} else {
			last = acc[len(acc)-1]
		}
		if last == '\r' {
			n--
		}
	}
	switch {
	case n == 0:
		return nil, nil
	case n > lr.max:
		return nil, ErrFrameTooLarge
	case len(acc) == 0 && lend:
		return seg[:n:n], nil
	case len(acc) == 0:
		line := make([]byte, n)
		copy(line, seg)
		return line, nil
	default:
		return appendCapped(acc, seg, len(acc)+len(seg))[:n], nil
	}
}

// fail returns the pending error once buf holds no complete line.
func (lr *lineReader) fail() error {
	err := lr.err
	if err != io.EOF {
		lr.err = nil // not sticky: the caller may retry
		return err
	}
	if lr.spilled || lr.r < lr.w {
		// The stream ended inside a line: drop it, report it once.
		lr.acc, lr.spilled, lr.over = nil, false, false
		lr.r, lr.w, lr.scan = 0, 0, 0
		return ErrPartialFrame
	}
	return io.EOF
}

// makeRoom makes space at the end of buf for the next read: it moves the
// unconsumed bytes to the front, or, when they fill buf, moves them to acc
// (or drops them if the line is already too long).
func (lr *lineReader) makeRoom() {
	if lr.r > 0 {
		n := copy(lr.buf, lr.buf[lr.r:lr.w])
		lr.r, lr.w, lr.scan = 0, n, n
	}
	if lr.w < len(lr.buf) {
		return
	}
	lr.spilled = true
	if !lr.over {
		if len(lr.acc)+lr.w > lr.max+1 {
			lr.acc, lr.over = nil, true
		} else {
			lr.acc = appendCapped(lr.acc, lr.buf[:lr.w], lr.max+1)
		}
	}
	lr.r, lr.w, lr.scan = 0, 0, 0
}

// fill reads once into the free end of buf, recording the reader's error
// for later (bytes read come first). It fails only if the reader broke
// the io.Reader contract.
func (lr *lineReader) fill() error {
	for range 100 {
		n, err := lr.rd.Read(lr.buf[lr.w:])
		if n < 0 || n > len(lr.buf)-lr.w {
			return errBadRead
		}
		lr.w += n
		if err != nil {
			lr.err = err
			return nil
		}
		if n > 0 {
			return nil
		}
	}
	return errBadRead
}

// appendCapped appends src to dst, growing dst to at most limit bytes of
// capacity (len(dst)+len(src) <= limit must hold), so that a long line
// never holds more than limit bytes.
func appendCapped(dst, src []byte, limit int) []byte {
	need := len(dst) + len(src)
	if need <= cap(dst) {
		return append(dst, src...)
	}
	c := min(max(2*cap(dst), need), limit)
	grown := make([]byte, len(dst), c)
	copy(grown, dst)
	return append(grown, src...)
}
