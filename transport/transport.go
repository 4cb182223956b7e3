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
