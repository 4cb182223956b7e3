package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/transport"
)

// benchPayload is a ~128-byte JSON payload, as in the bus's own benchmarks.
var benchPayload = []byte(`{"task":"review","file":"internal/server/conn.go","line":42,"severity":"info","note":"looks fine to me"}`)

// socketDaemon serves a fresh bus on a Unix socket in this process.
func socketDaemon(b *testing.B) string {
	b.Helper()
	path := filepath.Join(shortDir(b), "bench.sock")
	l, err := transport.ListenUnix(path, transport.UnixOptions{})
	require.NoError(b, err)
	serve(b, agentbus.Config{}, server.Config{}, l)
	return path
}

// rawDial connects, says hello and registers agent (if not empty).
func rawDial(b *testing.B, path, agent string) transport.Conn {
	b.Helper()
	ctx := context.Background()
	c, err := transport.DialUnix(ctx, path, transport.UnixOptions{})
	require.NoError(b, err)
	b.Cleanup(func() { _ = c.Close() })
	for _, f := range []string{`{"op":"hello","id":"h","version":1}`, `{"op":"register","id":"r","agent":"` + agent + `"}`} {
		if agent == "" && f[7] == 'r' {
			continue
		}
		require.NoError(b, c.Send(ctx, []byte(f)))
		data, err := c.Recv(ctx)
		require.NoError(b, err)
		fr, err := protocol.Decode(data)
		require.NoError(b, err)
		require.NotEqual(b, protocol.OpError, fr.Op, fr.Error)
	}
	return c
}

