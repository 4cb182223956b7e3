package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultUnixMode is the permission of the socket file ListenUnix creates
// when UnixOptions.Mode is 0: only the owner may connect.
const DefaultUnixMode fs.FileMode = 0o600

const (
	// readBufferSize is the read buffer of a Unix connection: one read
	// system call fetches up to this many bytes, several frames at once.
	readBufferSize = 64 << 10
	// copyWriteMax is the largest frame Send copies into a buffer to write
	// it and its newline in one write(2); a larger frame is written in
	// place with writev(2).
	copyWriteMax = 16 << 10
	// probeTimeout bounds ListenUnix's dial of an existing socket.
	probeTimeout = 2 * time.Second
)

// maxSocketPath is the longest socket path bind(2) takes: sun_path less
// its terminating NUL.
var maxSocketPath = len(syscall.RawSockaddrUnix{}.Path) - 1

var newline = []byte{'\n'}

// UnixOptions configures ListenUnix and DialUnix.
type UnixOptions struct {
	// Mode is the permission of the socket file ListenUnix creates
	// (only its permission bits are used); the file gets exactly this
	// mode, whatever the umask. 0 means DefaultUnixMode (0600). DialUnix
	// ignores it.
	Mode fs.FileMode
	// MaxFrameSize caps a frame in both directions; 0 or less means
	// DefaultMaxFrameSize.
	MaxFrameSize int
	// AllowUIDs lists the user ids whose connections Accept returns; a
	// connection from any other user (or whose credentials cannot be
	// read) is closed at once and counted by UnixListener.Refused. Empty
	// allows every peer. DialUnix ignores it.
	AllowUIDs []int
}

// UnixListener is a Listener on a Unix stream socket. Each frame travels as
// one line of newline-delimited JSON. It is safe for concurrent use.
type UnixListener struct {
	path  string
	ln    *net.UnixListener
	file  fs.FileInfo // the socket file as created, to recognise it at Close
	max   int
	allow []int

	accepting chan struct{} // capacity 1: held by the Accept in accept(2)
	deadline  ctxDeadline   // the listener's, used by the holder of accepting
	refused   atomic.Uint64
	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

var _ Listener = (*UnixListener)(nil)

// ListenUnix listens on a Unix stream socket at path. It does not block
// (beyond a short probe of an existing socket).
//
// The socket file is created with exactly opts.Mode, race-free and without
// touching the process umask: the socket is bound in a fresh private (0700)
// directory next to path, chmod'ed there, then hard-linked to path, which
// fails rather than replaces if path exists; the private name and
// directory are then removed. So nobody can connect before the mode is
// set, and a live socket is never replaced. The directory must allow
// creating that temporary directory, and its name (path's directory plus
// at most 15 bytes) must fit in a socket address as well as path itself.
//
// If path already exists:
//   - a socket with a live listener: the error wraps ErrAddrInUse (the
//     probe connects and hangs up at once, so that listener sees a
//     connection end without a frame);
//   - a stale socket (connecting is refused): it is removed and replaced;
//   - anything else (a regular file, a directory...): the error wraps
//     fs.ErrExist and the file is left alone.
//
// Other errors name path and wrap the cause, so errors.Is(err,
// fs.ErrNotExist) holds for a missing directory and errors.Is(err,
// fs.ErrPermission) for one that cannot be written.
func ListenUnix(path string, opts UnixOptions) (*UnixListener, error) {
	if path == "" {
		return nil, errors.New("transport: listen: empty socket path")
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("transport: listen %s: socket path too long (%d bytes, at most %d)", path, len(path), maxSocketPath)
	}
	mode := opts.Mode.Perm()
	if opts.Mode == 0 {
		mode = DefaultUnixMode
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	ln, file, err := bindUnix(path, mode)
	if err != nil {
		return nil, err
	}
	return &UnixListener{
		path:      path,
		ln:        ln,
		file:      file,
		max:       maxFrameSize(opts.MaxFrameSize),
		allow:     slices.Clone(opts.AllowUIDs),
		accepting: make(chan struct{}, 1),
		deadline:  ctxDeadline{set: ln.SetDeadline},
		done:      make(chan struct{}),
	}, nil
}

// clearStale makes way for a new socket at path: it returns nil if path
// does not exist, removes a stale socket, and refuses anything else.
func clearStale(path string) error {
	before, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transport: listen %s: %w", path, unwrapPath(err))
	}
	if before.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("transport: listen %s: %w: it is %s, not a socket; it was left alone", path, fs.ErrExist, fileKind(before.Mode()))
	}
	conn, err := net.DialTimeout("unix", path, probeTimeout)
	switch {
	case err == nil:
		_ = conn.Close()
		return fmt.Errorf("transport: listen %s: %w", path, ErrAddrInUse)
	case errors.Is(err, fs.ErrNotExist):
		return nil // removed meanwhile
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, os.ErrDeadlineExceeded):
		// A listener with a full backlog is alive.
		return fmt.Errorf("transport: listen %s: %w (it does not answer: %v)", path, ErrAddrInUse, err)
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("transport: listen %s: cannot tell whether the existing socket is live: %w", path, err)
	}
	// Stale. Remove it, unless another process replaced it meanwhile.
	now, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transport: listen %s: %w", path, unwrapPath(err))
	}
	if !os.SameFile(before, now) {
		return fmt.Errorf("transport: listen %s: %w (the socket was replaced while probing it)", path, ErrAddrInUse)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("transport: listen %s: removing the stale socket: %w", path, unwrapPath(err))
	}
	return nil
}

