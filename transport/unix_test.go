//go:build linux

package transport_test

import (
	"context"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus/transport"
	"github.com/descartes/agentbus/transport/transporttest"
)

// shortDir is transporttest.ShortDir.
var shortDir = transporttest.ShortDir

func listenUnix(t testing.TB, path string, opts transport.UnixOptions) *transport.UnixListener {
	t.Helper()
	ln, err := transport.ListenUnix(path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, ln.Close()) })
	return ln
}

func dialUnix(t testing.TB, path string, opts transport.UnixOptions) transport.Conn {
	t.Helper()
	c, err := transport.DialUnix(context.Background(), path, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func accept(t testing.TB, ln transport.Listener) transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ln.Accept(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// newUnixPair returns a connected pair over a fresh listener.
func newUnixPair(t testing.TB, opts transport.UnixOptions) (client, server transport.Conn) {
	t.Helper()
	path := filepath.Join(shortDir(t), "s")
	ln := listenUnix(t, path, opts)
	client = dialUnix(t, path, opts)
	return client, accept(t, ln)
}

func recv(t testing.TB, c transport.Conn) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Recv(ctx)
}

func TestUnixConformance(t *testing.T) {
	opts := transport.UnixOptions{MaxFrameSize: transporttest.MaxFrameSize}
	transporttest.Run(t, func(t *testing.T) (transport.Conn, transport.Conn) {
		path := filepath.Join(shortDir(t), "s")
		ln, err := transport.ListenUnix(path, opts)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, ln.Close()) })
		client, err := transport.DialUnix(context.Background(), path, opts)
		require.NoError(t, err)
		server, err := ln.Accept(context.Background())
		if err != nil {
			_ = client.Close()
		}
		require.NoError(t, err)
		return client, server
	})
}

func TestUnixListenerConformance(t *testing.T) {
	opts := transport.UnixOptions{MaxFrameSize: transporttest.MaxFrameSize}
	transporttest.RunListener(t, func(t *testing.T) (transport.Listener, func(context.Context) (transport.Conn, error)) {
		path := filepath.Join(shortDir(t), "s")
		ln, err := transport.ListenUnix(path, opts)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, ln.Close()) })
		return ln, func(ctx context.Context) (transport.Conn, error) {
			return transport.DialUnix(ctx, path, opts)
		}
	})
}

func TestListenUnixMode(t *testing.T) {
	// A umask that would spoil both modes if ListenUnix relied on it.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, tc := range []struct {
		name string
		mode fs.FileMode
		want fs.FileMode
	}{
		{"default", 0, 0o600},
		{"group", 0o660, 0o660},
		{"everyone", 0o666, 0o666},
		{"only permission bits", fs.ModeSetuid | 0o640, 0o640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "s")
			ln := listenUnix(t, path, transport.UnixOptions{Mode: tc.mode})
			fi, err := os.Lstat(path)
			require.NoError(t, err)
			assert.Equal(t, fs.ModeSocket, fi.Mode().Type())
			assert.Equal(t, tc.want, fi.Mode().Perm())
			assert.Equal(t, path, ln.Addr())
			// Nothing but the socket is left in the directory.
			entries, err := os.ReadDir(filepath.Dir(path))
			require.NoError(t, err)
			require.Len(t, entries, 1)
			// And it works.
			client := dialUnix(t, path, transport.UnixOptions{})
			server := accept(t, ln)
			require.NoError(t, client.Send(context.Background(), []byte("1")))
			f, err := recv(t, server)
			require.NoError(t, err)
			require.Equal(t, "1", string(f))
		})
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "s")
	// A listener that died without removing its socket file.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	old.SetUnlinkOnClose(false)
	require.NoError(t, old.Close())
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	require.Equal(t, fs.ModeSocket, fi.Mode().Type())

	ln := listenUnix(t, path, transport.UnixOptions{})
	client := dialUnix(t, path, transport.UnixOptions{})
	server := accept(t, ln)
	require.NoError(t, server.Send(context.Background(), []byte(`"hi"`)))
	f, err := recv(t, client)
	require.NoError(t, err)
	require.Equal(t, `"hi"`, string(f))
}

