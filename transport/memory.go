package transport

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
)

// DefaultMemoryBuffer is how many frames each direction of an in-memory
// connection queues when MemoryOptions.Buffer is not positive.
const DefaultMemoryBuffer = 64

// MemoryAddr is the Addr of every MemoryListener.
const MemoryAddr = "memory"

// MemoryOptions configures NewMemoryListener.
type MemoryOptions struct {
	// Buffer is how many frames each direction of a connection queues
	// before Send blocks (as a full socket buffer would); 0 or less means
	// DefaultMemoryBuffer.
	Buffer int
	// MaxFrameSize caps a frame; Send refuses a longer one with
	// ErrFrameTooLarge. 0 or less means DefaultMaxFrameSize.
	MaxFrameSize int
}

// MemoryListener is an in-process Listener: Dial makes a connected pair of
// in-memory connections and queues the server side for Accept. It is meant
// for tests, and is safe for concurrent use.
type MemoryListener struct {
	buffer int
	max    int

	mu      sync.Mutex
	closed  bool
	pending []*memConn    // dialled, not yet accepted; guarded by mu
	ready   chan struct{} // capacity 1: pending may have become non-empty
	done    chan struct{} // closed by Close
}

var _ Listener = (*MemoryListener)(nil)

// NewMemoryListener returns an open in-memory listener. It does not block
// and cannot fail.
func NewMemoryListener(opts MemoryOptions) *MemoryListener {
	buffer := opts.Buffer
	if buffer <= 0 {
		buffer = DefaultMemoryBuffer
	}
	return &MemoryListener{
		buffer: buffer,
		max:    maxFrameSize(opts.MaxFrameSize),
		ready:  make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// Dial connects to the listener and returns the client side of the new
// connection; the server side is queued for Accept. Like connect(2) on a
// socket with a backlog, Dial does not wait for Accept, so it does not
// block. It returns ctx's error if ctx has already ended, or an error
// wrapping ErrClosed if the listener is closed.
func (l *MemoryListener) Dial(ctx context.Context) (Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, server := newMemPair(l.buffer, l.max)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, fmt.Errorf("transport: dial %s: %w", MemoryAddr, ErrClosed)
	}
	l.pending = append(l.pending, server)
	l.mu.Unlock()
	l.signal()
	return client, nil
}

// signal wakes one Accept waiting for a pending connection.
func (l *MemoryListener) signal() {
	select {
	case l.ready <- struct{}{}:
	default:
	}
}

// Accept blocks until a connection is dialled and returns its server side.
// It returns ctx's error when ctx ends first, and an error wrapping
// ErrClosed once the listener is closed.
func (l *MemoryListener) Accept(ctx context.Context) (Conn, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, fmt.Errorf("transport: accept on %s: %w", MemoryAddr, ErrClosed)
		}
		if len(l.pending) > 0 {
			c := l.pending[0]
			l.pending[0] = nil
			l.pending = l.pending[1:]
			more := len(l.pending) > 0
			l.mu.Unlock()
			if more {
				l.signal() // pass the wake-up on to another Accept
			}
			return c, nil
		}
		l.mu.Unlock()
		select {
		case <-l.ready:
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops the listener: blocked and later Accept and Dial calls return
// ErrClosed, and connections dialled but not yet accepted are closed (their
// clients see ErrPeerClosed). Accepted connections stay open. Close does
// not block and returns nil, also when called again.
func (l *MemoryListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	pending := l.pending
	l.pending = nil
	close(l.done)
	l.mu.Unlock()
	for _, c := range pending {
		_ = c.Close()
	}
	return nil
}

// Addr returns MemoryAddr.
func (l *MemoryListener) Addr() string { return MemoryAddr }

// memConn is one side of an in-memory connection. Each direction is a
// buffered channel of frames; each side has a done channel closed by its
// Close, which the other side watches.
type memConn struct {
	in       <-chan []byte   // frames from the peer
	out      chan<- []byte   // frames to the peer
	done     chan struct{}   // closed by Close
	peerDone <-chan struct{} // closed by the peer's Close
	once     sync.Once
	max      int
}

var (
	_ Conn      = (*memConn)(nil)
	_ Buffering = (*memConn)(nil)
)

// newMemPair returns the two sides of an in-memory connection.
func newMemPair(buffer, max int) (client, server *memConn) {
	toServer := make(chan []byte, buffer)
	toClient := make(chan []byte, buffer)
	clientDone := make(chan struct{})
	serverDone := make(chan struct{})
	client = &memConn{in: toClient, out: toServer, done: clientDone, peerDone: serverDone, max: max}
	server = &memConn{in: toServer, out: toClient, done: serverDone, peerDone: clientDone, max: max}
	return client, server
}

// Send queues a copy of frame for the peer, blocking while the queue is
// full; see Conn.Send. A Send interrupted by ctx queued nothing, and the
// connection stays usable.
func (c *memConn) Send(ctx context.Context, frame []byte) error {
	if err := checkFrame(frame, c.max); err != nil {
		return err
	}
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	select {
	case <-c.peerDone:
		return ErrPeerClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f := bytes.Clone(frame)
	select {
	case c.out <- f:
		return nil
	case <-c.done:
		return ErrClosed
	case <-c.peerDone:
		return ErrPeerClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Recv takes the next queued frame; see Conn.Recv. Once the peer has
// closed, the frames it queued are drained before ErrPeerClosed.
func (c *memConn) Recv(ctx context.Context) ([]byte, error) {
	select {
	case <-c.done:
		return nil, ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		_ = c.Close()
		return nil, err
	}
	select {
	case f := <-c.in:
		return f, nil
	case <-c.done:
		return nil, ErrClosed
	case <-c.peerDone:
		// The peer sends nothing more: drain what it queued first.
		select {
		case f := <-c.in:
			return f, nil
		default:
			return nil, ErrPeerClosed
		}
	case <-ctx.Done():
		_ = c.Close()
		return nil, ctx.Err()
	}
}

// Buffered reports whether the peer has queued a frame that Recv would
// return; see Buffering.
func (c *memConn) Buffered() bool { return len(c.in) > 0 }

// Close closes this side; see Conn.Close. Frames queued to this side are
// dropped; frames it queued to the peer can still be received there.
func (c *memConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// Peer reports the current process (its effective ids, as SO_PEERCRED
// would): both sides live in it.
func (c *memConn) Peer() Peer {
	return Peer{Known: true, UID: os.Geteuid(), GID: os.Getegid(), PID: os.Getpid()}
}

// MaxFrameSize returns the largest frame Send accepts; see Capped.
func (c *memConn) MaxFrameSize() int { return c.max }