// bindUnix creates a listening socket at path with exactly mode; see
// ListenUnix. It returns the listener and the socket file's FileInfo.
func bindUnix(path string, mode fs.FileMode) (*net.UnixListener, fs.FileInfo, error) {
	dir := filepath.Dir(path)
	private, err := os.MkdirTemp(dir, ".s")
	if err != nil {
		return nil, nil, fmt.Errorf("transport: listen %s: cannot create the socket in directory %s: %w", path, dir, unwrapPath(err))
	}
	defer os.Remove(private)
	tmp := filepath.Join(private, "s")
	if len(tmp) > maxSocketPath {
		return nil, nil, fmt.Errorf("transport: listen %s: directory path too long: the temporary socket %s needs %d bytes, at most %d", path, tmp, len(tmp), maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("transport: listen %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // the temporary name goes below; path at Close
	defer os.Remove(tmp)
	fail := func(err error) (*net.UnixListener, fs.FileInfo, error) {
		_ = ln.Close()
		return nil, nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("transport: listen %s: setting the socket mode: %w", path, unwrapPath(err)))
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(fmt.Errorf("transport: listen %s: %w (another socket appeared there)", path, ErrAddrInUse))
		}
		return fail(fmt.Errorf("transport: listen %s: %w", path, err))
	}
	file, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("transport: listen %s: %w", path, unwrapPath(err)))
	}
	return ln, file, nil
}

// unwrapPath returns the cause of a *fs.PathError (whose message would
// repeat a path the caller already names), or err itself.
func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// fileKind names the type of a file, with an article.
func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "a device"
	default:
		return "an irregular file"
	}
}

// Accept blocks until an allowed peer connects and returns its connection.
// Connections from peers that opts.AllowUIDs excludes are closed and
// skipped (see Refused); Accept keeps waiting. It returns ctx's error when
// ctx ends first, an error wrapping ErrClosed once the listener is closed,
// or another accept(2) error (such as too many open files) wrapped with
// the path; the listener stays usable after the last two kinds.
func (l *UnixListener) Accept(ctx context.Context) (Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// One Accept at a time owns the listener's deadline.
	select {
	case l.accepting <- struct{}{}:
	case <-l.done:
		return nil, l.closedErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-l.accepting }()
	stop := l.deadline.arm(ctx)
	defer l.deadline.disarm(stop)
	for {
		nc, err := l.ln.AcceptUnix()
		if err != nil {
			switch {
			case l.isClosed():
				return nil, l.closedErr()
			case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
				return nil, ctx.Err()
			default:
				return nil, fmt.Errorf("transport: accept on %s: %w", l.path, err)
			}
		}
		peer := peerCred(nc)
		if !l.allowed(peer) {
			l.refused.Add(1)
			_ = nc.Close()
			continue
		}
		return newUnixConn(nc, l.path, l.max, peer), nil
	}
}