func TestListenUnixNeverStealsALiveSocket(t *testing.T) {
	t.Run("ours", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s")
		ln := listenUnix(t, path, transport.UnixOptions{})
		_, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.ErrorIs(t, err, transport.ErrAddrInUse)
		require.ErrorContains(t, err, path)
		// The first listener still works; the probe's connection may be
		// waiting in its backlog: Accept skips nothing, so take it first.
		probe := accept(t, ln)
		_, err = recv(t, probe)
		require.ErrorIs(t, err, transport.ErrPeerClosed)
		client := dialUnix(t, path, transport.UnixOptions{})
		server := accept(t, ln)
		require.NoError(t, client.Send(context.Background(), []byte("1")))
		f, err := recv(t, server)
		require.NoError(t, err)
		require.Equal(t, "1", string(f))
	})
	t.Run("foreign", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s")
		raw, err := net.Listen("unix", path)
		require.NoError(t, err)
		defer raw.Close()
		_, err = transport.ListenUnix(path, transport.UnixOptions{})
		require.ErrorIs(t, err, transport.ErrAddrInUse)
		fi, err := os.Lstat(path)
		require.NoError(t, err)
		require.Equal(t, fs.ModeSocket, fi.Mode().Type())
	})
}

func TestListenUnixRefusesOtherFiles(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(path string) error
		kind string
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("keep me"), 0o644) }, "regular file"},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, "directory"},
		{"symbolic link", func(p string) error { return os.Symlink("/nonexistent", p) }, "symbolic link"},
		{"named pipe", func(p string) error { return syscall.Mkfifo(p, 0o600) }, "named pipe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(shortDir(t), "s")
			require.NoError(t, tc.make(path))
			before, err := os.Lstat(path)
			require.NoError(t, err)
			_, err = transport.ListenUnix(path, transport.UnixOptions{})
			require.ErrorIs(t, err, fs.ErrExist)
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, tc.kind)
			after, err := os.Lstat(path)
			require.NoError(t, err)
			require.True(t, os.SameFile(before, after), "the file was replaced")
			if tc.name == "regular file" {
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				require.Equal(t, "keep me", string(b))
			}
		})
	}
}

func TestListenUnixBadPaths(t *testing.T) {
	dir := shortDir(t)
	t.Run("missing directory", func(t *testing.T) {
		path := filepath.Join(dir, "missing", "s")
		_, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, path)
	})
	t.Run("parent is a file", func(t *testing.T) {
		file := filepath.Join(dir, "f")
		require.NoError(t, os.WriteFile(file, nil, 0o600))
		path := filepath.Join(file, "s")
		_, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.ErrorIs(t, err, syscall.ENOTDIR)
		require.ErrorContains(t, err, path)
	})
	t.Run("unwritable directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("running as root, which may write to any directory: the permission check cannot be observed")
		}
		ro := filepath.Join(dir, "ro")
		require.NoError(t, os.Mkdir(ro, 0o500))
		path := filepath.Join(ro, "s")
		_, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.ErrorIs(t, err, fs.ErrPermission)
		require.ErrorContains(t, err, path)
	})
	t.Run("path too long", func(t *testing.T) {
		path := filepath.Join(dir, strings.Repeat("x", 120))
		_, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.ErrorContains(t, err, "too long")
		_, err = os.Lstat(path)
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("directory too long for the temporary socket", func(t *testing.T) {
		long := filepath.Join(dir, strings.Repeat("d", 101-len(dir)))
		require.NoError(t, os.Mkdir(long, 0o700))
		path := filepath.Join(long, "s")
		require.LessOrEqual(t, len(path), 107)
		_, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.ErrorContains(t, err, "too long")
		entries, err := os.ReadDir(long)
		require.NoError(t, err)
		require.Empty(t, entries, "the temporary directory was left behind")
	})
	t.Run("empty path", func(t *testing.T) {
		_, err := transport.ListenUnix("", transport.UnixOptions{})
		require.Error(t, err)
	})
}

func TestUnixListenerCloseRemovesOnlyItsSocket(t *testing.T) {
	t.Run("removes its socket", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s")
		ln, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.NoError(t, err)
		require.NoError(t, ln.Close())
		_, err = os.Lstat(path)
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.NoError(t, ln.Close())
	})
	t.Run("keeps a newer socket", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s")
		old, err := transport.ListenUnix(path, transport.UnixOptions{})
		require.NoError(t, err)
		// A newer daemon takes the path over.
		require.NoError(t, os.Remove(path))
		newer := listenUnix(t, path, transport.UnixOptions{})
		require.NoError(t, old.Close())
		_, err = os.Lstat(path)
		require.NoError(t, err, "the newer socket was removed")
		client := dialUnix(t, path, transport.UnixOptions{})
		server := accept(t, newer)
		require.NoError(t, client.Send(context.Background(), []byte("1")))
		f, err := recv(t, server)
		require.NoError(t, err)
		require.Equal(t, "1", string(f))
	})
}

