// Package transport moves frames between the agentbus daemon and its
// clients. A frame is one JSON document: the transport neither parses nor
// builds it, it only delimits it (a Unix-socket transport writes each frame
// as one line of newline-delimited JSON) and enforces a size cap.
//
// Two implementations pass the same conformance suite (package
// transporttest): an in-memory one for tests (NewMemoryListener) and a
// Unix-socket one (ListenUnix, DialUnix).
package transport

import (
	"context"
	"errors"
)

// Sentinel errors of every transport. Test them with errors.Is.
var (
	// ErrClosed: the connection or listener was closed by this side.
	ErrClosed = errors.New("transport: closed")
	// ErrPeerClosed: the other side closed the connection (a clean end of
	// stream). A frame cut off by the close is reported as
	// ErrPartialFrame first.
	ErrPeerClosed = errors.New("transport: peer closed")
	// ErrPartialFrame: the peer closed the connection in the middle of a
	// frame; the partial frame is discarded.
	ErrPartialFrame = errors.New("transport: partial frame")
	// ErrFrameTooLarge: a frame is longer than the connection's
	// MaxFrameSize. On Recv the oversized frame has been skipped and the
	// connection is still usable; on Send nothing was written.
	ErrFrameTooLarge = errors.New("transport: frame too large")
	// ErrInvalidFrame: Send was given a frame that cannot be delimited
	// (it is empty, contains a newline, or ends with a carriage return,
	// which a receiver strips as part of a CRLF line ending).
	ErrInvalidFrame = errors.New("transport: invalid frame")
	// ErrAddrInUse: another live listener owns the address.
	ErrAddrInUse = errors.New("transport: address in use by a live listener")
	// ErrPeerRefused: the listener refused the peer's credentials.
	// Reserved: the listeners of this package do not return it; a Unix
	// listener closes a refused connection and keeps accepting (see
	// UnixOptions.AllowUIDs), so the refused client sees ErrPeerClosed.
	ErrPeerRefused = errors.New("transport: peer refused")
)

// DefaultMaxFrameSize caps a frame when no size is given: 10 MiB plus room
// for the frame's envelope, matching the bus's default MaxMessageSize.
const DefaultMaxFrameSize = 10<<20 + 64<<10

// Conn is one ordered, bidirectional stream of frames.
//
// Send may be called from several goroutines at once (frames are never
// interleaved); Recv from one goroutine at a time; Close from any, any
// number of times. Send and Recv may run concurrently.
type Conn interface {
	// Send writes frame, which must be non-empty, contain no newline and
	// not end with '\r'; the frame is copied or written before Send
	// returns, so the caller may reuse it.
	// It blocks until the frame is handed to the peer's side (the socket
	// buffer, or the in-memory queue), ctx ends, or the connection
	// closes. Errors: ErrInvalidFrame, ErrFrameTooLarge, ErrClosed,
	// ErrPeerClosed, or ctx's error. After an error other than the first
	// two, the connection is unusable.
	Send(ctx context.Context, frame []byte) error
	// Recv blocks for the next frame and returns it; the caller owns the
	// returned slice. Errors: ErrFrameTooLarge (the frame was skipped;
	// Recv may be called again), ErrPartialFrame or ErrPeerClosed (the
	// stream ended), ErrClosed, or ctx's error (the connection is then
	// closed, since a read cannot be abandoned half way).
	Recv(ctx context.Context) ([]byte, error)
	// Close closes the connection; blocked Send and Recv calls return
	// ErrClosed. It returns nil, also when called again.
	Close() error
	// Peer describes the other side, as far as the transport knows it.
	Peer() Peer
}

// Lender is a Conn that can lend the frames it receives rather than hand
// over a copy of each, for a caller that is done with a frame before it
// receives the next one (it decodes the frame, say, and keeps only the
// result). The Unix-socket connection is one.
type Lender interface {
	Conn
	// RecvLent is Recv, except that the frame it returns may still belong
	// to the connection: it is valid only until the next Recv or RecvLent
	// on the connection, and must not be modified.
	RecvLent(ctx context.Context) ([]byte, error)
}

// RecvLent receives the next frame on c: lent if c is a Lender (see
// Lender.RecvLent), else by Recv. Either way the caller must not use the
// frame once it receives again on c.
func RecvLent(ctx context.Context, c Conn) ([]byte, error) {
	if l, ok := c.(Lender); ok {
		return l.RecvLent(ctx)
	}
	return c.Recv(ctx)
}

// BatchSender is a Conn that can write several frames at once, with fewer
// system calls than one Send each. The Unix-socket connection is one.
type BatchSender interface {
	Conn
	// SendBatch writes frames in order, as many Sends would one after the
	// other, and returns how many of them were handed to the peer's side
	// whole: on error, frames[:sent] were, the rest not (it may check
	// every frame before it writes any, and then refuses the whole batch
	// for one it cannot send: sent is 0). Its errors and blocking are
	// Send's.
	SendBatch(ctx context.Context, frames [][]byte) (sent int, err error)
}

// SendBatch writes frames on c: at once if c is a BatchSender, else by one
// Send each, stopping at the first error. See BatchSender.SendBatch.
func SendBatch(ctx context.Context, c Conn, frames [][]byte) (sent int, err error) {
	if b, ok := c.(BatchSender); ok {
		return b.SendBatch(ctx, frames)
	}
	for i, f := range frames {
		if err := c.Send(ctx, f); err != nil {
			return i, err
		}
	}
	return len(frames), nil
}

// Buffering is a Conn that can tell whether input it has already read
// waits to be received.
type Buffering interface {
	Conn
	// Buffered reports whether bytes of the peer's that the connection
	// has read wait to be returned by Recv: a frame, or the start of one.
	// Call it between Recv calls, from the goroutine that receives.
	Buffered() bool
}

// Buffered reports whether c has input waiting to be received, for a Conn
// that can tell (see Buffering); false for one that cannot.
func Buffered(c Conn) bool {
	b, ok := c.(Buffering)
	return ok && b.Buffered()
}

// Listener accepts connections.
type Listener interface {
	// Accept blocks until a peer connects and returns its connection, or
	// returns ErrClosed once the listener is closed, or ctx's error.
	Accept(ctx context.Context) (Conn, error)
	// Close stops accepting and releases the address (a Unix listener
	// removes its socket file, unless another listener has replaced it).
	// Connections already accepted stay open.
	// It returns nil, also when called again.
	Close() error
	// Addr names where the listener listens (a socket path, or "memory").
	Addr() string
}

// Peer is what a transport knows of the other side of a connection.
type Peer struct {
	// Known reports whether UID, GID and PID are set (from SO_PEERCRED on
	// a Unix socket: the effective ids of the peer process when it
	// connected or listened). The in-memory transport reports the current
	// process.
	Known         bool
	UID, GID, PID int
}

// Capped is a Conn that tells the largest frame it sends. Both transports
// of this package are.
type Capped interface {
	Conn
	// MaxFrameSize returns the largest frame Send accepts, in bytes.
	MaxFrameSize() int
}

// MaxFrame returns the largest frame c sends: its own cap if it tells it
// (see Capped), else DefaultMaxFrameSize. It does not block.
func MaxFrame(c Conn) int {
	if m, ok := c.(Capped); ok {
		return m.MaxFrameSize()
	}
	return DefaultMaxFrameSize
}