func (l *UnixListener) allowed(p Peer) bool {
	return len(l.allow) == 0 || p.Known && slices.Contains(l.allow, p.UID)
}

func (l *UnixListener) closedErr() error {
	return fmt.Errorf("transport: accept on %s: %w", l.path, ErrClosed)
}

func (l *UnixListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// Refused returns how many connections Accept has refused because of
// UnixOptions.AllowUIDs. It does not block.
func (l *UnixListener) Refused() uint64 { return l.refused.Load() }

// Close stops the listener: blocked and later Accept calls return
// ErrClosed. It removes the socket file if it is still the one ListenUnix
// created (a socket a newer listener put at the path is left alone).
// Accepted connections stay open. Close does not block and returns nil,
// also when called again.
func (l *UnixListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		_ = l.ln.Close()
		if now, err := os.Lstat(l.path); err == nil && os.SameFile(now, l.file) {
			_ = os.Remove(l.path)
		}
	})
	return nil
}

// Addr returns the socket path.
func (l *UnixListener) Addr() string { return l.path }

// DialUnix connects to the Unix socket at path. It blocks until connected
// or ctx ends. Errors name the path and wrap the cause: errors.Is(err,
// fs.ErrNotExist) if there is no socket, syscall.ECONNREFUSED if nobody
// listens on it, or ctx's error. Only opts.MaxFrameSize is used; the
// connection's Peer is the listening process (from SO_PEERCRED).
func DialUnix(ctx context.Context, path string, opts UnixOptions) (Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("transport: dial %s: %w", path, ctxErr)
		}
		if oe, ok := errors.AsType[*net.OpError](err); ok {
			err = oe.Err // its message would repeat the path
		}
		return nil, fmt.Errorf("transport: dial %s: %w", path, err)
	}
	uc := nc.(*net.UnixConn)
	return newUnixConn(uc, path, maxFrameSize(opts.MaxFrameSize), peerCred(uc)), nil
}

// unixConn is a Conn over a Unix stream socket: frames are lines.
type unixConn struct {
	nc   *net.UnixConn
	path string
	max  int
	peer Peer

	done      chan struct{} // closed by Close
	closeOnce sync.Once

	// Write side, owned by the Send holding sending.
	sending chan struct{} // capacity 1; a channel so waiting honours ctx
	wbuf    []byte        // scratch for small frames
	vec     net.Buffers   // for writev of large frames
	werr    error         // sticky: the write side is broken
	// wdl watches the context of the last Send that wrote, and keeps
	// watching it between Sends (see ctxDeadline.watch), until a Send with
	// another context or the connection's close.
	wdl ctxDeadline

	// Read side, owned by the Recv holding rmu.
	rmu  sync.Mutex
	lr   *lineReader
	rdl  ctxDeadline     // as wdl, for the context of the last Recv that read
	rctx context.Context // the running Recv's
}

var (
	_ Conn        = (*unixConn)(nil)
	_ Lender      = (*unixConn)(nil)
	_ BatchSender = (*unixConn)(nil)
	_ Buffering   = (*unixConn)(nil)
)

func newUnixConn(nc *net.UnixConn, path string, max int, peer Peer) *unixConn {
	c := &unixConn{
		nc:      nc,
		path:    path,
		max:     max,
		peer:    peer,
		done:    make(chan struct{}),
		sending: make(chan struct{}, 1),
		wdl:     ctxDeadline{set: nc.SetWriteDeadline},
		rdl:     ctxDeadline{set: nc.SetReadDeadline},
	}
	c.lr = newLineReader(connReader{c}, max, readBufferSize)
	return c
}

