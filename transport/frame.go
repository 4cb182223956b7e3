package transport

import (
	"bytes"
	"fmt"
	"math"
)

// checkFrame validates a frame given to Send: it must be non-empty, at most
// max bytes long, contain no '\n' and not end with '\r' (a receiver strips
// one '\r' before the newline so that CRLF peers work, so such a frame would
// not arrive intact). It returns an error wrapping ErrInvalidFrame or
// ErrFrameTooLarge, or nil.
func checkFrame(frame []byte, max int) error {
	switch {
	case len(frame) == 0:
		return fmt.Errorf("%w: empty frame", ErrInvalidFrame)
	case len(frame) > max:
		return fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(frame), max)
	case frame[len(frame)-1] == '\r':
		return fmt.Errorf("%w: frame ends with a carriage return", ErrInvalidFrame)
	case bytes.IndexByte(frame, '\n') >= 0:
		return fmt.Errorf("%w: frame contains a newline", ErrInvalidFrame)
	}
	return nil
}

// maxFrameSize returns n, or DefaultMaxFrameSize when n is not positive.
// It leaves room for a line ending so that n+1 cannot overflow.
func maxFrameSize(n int) int {
	if n <= 0 {
		return DefaultMaxFrameSize
	}
	return min(n, math.MaxInt-1)
}
