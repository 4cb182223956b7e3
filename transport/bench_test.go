//go:build linux

package transport_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/transport"
)

// benchFrame is a typical small message: about 200 bytes of JSON.
var benchFrame = []byte(fmt.Sprintf(`{"type":"message","to":"agent-42","from":"agent-7","id":"0190a6d2-7c3e-7b1a-9f7e-3c2d1e0f9a8b","body":%q}`,
	strings.Repeat("x", 200-120)))

// streamBench measures one sender goroutine streaming benchFrame to the
// benchmark loop, which receives one frame per iteration.
func streamBench(b *testing.B, client, server transport.Conn) {
	b.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for client.Send(context.Background(), benchFrame) == nil {
		}
	})
	b.SetBytes(int64(len(benchFrame) + 1))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := server.Recv(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	// Stop the sender: it sees ErrClosed.
	require.NoError(b, client.Close())
	require.NoError(b, server.Close())
	wg.Wait()
}

func BenchmarkUnix(b *testing.B) {
	b.Logf("frame: %d bytes", len(benchFrame))
	b.Run("stream", func(b *testing.B) {
		client, server := newUnixPair(b, transport.UnixOptions{})
		streamBench(b, client, server)
	})
	b.Run("memory", func(b *testing.B) {
		ln := transport.NewMemoryListener(transport.MemoryOptions{})
		defer ln.Close()
		client, err := ln.Dial(context.Background())
		require.NoError(b, err)
		server, err := ln.Accept(context.Background())
		require.NoError(b, err)
		streamBench(b, client, server)
	})
}

// BenchmarkRawNDJSON is the floor BenchmarkUnix/stream is compared with:
// the same stream over a bare Unix socket, one write(2) per line, lines
// read with a bufio.Reader (copied, as the transport returns owned
// frames), no size cap, no context, no locking.
func BenchmarkRawNDJSON(b *testing.B) {
	path := filepath.Join(shortDir(b), "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(b, err)
	defer ln.Close()
	client, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(b, err)
	server, err := ln.AcceptUnix()
	require.NoError(b, err)
	line := append(append([]byte(nil), benchFrame...), '\n')
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if _, err := client.Write(line); err != nil {
				return
			}
		}
	})
	r := bufio.NewReaderSize(server, 64<<10)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		l, err := r.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		_ = append([]byte(nil), l[:len(l)-1]...)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	_ = server.Close()
	_ = client.Close()
	wg.Wait()
}