func (c *unixConn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Send writes frame and a newline; see Conn.Send. Concurrent Sends queue
// for the socket, each still honouring its ctx and Close while it waits.
// ctx is enforced with a write deadline: if it ends after part of the frame
// went out, the connection is closed (the peer then sees ErrPartialFrame),
// since the stream cannot go on; if nothing went out, it stays usable. A
// peer that has gone (EPIPE, ECONNRESET) gives ErrPeerClosed from then on.
func (c *unixConn) Send(ctx context.Context, frame []byte) error {
	if err := checkFrame(frame, c.max); err != nil {
		return err
	}
	_, err := c.send(ctx, frame, nil)
	return err
}

// SendBatch writes frames, each with its newline, in one system call when
// they fit in the write buffer (else with writev); see BatchSender. It
// checks every frame before it writes any. Like Send, it closes the
// connection if ctx ends after part of a frame went out.
func (c *unixConn) SendBatch(ctx context.Context, frames [][]byte) (int, error) {
	for _, f := range frames {
		if err := checkFrame(f, c.max); err != nil {
			return 0, err
		}
	}
	if len(frames) == 0 {
		return 0, nil
	}
	return c.send(ctx, nil, frames)
}

// send writes frame, or else frames, once it holds the write side, and
// returns how many frames went out whole.
func (c *unixConn) send(ctx context.Context, frame []byte, frames [][]byte) (int, error) {
	select {
	case c.sending <- struct{}{}:
	default:
		select {
		case c.sending <- struct{}{}:
		case <-c.done:
			return 0, ErrClosed
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	defer c.sendDone()
	switch {
	case c.isClosed():
		return 0, ErrClosed
	case c.werr != nil:
		return 0, c.werr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.wdl.watch(ctx)
	var n int64
	var err error
	if frames == nil {
		n, err = c.write(frame)
	} else {
		n, err = c.writeFrames(frames)
	}
	if err == nil {
		return max(1, len(frames)), nil
	}
	sent, cut := 0, n > 0 // whole frames out; whether one is cut off
	if frames != nil {
		sent, cut = wholeFrames(frames, n)
	}
	switch {
	case c.isClosed():
		return sent, ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		if cut {
			// Part of a frame is out: the stream cannot go on.
			_ = c.Close()
		}
		return sent, ctx.Err()
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		c.werr = ErrPeerClosed
	default:
		c.werr = fmt.Errorf("transport: send to %s: %w", c.path, err)
	}
	return sent, c.werr
}

// wholeFrames returns how many of frames the first n bytes written hold
// whole (each with its newline), and whether they end inside a frame.
func wholeFrames(frames [][]byte, n int64) (int, bool) {
	for i, f := range frames {
		if n < int64(len(f))+1 {
			return i, n > 0
		}
		n -= int64(len(f)) + 1
	}
	return len(frames), false
}

// write writes frame and its newline, in one system call when the socket
// buffer has room. It returns how many bytes went out.
func (c *unixConn) write(frame []byte) (int64, error) {
	if len(frame) <= copyWriteMax {
		b := append(append(c.scratch(), frame...), '\n')
		n, err := c.nc.Write(b)
		return int64(n), err
	}
	c.vec = append(c.vec[:0], frame, newline)
	n, err := c.vec.WriteTo(c.nc)
	c.vec = c.vec[:0:0] // drop the reference to frame
	return n, err
}

// writeFrames writes frames, each followed by a newline: copied into the
// write buffer and written at once if they fit, else in place with
// writev(2). It returns how many bytes went out.
func (c *unixConn) writeFrames(frames [][]byte) (int64, error) {
	total := 0
	for _, f := range frames {
		total += len(f) + 1
	}
	if total <= copyWriteMax+1 {
		b := c.scratch()
		for _, f := range frames {
			b = append(append(b, f...), '\n')
		}
		n, err := c.nc.Write(b)
		return int64(n), err
	}
	for _, f := range frames {
		c.vec = append(c.vec, f, newline)
	}
	v := c.vec // WriteTo consumes its receiver
	n, err := v.WriteTo(c.nc)
	clear(c.vec) // drop the references to frames
	c.vec = c.vec[:0]
	return n, err
}

// scratch returns the write buffer, empty.
func (c *unixConn) scratch() []byte {
	if c.wbuf == nil {
		c.wbuf = make([]byte, 0, copyWriteMax+1)
	}
	return c.wbuf[:0]
}

// Buffered reports whether bytes read from the socket wait to be returned
// by Recv; see Buffering.
func (c *unixConn) Buffered() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.lr.buffered()
}

// Recv returns the next line; see Conn.Recv. It reads up to
// readBufferSize bytes per system call and buffers at most MaxFrameSize+1
// more for a frame spanning reads. An oversized line is skipped (bounded
// memory) and reported as ErrFrameTooLarge; blank lines are skipped; a
// trailing '\r' is stripped. ctx is enforced with a read deadline, set
// up only when a read is needed, and kept for the next Recv with the same
// context.
func (c *unixConn) Recv(ctx context.Context) ([]byte, error) {
	return c.recv(ctx, false)
}

// RecvLent is Recv without the copy: the frame is read in place in the
// connection's buffer; see Lender.
func (c *unixConn) RecvLent(ctx context.Context) ([]byte, error) {
	return c.recv(ctx, true)
}

func (c *unixConn) recv(ctx context.Context, lend bool) ([]byte, error) {
	c.rmu.Lock()
	defer c.recvDone()
	if c.isClosed() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		_ = c.Close()
		return nil, err
	}
	c.rctx = ctx // watched by connReader.Read only if a read is needed
	frame, err := c.lr.read(lend)
	c.rctx = nil
	if err == nil {
		return frame, nil
	}
	switch {
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrPartialFrame):
		return nil, err
	case c.isClosed():
		return nil, ErrClosed
	case err == io.EOF:
		return nil, ErrPeerClosed
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil:
		_ = c.Close()
		return nil, ctx.Err()
	default:
		return nil, fmt.Errorf("transport: recv from %s: %w", c.path, err)
	}
}

// connReader is the socket as the lineReader reads it: it has the running
// Recv's context watched before it reads, and reports a reset connection
// (the peer closed with data of ours unread) as the end of the stream.
type connReader struct{ c *unixConn }

func (r connReader) Read(p []byte) (int, error) {
	c := r.c
	c.rdl.watch(c.rctx)
	n, err := c.nc.Read(p)
	if err != nil && errors.Is(err, syscall.ECONNRESET) {
		err = io.EOF
	}
	return n, err
}

// Close closes the socket; see Conn.Close. It also ends the watch of the
// contexts of the last Send and Recv, at once if no Send or Recv runs, or
// else as the running one returns.
func (c *unixConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		_ = c.nc.Close()
		c.releaseSend()
		c.releaseRecv()
	})
	return nil
}