// socketPair is a connected pair of Unix-socket transports with no daemon.
func socketPair(b *testing.B) (transport.Conn, transport.Conn) {
	b.Helper()
	path := filepath.Join(shortDir(b), "floor.sock")
	l, err := transport.ListenUnix(path, transport.UnixOptions{})
	require.NoError(b, err)
	b.Cleanup(func() { _ = l.Close() })
	ctx := context.Background()
	type res struct {
		c   transport.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() { c, err := l.Accept(ctx); acc <- res{c, err} }()
	client, err := transport.DialUnix(ctx, path, transport.UnixOptions{})
	require.NoError(b, err)
	r := <-acc
	require.NoError(b, r.err)
	b.Cleanup(func() { _ = client.Close(); _ = r.c.Close() })
	return client, r.c
}

// sendFrame is the frame the stream benchmarks move: a send of a direct
// message with benchPayload.
func sendFrame(b *testing.B) []byte {
	m := agentbus.NewMessage(agentbus.TypeDirect, "producer", benchPayload)
	m.Recipient = "consumer"
	f, err := protocol.Encode(&protocol.Frame{Op: protocol.OpSend, ID: "1", Message: m})
	require.NoError(b, err)
	return f
}

// BenchmarkSocket measures the daemon against the floor of moving the same
// NDJSON frames over a bare Unix socket:
//
//   - stream: one client sends (pipelined) to an agent of another client
//     through the daemon; msgs/s.
//   - stream-floor: the same send frames, encoded, written, read and decoded
//     over one socket pair.
//   - roundtrip: Request from one client to an agent of another, which
//     replies, with the Go client on both sides; ns/op, p50/p99.
//   - roundtrip-floor: the four frames of that round trip (request, deliver,
//     respond, response), with the same ops and content, each encoded,
//     written, read and decoded in turn over one socket pair with no bus:
//     from encoding the request to decoding the response.
//   - roundtrip-2frames: one request frame there and one response frame
//     back over a socket pair, each encoded and decoded.
//
// BenchmarkSocketRelay is the other baseline: the 2-frame exchange through
// a bare relay, which crosses a socket four times as the daemon's round trip
// does.
func BenchmarkSocket(b *testing.B) {
	b.Run("stream", func(b *testing.B) {
		path := socketDaemon(b)
		consumer := rawDial(b, path, "consumer")
		producer := rawDial(b, path, "producer")
		frame := sendFrame(b)
		ctx := context.Background()
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			// One iteration streams a batch, so the pipeline stays full.
			const batch = 1000
			wg.Add(2)
			go func() { defer wg.Done(); receive(b, producer, batch, protocol.OpOK) }() // the producer's answers
			go func() { defer wg.Done(); receive(b, consumer, batch, protocol.OpDeliver) }()
			for range batch {
				if err := producer.Send(ctx, frame); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("stream-floor", func(b *testing.B) {
		in, out := socketPair(b)
		m := agentbus.NewMessage(agentbus.TypeDirect, "producer", benchPayload)
		m.Recipient = "consumer"
		ctx := context.Background()
		var wg sync.WaitGroup
		b.ReportAllocs()
		for b.Loop() {
			const batch = 1000
			wg.Add(1)
			go func() { defer wg.Done(); receive(b, out, batch, protocol.OpSend) }()
			for range batch {
				frame, err := protocol.Encode(&protocol.Frame{Op: protocol.OpSend, ID: "1", Message: m})
				if err != nil {
					b.Fatal(err)
				}
				if err := in.Send(ctx, frame); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
		}
		b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("roundtrip", func(b *testing.B) {
		path := socketDaemon(b)
		ctx := context.Background()
		dial := func() *client.Client {
			c, err := client.Dial(ctx, path, client.Options{})
			require.NoError(b, err)
			b.Cleanup(func() { _ = c.Close() })
			return c
		}
		asker, worker := dial(), dial()
		require.NoError(b, worker.Register(ctx, "worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
			_, err := worker.Reply(ctx, m, m.Payload)
			return err
		})))
		lat := make([]time.Duration, 0, 1<<16)
		b.ReportAllocs()
		for b.Loop() {
			m := agentbus.NewMessage(agentbus.TypeRequest, "", benchPayload)
			m.Recipient = "worker"
			start := time.Now()
			if _, err := asker.Request(ctx, m); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	b.Run("roundtrip-floor", func(b *testing.B) { overPair(b, echoDaemon, floorLoop) })
	b.Run("roundtrip-2frames", func(b *testing.B) { overPair(b, echoWorker, askLoop) })
}

// overPair runs loop on one end of a bare socket pair while serve answers on
// the other, and waits for serve once loop is done.
func overPair(b *testing.B, serve, loop func(*testing.B, transport.Conn)) {
	a, w := socketPair(b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(b, w)
	}()
	loop(b, a)
	_ = a.Close()
	<-done
}

// echoDaemon plays the daemon and the worker's reading side of the 4-frame
// floor on w, until w fails: it answers a request frame with the deliver
// frame the daemon would push to the worker, and a respond frame with the
// response frame the daemon would send the asker.
func echoDaemon(b *testing.B, w transport.Conn) {
	var askID string
	answerFrames(b, w, func(f *protocol.Frame) (*protocol.Frame, bool) {
		switch f.Op {
		case protocol.OpRequest:
			m := f.Message
			if m.RequestID == "" { // as Bus.Request does
				m.RequestID = m.ID
			}
			askID = f.ID
			return &protocol.Frame{Op: protocol.OpDeliver, Agent: m.Recipient, Message: m}, true
		case protocol.OpRespond:
			return &protocol.Frame{Op: protocol.OpResponse, ID: askID, Message: f.Message}, true
		}
		return nil, false
	})
}

// answerFrames reads frames from w and sends what answer makes of each back
// on w, until w fails or answer refuses a frame (an error of the benchmark).
func answerFrames(b *testing.B, w transport.Conn, answer func(*protocol.Frame) (*protocol.Frame, bool)) {
	relayFrames(b, w, w, answer)
}

// relayFrames reads frames from from, decodes them, and encodes and sends
// what answer makes of each on to, until a connection fails or answer
// refuses a frame (an error of the benchmark).
func relayFrames(b *testing.B, from, to transport.Conn, answer func(*protocol.Frame) (*protocol.Frame, bool)) {
	ctx := context.Background()
	for {
		data, err := from.Recv(ctx)
		if err != nil {
			return
		}
		f, err := protocol.Decode(data)
		if err != nil {
			b.Error(err)
			return
		}
		reply, ok := answer(f)
		if !ok {
			b.Errorf("unexpected %s", data)
			return
		}
		out, err := protocol.Encode(reply)
		if err != nil || to.Send(ctx, out) != nil {
			return
		}
	}
}

// floorLoop is the timed loop of roundtrip-floor on a: the asker's request
// frame, the deliver frame read and answered with the worker's respond
// frame (as client.Reply writes it), and the response frame read.
func floorLoop(b *testing.B, a transport.Conn) {
	ctx := context.Background()
	recv := func(op string) *protocol.Frame {
		data, err := a.Recv(ctx)
		if err != nil {
			b.Fatal(err)
		}
		f, err := protocol.Decode(data)
		if err != nil || f.Op != op {
			b.Fatalf("want %s, got %s: %v", op, data, err)
		}
		return f
	}
	send := func(f *protocol.Frame) {
		frame, err := protocol.Encode(f)
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Send(ctx, frame); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		m := agentbus.NewMessage(agentbus.TypeRequest, "", benchPayload)
		m.Recipient = "worker"
		start := time.Now()
		send(&protocol.Frame{Op: protocol.OpRequest, ID: "1", Message: m})
		req := recv(protocol.OpDeliver).Message
		send(&protocol.Frame{Op: protocol.OpRespond, ID: "2", Message: req.NewResponse(req.Recipient, req.Payload)})
		recv(protocol.OpResponse)
		lat = append(lat, time.Since(start))
	}
	reportLatency(b, lat)
}

// receive reads n frames from c and checks that each decodes to op.
func receive(b *testing.B, c transport.Conn, n int, op string) {
	ctx := context.Background()
	for range n {
		data, err := c.Recv(ctx)
		if err != nil {
			b.Error(err)
			return
		}
		if f, err := protocol.Decode(data); err != nil || f.Op != op {
			b.Errorf("want %s, got %s: %v", op, data, err)
			return
		}
	}
}

// echoWorker answers each request frame read from w with a response frame
// carrying its payload, until w fails.
func echoWorker(b *testing.B, w transport.Conn) {
	answerFrames(b, w, func(f *protocol.Frame) (*protocol.Frame, bool) {
		resp := f.Message.NewResponse("worker", f.Message.Payload)
		return &protocol.Frame{Op: protocol.OpResponse, ID: f.ID, Message: resp}, true
	})
}

// askLoop is the timed loop of the floor benchmarks: encode a request,
// send it on a, read and decode the answer; it reports p50 and p99.
func askLoop(b *testing.B, a transport.Conn) {
	ctx := context.Background()
	lat := make([]time.Duration, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		m := agentbus.NewMessage(agentbus.TypeRequest, "asker", benchPayload)
		m.Recipient = "worker"
		start := time.Now()
		frame, err := protocol.Encode(&protocol.Frame{Op: protocol.OpRequest, ID: "1", Message: m})
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Send(ctx, frame); err != nil {
			b.Fatal(err)
		}
		data, err := a.Recv(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := protocol.Decode(data); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportLatency(b, lat)
}

// BenchmarkSocketRelay is the round trip of BenchmarkSocket/roundtrip-2frames
// through a bare relay: each frame is decoded and encoded again by a relay
// between two socket pairs, so it crosses a socket four times, as a round
// trip through the daemon does, but without a bus. It is the like-for-like
// baseline for what the daemon adds.
func BenchmarkSocketRelay(b *testing.B) {
	a, relayA := socketPair(b)
	relayB, w := socketPair(b)
	var wg sync.WaitGroup
	forward := func(from, to transport.Conn) {
		defer wg.Done()
		relayFrames(b, from, to, func(f *protocol.Frame) (*protocol.Frame, bool) { return f, true })
	}
	wg.Add(3)
	go forward(relayA, relayB)
	go forward(relayB, relayA)
	go func() {
		defer wg.Done()
		echoWorker(b, w)
	}()
	askLoop(b, a)
	for _, c := range []transport.Conn{a, relayA, relayB, w} {
		_ = c.Close()
	}
	wg.Wait()
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

var _ = fmt.Sprint