func TestUnixAllowUIDs(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s")
		ln := listenUnix(t, path, transport.UnixOptions{AllowUIDs: []int{os.Geteuid() + 1}})
		ctx, cancel := context.WithCancel(context.Background())
		accepted := make(chan error, 1)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		wg.Go(func() {
			c, err := ln.Accept(ctx)
			if c != nil {
				_ = c.Close()
			}
			accepted <- err
		})
		client := dialUnix(t, path, transport.UnixOptions{})
		_, err := recv(t, client)
		require.ErrorIs(t, err, transport.ErrPeerClosed)
		require.Eventually(t, func() bool { return ln.Refused() == 1 }, 10*time.Second, time.Millisecond)
		// A client that wrote first sees its connection end too.
		client2 := dialUnix(t, path, transport.UnixOptions{})
		if err := client2.Send(context.Background(), []byte("{}")); err != nil {
			require.ErrorIs(t, err, transport.ErrPeerClosed) // already refused
		}
		_, err = recv(t, client2)
		require.ErrorIs(t, err, transport.ErrPeerClosed)
		require.Eventually(t, func() bool { return ln.Refused() == 2 }, 10*time.Second, time.Millisecond)
		cancel()
		require.ErrorIs(t, <-accepted, context.Canceled, "Accept returned a refused peer")
	})
	t.Run("allowed", func(t *testing.T) {
		path := filepath.Join(shortDir(t), "s")
		ln := listenUnix(t, path, transport.UnixOptions{AllowUIDs: []int{12345, os.Geteuid()}})
		dialUnix(t, path, transport.UnixOptions{})
		server := accept(t, ln)
		require.Equal(t, os.Geteuid(), server.Peer().UID)
		require.Equal(t, os.Getpid(), server.Peer().PID)
		require.Zero(t, ln.Refused())
	})
}