// sendDone ends a Send: it gives up the write side and, if the connection
// is closed, has the write side's context released. Whoever gives up the
// write side last after Close releases it (Close itself when no Send runs).
func (c *unixConn) sendDone() {
	<-c.sending
	if c.isClosed() {
		c.releaseSend()
	}
}

// releaseSend stops watching the last Send's context, if the write side is
// free; otherwise the Send that holds it does so as it returns.
func (c *unixConn) releaseSend() {
	select {
	case c.sending <- struct{}{}:
		c.wdl.release()
		<-c.sending
	default:
	}
}

// recvDone ends a Recv as sendDone ends a Send.
func (c *unixConn) recvDone() {
	c.rmu.Unlock()
	if c.isClosed() {
		c.releaseRecv()
	}
}

// releaseRecv stops watching the last Recv's context, as releaseSend.
func (c *unixConn) releaseRecv() {
	if c.rmu.TryLock() {
		c.rdl.release()
		c.rmu.Unlock()
	}
}

// Peer returns the peer's credentials from SO_PEERCRED, read when the
// connection was made (Known is false where that is unsupported).
func (c *unixConn) Peer() Peer { return c.peer }

// MaxFrameSize returns the largest frame Send accepts; see Capped.
func (c *unixConn) MaxFrameSize() int { return c.max }