// rawClient connects to path without the transport and writes raw bytes.
func rawClient(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestUnixRecvFromRawClient(t *testing.T) {
	const max = 16
	path := filepath.Join(shortDir(t), "s")
	ln := listenUnix(t, path, transport.UnixOptions{MaxFrameSize: max})
	raw := rawClient(t, path)
	server := accept(t, ln)

	long := strings.Repeat("L", 3*64<<10) // longer than the read buffer too
	_, err := io.WriteString(raw, "{\"a\":1}\r\n\n\r\n\n"+
		strings.Repeat("x", max+1)+"\n"+ // one over
		strings.Repeat("y", max)+"\r\n"+ // at the cap, CRLF
		long+"\n"+
		"\"next\"\n"+
		"partial")
	require.NoError(t, err)
	require.NoError(t, raw.CloseWrite())

	type step struct {
		frame string
		err   error
	}
	for i, want := range []step{
		{frame: `{"a":1}`},
		{err: transport.ErrFrameTooLarge},
		{frame: strings.Repeat("y", max)},
		{err: transport.ErrFrameTooLarge},
		{frame: `"next"`},
		{err: transport.ErrPartialFrame},
		{err: transport.ErrPeerClosed},
		{err: transport.ErrPeerClosed},
	} {
		f, err := recv(t, server)
		if want.err != nil {
			require.ErrorIs(t, err, want.err, "step %d", i)
			continue
		}
		require.NoError(t, err, "step %d", i)
		require.Equal(t, want.frame, string(f), "step %d", i)
	}
}

func TestUnixWireFormat(t *testing.T) {
	// A raw server: what the client sends is exactly frame + "\n".
	client, raw := rawPeer(t)

	big := strings.Repeat("b", 100<<10) // written with writev
	for _, f := range []string{`{"x":1}`, big} {
		require.NoError(t, client.Send(context.Background(), []byte(f)))
	}
	require.NoError(t, client.Close())
	got, err := io.ReadAll(raw)
	require.NoError(t, err)
	require.Equal(t, `{"x":1}`+"\n"+big+"\n", string(got))

	// And the client reads what a raw server writes.
	client2, raw2 := rawPeer(t)
	_, err = io.WriteString(raw2, "1\n2\n")
	require.NoError(t, err)
	for _, want := range []string{"1", "2"} {
		f, err := recv(t, client2)
		require.NoError(t, err)
		require.Equal(t, want, string(f))
	}
}

func TestUnixPeerResetIsPeerClosed(t *testing.T) {
	// The server closes with our frame unread: the kernel reports a reset
	// to us, which is still the peer closing.
	client, server := newUnixPair(t, transport.UnixOptions{})
	require.NoError(t, client.Send(context.Background(), []byte("{}")))
	require.NoError(t, server.Close())
	_, err := recv(t, client)
	require.ErrorIs(t, err, transport.ErrPeerClosed)
	err = client.Send(context.Background(), []byte("{}"))
	require.ErrorIs(t, err, transport.ErrPeerClosed)
	// Sticky.
	require.ErrorIs(t, client.Send(context.Background(), []byte("{}")), transport.ErrPeerClosed)
}

func TestUnixSendInterruptedMidFrame(t *testing.T) {
	// A Send cut off by its context after writing part of the frame closes
	// the connection: the peer sees a partial frame, never a spliced one.
	client, raw := rawPeer(t)

	big := []byte(strings.Repeat("z", 4<<20)) // far more than the socket buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer client.Close() // unblocks the Send if the test fails early
	wg.Go(func() { done <- client.Send(ctx, big) })
	// The first byte has arrived: the write has started.
	_, err := io.ReadFull(raw, make([]byte, 1))
	require.NoError(t, err)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.ErrorIs(t, client.Send(context.Background(), []byte("{}")), transport.ErrClosed)
	rest, err := io.ReadAll(raw)
	require.NoError(t, err)
	require.Less(t, len(rest)+1, len(big), "the whole frame went out")
	require.NotContains(t, string(rest), "\n")
}

func TestDialUnixErrors(t *testing.T) {
	dir := shortDir(t)
	t.Run("no socket", func(t *testing.T) {
		path := filepath.Join(dir, "none")
		_, err := transport.DialUnix(context.Background(), path, transport.UnixOptions{})
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, path)
	})
	t.Run("nobody listening", func(t *testing.T) {
		path := filepath.Join(dir, "stale")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		require.NoError(t, err)
		old.SetUnlinkOnClose(false)
		require.NoError(t, old.Close())
		_, err = transport.DialUnix(context.Background(), path, transport.UnixOptions{})
		require.ErrorIs(t, err, syscall.ECONNREFUSED)
		require.ErrorContains(t, err, path)
	})
	t.Run("context done", func(t *testing.T) {
		path := filepath.Join(dir, "s")
		listenUnix(t, path, transport.UnixOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := transport.DialUnix(ctx, path, transport.UnixOptions{})
		require.ErrorIs(t, err, context.Canceled)
	})
}

func TestUnixDefaultMaxFrameSize(t *testing.T) {
	client, _ := newUnixPair(t, transport.UnixOptions{})
	err := client.Send(context.Background(), make([]byte, transport.DefaultMaxFrameSize+1))
	require.ErrorIs(t, err, transport.ErrFrameTooLarge)
}

// opaqueCtx is a cancellable context the context package cannot see
// through, so that watching it takes a goroutine of that package (which
// goleak sees) for as long as the watch lasts.
type opaqueCtx struct{ context.Context }

func (opaqueCtx) Value(any) any { return nil }

func TestUnixCloseEndsContextWatch(t *testing.T) {
	// A connection keeps watching the context of its last Send and Recv
	// between calls; Close ends that, or the registration would keep the
	// connection alive as long as the context.
	for _, busy := range []bool{false, true} {
		t.Run(map[bool]string{false: "idle", true: "recv running"}[busy], func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			client, server := newUnixPair(t, transport.UnixOptions{})
			parent, cancel := context.WithCancel(context.Background())
			defer cancel()
			ctx := opaqueCtx{parent}
			require.NoError(t, client.Send(ctx, []byte("{}")))
			_, err := server.Recv(ctx)
			require.NoError(t, err)
			var wg sync.WaitGroup
			if busy { // a Recv blocked in a read when Close comes
				wg.Go(func() {
					_, err := server.Recv(ctx)
					assert.ErrorIs(t, err, transport.ErrClosed)
				})
			}
			require.NoError(t, server.Close())
			require.NoError(t, client.Close())
			wg.Wait()
			goleak.VerifyNone(t, before)
		})
	}
}

func TestUnixBuffered(t *testing.T) {
	// Frames that arrived together are read together: after the first is
	// received, the connection says the second waits.
	client, server := newUnixPair(t, transport.UnixOptions{})
	ctx := context.Background()
	require.False(t, transport.Buffered(server))
	require.NoError(t, client.Send(ctx, []byte(`{"n":1}`)))
	require.NoError(t, client.Send(ctx, []byte(`{"n":2}`)))
	_, err := recv(t, server)
	require.NoError(t, err)
	require.True(t, transport.Buffered(server))
	f, err := recv(t, server)
	require.NoError(t, err)
	require.Equal(t, `{"n":2}`, string(f))
	require.False(t, transport.Buffered(server))
}

func TestUnixSendBatchInterruptedMidFrame(t *testing.T) {
	// As Send: a batch cut off by its context inside a frame closes the
	// connection; the frames before the cut count as sent.
	client, raw := rawPeer(t)

	small := []byte(`{"first":1}`)
	big := []byte(strings.Repeat("z", 4<<20)) // far more than the socket buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		sent int
		err  error
	}
	done := make(chan result, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer client.Close() // unblocks the Send if the test fails early
	wg.Go(func() {
		sent, err := transport.SendBatch(ctx, client, [][]byte{small, big, small})
		done <- result{sent, err}
	})
	// The first frame and a byte of the second have arrived.
	_, err := io.ReadFull(raw, make([]byte, len(small)+2))
	require.NoError(t, err)
	cancel()
	r := <-done
	require.ErrorIs(t, r.err, context.Canceled)
	require.Equal(t, 1, r.sent)
	require.ErrorIs(t, client.Send(context.Background(), []byte("{}")), transport.ErrClosed)
}

// rawPeer returns a client transport connected to a bare Unix socket, for
// tests that read or write the wire themselves.
func rawPeer(t *testing.T) (transport.Conn, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(shortDir(t), "s")
	rawLn, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = rawLn.Close() })
	client := dialUnix(t, path, transport.UnixOptions{})
	raw, err := rawLn.AcceptUnix()
	require.NoError(t, err)
	t.Cleanup(func() { _ = raw.Close() })
	return client, raw
}
