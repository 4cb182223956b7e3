// Package transporttest is a conformance suite for implementations of
// transport.Conn and transport.Listener: every transport of the bus must
// pass Run and RunListener.
//
// The suite runs both ends of each connection in the test process. It
// starts goroutines only through a per-test harness that closes the
// connections and waits for them when the test ends, so it can be used
// with goleak.
package transporttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/transport"
)

// MaxFrameSize is the frame cap the suite assumes: the connections that
// the factories given to Run and RunListener make must have exactly this
// MaxFrameSize in both directions.
const MaxFrameSize = 64 << 10

// waitTimeout bounds every wait of the suite: a result that has not come
// by then means the implementation is stuck.
const waitTimeout = 20 * time.Second

// Run runs the connection conformance tests as subtests of t. newPair must
// return the two connected ends of a fresh connection with MaxFrameSize
// MaxFrameSize (client the dialling side, server the accepting one); it
// may use t.Cleanup to release what else it made (a listener). The suite
// closes both connections at the end of each subtest.
//
// Besides Conn's documented contract, the suite requires Peer to be Known
// and to report this process (both ends run in it), and a Send that can
// make no progress (nobody receives) to block once the connection's
// buffers are full, rather than grow them without bound.
func Run(t *testing.T, newPair func(t *testing.T) (client, server transport.Conn)) {
	t.Helper()
	setup := func(t *testing.T) (*harness, transport.Conn, transport.Conn) {
		t.Helper()
		client, server := newPair(t)
		require.NotNil(t, client, "newPair returned a nil client")
		require.NotNil(t, server, "newPair returned a nil server")
		h := newHarness(t)
		h.track(client, server)
		return h, client, server
	}
	directions := []struct {
		name     string
		from, to func(client, server transport.Conn) transport.Conn
	}{
		{"client to server", first, second},
		{"server to client", second, first},
	}

	t.Run("FramesArriveInOrder", func(t *testing.T) {
		for _, d := range directions {
			t.Run(d.name, func(t *testing.T) {
				h, client, server := setup(t)
				from, to := d.from(client, server), d.to(client, server)
				const n = 300
				want := make([][]byte, n)
				for i := range want {
					want[i] = fmt.Appendf(nil, `{"seq":%d,"pad":%q}`, i, strings.Repeat("x", i*37%1000))
				}
				sent := goResult(h, func() error {
					for _, f := range want {
						if err := from.Send(context.Background(), f); err != nil {
							return err
						}
					}
					return nil
				})
				for i := range want {
					got, err := to.Recv(context.Background())
					require.NoError(t, err, "frame %d", i)
					require.Equal(t, string(want[i]), string(got), "frame %d", i)
				}
				require.NoError(t, await(t, sent))
			})
		}
	})

	t.Run("ConcurrentSendersNeverInterleave", func(t *testing.T) {
		h, client, server := setup(t)
		const senders, each = 8, 40
		sizes := []int{1, 100, 5000, 20000, MaxFrameSize - 100}
		type msg struct {
			S, I int
			Pad  string
		}
		results := make([]<-chan error, senders)
		for s := range senders {
			results[s] = goResult(h, func() error {
				for i := range each {
					f, err := json.Marshal(msg{S: s, I: i, Pad: strings.Repeat(string(rune('a'+s)), sizes[(s+i)%len(sizes)])})
					if err != nil {
						return err
					}
					if err := client.Send(context.Background(), f); err != nil {
						return fmt.Errorf("sender %d frame %d: %w", s, i, err)
					}
				}
				return nil
			})
		}
		next := make([]int, senders)
		for range senders * each {
			f, err := server.Recv(context.Background())
			require.NoError(t, err)
			var m msg
			require.NoError(t, json.Unmarshal(f, &m), "a frame arrived damaged (%d bytes)", len(f))
			require.True(t, m.S >= 0 && m.S < senders, "bad sender %d", m.S)
			require.Equal(t, next[m.S], m.I, "frames of sender %d out of order", m.S)
			require.Equal(t, strings.Repeat(string(rune('a'+m.S)), sizes[(m.S+m.I)%len(sizes)]), m.Pad)
			next[m.S]++
		}
		for _, r := range results {
			require.NoError(t, await(t, r))
		}
	})

	t.Run("FrameSize", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			size int
			ok   bool
		}{
			{"one byte", 1, true},
			{"just under the cap", MaxFrameSize - 1, true},
			{"at the cap", MaxFrameSize, true},
			{"one over the cap", MaxFrameSize + 1, false},
			{"far over the cap", 4*MaxFrameSize + 3, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h, client, server := setup(t)
				frame := pattern(tc.size)
				got := goResult(h, func() result {
					f, err := server.Recv(context.Background())
					return result{f, err}
				})
				err := client.Send(context.Background(), frame)
				if !tc.ok {
					require.ErrorIs(t, err, transport.ErrFrameTooLarge)
					// Nothing was sent and the connection still works.
					require.NoError(t, client.Send(context.Background(), []byte(`"after"`)))
					frame = []byte(`"after"`)
				} else {
					require.NoError(t, err)
				}
				r := await(t, got)
				require.NoError(t, r.err)
				require.True(t, bytes.Equal(frame, r.frame), "frame of %d bytes arrived as %d bytes, or changed", len(frame), len(r.frame))
			})
		}
	})

	t.Run("InvalidFrame", func(t *testing.T) {
		h, client, server := setup(t)
		for _, frame := range [][]byte{nil, {}, []byte("\n"), []byte("a\nb"), []byte("{}\n"), []byte("\n{}"), []byte("{}\r\n"), []byte("{}\r")} {
			require.ErrorIs(t, client.Send(context.Background(), frame), transport.ErrInvalidFrame, "frame %q", frame)
		}
		got := goResult(h, func() result {
			f, err := server.Recv(context.Background())
			return result{f, err}
		})
		require.NoError(t, client.Send(context.Background(), []byte(`"valid"`)))
		r := await(t, got)
		require.NoError(t, r.err)
		require.Equal(t, `"valid"`, string(r.frame), "an invalid frame was sent")
	})

	t.Run("FramesAreCopies", func(t *testing.T) {
		h, client, server := setup(t)
		buf := []byte(`{"v":"original"}`)
		sent := goResult(h, func() error {
			if err := client.Send(context.Background(), buf); err != nil {
				return err
			}
			copy(buf, `{"v":"MUTATED!"}`)
			return client.Send(context.Background(), buf)
		})
		first := recvOK(t, h, server)
		require.Equal(t, `{"v":"original"}`, string(first))
		for i := range first {
			first[i] = 'z' // the caller owns it
		}
		require.Equal(t, `{"v":"MUTATED!"}`, string(recvOK(t, h, server)))
		require.NoError(t, await(t, sent))
	})

	t.Run("FullDuplex", func(t *testing.T) {
		h, client, server := setup(t)
		const n = 100
		frame := pattern(30 << 10)
		var results []<-chan error
		for _, c := range []transport.Conn{client, server} {
			results = append(results,
				goResult(h, func() error {
					for range n {
						if err := c.Send(context.Background(), frame); err != nil {
							return err
						}
					}
					return nil
				}),
				goResult(h, func() error {
					for i := range n {
						f, err := c.Recv(context.Background())
						if err != nil {
							return fmt.Errorf("frame %d: %w", i, err)
						}
						if !bytes.Equal(f, frame) {
							return fmt.Errorf("frame %d damaged", i)
						}
					}
					return nil
				}))
		}
		for _, r := range results {
			require.NoError(t, await(t, r))
		}
	})

	t.Run("Backpressure", func(t *testing.T) {
		h, client, server := setup(t)
		sent, errc := fill(t, h, client, context.Background())
		blocked := sent.Load()
		// Receiving makes room: the sender goes on. Once the frame after
		// the last one sent has arrived whole, its Send must return.
		received := goResult(h, func() error {
			for i := range blocked + 1 {
				f, err := server.Recv(context.Background())
				if err != nil {
					return fmt.Errorf("frame %d: %w", i, err)
				}
				if len(f) != MaxFrameSize {
					return fmt.Errorf("frame %d has %d bytes", i, len(f))
				}
			}
			return nil
		})
		require.NoError(t, await(t, received))
		require.Eventually(t, func() bool { return sent.Load() > blocked },
			waitTimeout, time.Millisecond, "Send stayed blocked after the peer received")
		require.NoError(t, client.Close())
		require.ErrorIs(t, await(t, errc), transport.ErrClosed)
	})

	t.Run("CloseUnblocksRecv", func(t *testing.T) {
		h, _, server := setup(t)
		got := goResult(h, func() error {
			_, err := server.Recv(context.Background())
			return err
		})
		require.NoError(t, server.Close())
		require.ErrorIs(t, await(t, got), transport.ErrClosed)
	})

	t.Run("CloseUnblocksSend", func(t *testing.T) {
		h, client, _ := setup(t)
		_, errc := fill(t, h, client, context.Background())
		require.NoError(t, client.Close())
		require.ErrorIs(t, await(t, errc), transport.ErrClosed)
	})

	t.Run("CloseIsIdempotent", func(t *testing.T) {
		h, client, server := setup(t)
		for range 3 {
			require.NoError(t, client.Close())
		}
		require.ErrorIs(t, client.Send(context.Background(), []byte("{}")), transport.ErrClosed)
		_, err := client.Recv(context.Background())
		require.ErrorIs(t, err, transport.ErrClosed)
		require.ErrorIs(t, recvErr(t, h, server), transport.ErrPeerClosed)
	})

	t.Run("PeerCloseAfterQueuedFrames", func(t *testing.T) {
		h, client, server := setup(t)
		want := []string{`1`, `"two"`, `{"three":3}`}
		sent := goResult(h, func() error {
			for _, f := range want {
				if err := client.Send(context.Background(), []byte(f)); err != nil {
					return err
				}
			}
			return client.Close()
		})
		for _, f := range want {
			require.Equal(t, f, string(recvOK(t, h, server)))
		}
		require.NoError(t, await(t, sent))
		for range 2 {
			require.ErrorIs(t, recvErr(t, h, server), transport.ErrPeerClosed)
		}
		require.ErrorIs(t, server.Send(context.Background(), []byte("{}")), transport.ErrPeerClosed)
	})

	t.Run("PeerCloseUnblocksRecv", func(t *testing.T) {
		h, client, server := setup(t)
		got := goResult(h, func() error {
			_, err := server.Recv(context.Background())
			return err
		})
		require.NoError(t, client.Close())
		require.ErrorIs(t, await(t, got), transport.ErrPeerClosed)
	})

	t.Run("PeerCloseUnblocksSend", func(t *testing.T) {
		h, client, server := setup(t)
		_, errc := fill(t, h, client, context.Background())
		require.NoError(t, server.Close())
		require.ErrorIs(t, await(t, errc), transport.ErrPeerClosed)
	})

	t.Run("ContextEndsRecv", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ctx  func() (context.Context, context.CancelFunc)
			want error
		}{
			{"cancelled while blocked", func() (context.Context, context.CancelFunc) {
				return context.WithCancel(context.Background())
			}, context.Canceled},
			{"deadline while blocked", func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 20*time.Millisecond)
			}, context.DeadlineExceeded},
			{"cancelled before", func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			}, context.Canceled},
		} {
			t.Run(tc.name, func(t *testing.T) {
				h, client, server := setup(t)
				ctx, cancel := tc.ctx()
				defer cancel()
				got := goResult(h, func() error {
					_, err := server.Recv(ctx)
					return err
				})
				if tc.want == context.Canceled {
					cancel()
				}
				require.ErrorIs(t, await(t, got), tc.want)
				// The connection is closed.
				require.ErrorIs(t, server.Send(context.Background(), []byte("{}")), transport.ErrClosed)
				_, err := server.Recv(context.Background())
				require.ErrorIs(t, err, transport.ErrClosed)
				require.ErrorIs(t, recvErr(t, h, client), transport.ErrPeerClosed)
			})
		}
	})

	t.Run("ContextEndsSend", func(t *testing.T) {
		t.Run("cancelled while blocked", func(t *testing.T) {
			h, client, _ := setup(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, errc := fill(t, h, client, ctx)
			cancel()
			require.ErrorIs(t, await(t, errc), context.Canceled)
		})
		t.Run("deadline while blocked", func(t *testing.T) {
			_, client, _ := setup(t)
			// Nobody receives: sooner or later a Send blocks until its
			// deadline.
			require.ErrorIs(t, sendUntilError(t, client, 20*time.Millisecond), context.DeadlineExceeded)
		})
		t.Run("deadline while waiting behind a blocked Send", func(t *testing.T) {
			h, client, _ := setup(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, errc := fill(t, h, client, ctx)
			require.ErrorIs(t, sendUntilError(t, client, 20*time.Millisecond), context.DeadlineExceeded)
			cancel()
			err := await(t, errc)
			if !errors.Is(err, transport.ErrClosed) { // the deadline may close a stream cut mid-frame
				require.ErrorIs(t, err, context.Canceled)
			}
		})
		t.Run("cancelled before", func(t *testing.T) {
			_, client, _ := setup(t)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			require.ErrorIs(t, client.Send(ctx, []byte("{}")), context.Canceled)
		})
	})

	t.Run("ContextEndsBetweenCalls", func(t *testing.T) {
		// A context that ends while no call uses it (a transport may keep
		// watching the last one) disturbs no later call with another.
		for _, d := range directions {
			t.Run(d.name, func(t *testing.T) {
				_, client, server := setup(t)
				from, to := d.from(client, server), d.to(client, server)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				for i := range 3 {
					frame := fmt.Appendf(nil, `{"n":%d}`, i)
					require.NoError(t, from.Send(ctx, frame))
					got, err := to.Recv(ctx)
					require.NoError(t, err)
					require.Equal(t, string(frame), string(got))
				}
				cancel()
				require.ErrorIs(t, from.Send(ctx, []byte("{}")), context.Canceled)
				other, cancelOther := context.WithTimeout(context.Background(), waitTimeout)
				defer cancelOther()
				for _, ctx := range []context.Context{other, context.Background(), other} {
					require.NoError(t, from.Send(ctx, []byte(`{"after":true}`)))
					got, err := to.Recv(ctx)
					require.NoError(t, err)
					require.Equal(t, `{"after":true}`, string(got))
				}
			})
		}
	})

	t.Run("SendBatch", func(t *testing.T) {
		// transport.SendBatch: through the Conn's own SendBatch if it is a
		// BatchSender, else one Send each; either way in order, between
		// Sends, small batches and large ones.
		for _, d := range directions {
			t.Run(d.name, func(t *testing.T) {
				h, client, server := setup(t)
				from, to := d.from(client, server), d.to(client, server)
				// Batches of these sizes, each followed by one Send; 40 and
				// 100 frames exceed any small write buffer.
				sizes := []int{1, 3, 0, 40, 1, 100}
				var want [][]byte
				for range sizes {
					for range 101 {
						i := len(want)
						want = append(want, fmt.Appendf(nil, `{"seq":%d,"pad":%q}`, i, strings.Repeat("b", i*53%3000)))
					}
				}
				got := goResult(h, func() error {
					for i := range want {
						f, err := to.Recv(context.Background())
						if err != nil {
							return err
						}
						if !bytes.Equal(want[i], f) {
							return fmt.Errorf("frame %d: got %.60q, want %.60q", i, f, want[i])
						}
					}
					return nil
				})
				ctx := context.Background()
				next := want
				for _, size := range sizes {
					sent, err := transport.SendBatch(ctx, from, next[:size])
					require.NoError(t, err)
					require.Equal(t, size, sent)
					require.NoError(t, from.Send(ctx, next[size]))
					next = next[size+1:]
				}
				sent, err := transport.SendBatch(ctx, from, next) // the rest, as one batch
				require.NoError(t, err)
				require.Equal(t, len(next), sent)
				require.NoError(t, await(t, got))
			})
		}
	})

	t.Run("SendBatchRefusesBadFrames", func(t *testing.T) {
		h, client, server := setup(t)
		ctx := context.Background()
		var got []string
		received := goResult(h, func() error {
			for {
				f, err := server.Recv(ctx)
				if err != nil {
					return err
				}
				if got = append(got, string(f)); string(f) == `{"after":true}` {
					return nil
				}
			}
		})
		sent, err := transport.SendBatch(ctx, client, [][]byte{[]byte(`{"a":1}`), []byte("bad\nframe"), []byte(`{"c":3}`)})
		require.ErrorIs(t, err, transport.ErrInvalidFrame)
		require.LessOrEqual(t, sent, 1)
		// What went out is the frames before the bad one; the connection
		// goes on.
		require.NoError(t, client.Send(ctx, []byte(`{"after":true}`)))
		require.NoError(t, await(t, received))
		require.Equal(t, []string{`{"a":1}`, `{"after":true}`}[1-sent:], got)
	})

	t.Run("Buffered", func(t *testing.T) {
		// transport.Buffered is false for a Conn that cannot tell, and for
		// one that can while nothing waits. (Whether it is true while a
		// frame waits depends on how the Conn reads; each transport's own
		// tests check that.)
		h, client, server := setup(t)
		ctx := context.Background()
		require.False(t, transport.Buffered(server), "nothing was sent")
		received := goResult(h, func() error {
			for range 3 {
				if _, err := server.Recv(ctx); err != nil {
					return err
				}
			}
			return nil
		})
		_, err := transport.SendBatch(ctx, client, [][]byte{[]byte(`{"n":1}`), []byte(`{"n":2}`), []byte(`{"n":3}`)})
		require.NoError(t, err)
		require.NoError(t, await(t, received))
		require.False(t, transport.Buffered(server), "all received")
	})

	t.Run("Peer", func(t *testing.T) {
		_, client, server := setup(t)
		for _, c := range []transport.Conn{client, server} {
			p := c.Peer()
			require.True(t, p.Known, "Peer().Known")
			assert.Equal(t, os.Geteuid(), p.UID)
			assert.Equal(t, os.Getegid(), p.GID)
			assert.Equal(t, os.Getpid(), p.PID)
		}
	})
}

// RunListener runs the listener conformance tests as subtests of t.
// newListener must return a fresh listener and a function that dials it
// (returning the client side), with connections of MaxFrameSize
// MaxFrameSize. The suite closes the listener and every connection at the
// end of each subtest.
func RunListener(t *testing.T, newListener func(t *testing.T) (ln transport.Listener, dial func(ctx context.Context) (transport.Conn, error))) {
	t.Helper()
	setup := func(t *testing.T) (*harness, transport.Listener, func() transport.Conn) {
		t.Helper()
		ln, dial := newListener(t)
		require.NotNil(t, ln)
		h := newHarness(t)
		h.track(ln)
		return h, ln, func() transport.Conn {
			t.Helper()
			c, err := dial(context.Background())
			require.NoError(t, err)
			h.track(c)
			return c
		}
	}
	accept := func(t *testing.T, h *harness, ln transport.Listener) transport.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		c, err := ln.Accept(ctx)
		require.NoError(t, err)
		h.track(c)
		return c
	}

	t.Run("DialAccept", func(t *testing.T) {
		h, ln, dial := setup(t)
		require.NotEmpty(t, ln.Addr())
		client := dial()
		server := accept(t, h, ln)
		require.NoError(t, client.Send(context.Background(), []byte(`"ping"`)))
		require.Equal(t, `"ping"`, string(recvOK(t, h, server)))
		require.NoError(t, server.Send(context.Background(), []byte(`"pong"`)))
		require.Equal(t, `"pong"`, string(recvOK(t, h, client)))
		for _, c := range []transport.Conn{client, server} {
			require.True(t, c.Peer().Known, "Peer().Known")
			require.Equal(t, os.Geteuid(), c.Peer().UID)
		}
	})

	t.Run("ManyConnections", func(t *testing.T) {
		h, ln, dial := setup(t)
		const n = 6
		clients := make([]transport.Conn, n)
		for i := range clients {
			clients[i] = dial()
			require.NoError(t, clients[i].Send(context.Background(), fmt.Appendf(nil, "%d", i)))
		}
		var got []string
		for range n {
			got = append(got, string(recvOK(t, h, accept(t, h, ln))))
		}
		slices.Sort(got)
		require.Equal(t, []string{"0", "1", "2", "3", "4", "5"}, got)
	})

	t.Run("AcceptContext", func(t *testing.T) {
		t.Run("cancelled while blocked", func(t *testing.T) {
			h, ln, dial := setup(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := goResult(h, func() error {
				_, err := ln.Accept(ctx)
				return err
			})
			cancel()
			require.ErrorIs(t, await(t, got), context.Canceled)
			// The listener still works.
			client := dial()
			server := accept(t, h, ln)
			require.NoError(t, client.Send(context.Background(), []byte("1")))
			require.Equal(t, "1", string(recvOK(t, h, server)))
		})
		t.Run("deadline while blocked", func(t *testing.T) {
			_, ln, _ := setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := ln.Accept(ctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
		})
		t.Run("cancelled before", func(t *testing.T) {
			_, ln, _ := setup(t)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := ln.Accept(ctx)
			require.ErrorIs(t, err, context.Canceled)
		})
		t.Run("one of two Accepts cancelled", func(t *testing.T) {
			h, ln, dial := setup(t)
			type accepted struct {
				c   transport.Conn
				err error
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cancelled := goResult(h, func() error {
				_, err := ln.Accept(ctx)
				return err
			})
			waiting := goResult(h, func() accepted {
				c, err := ln.Accept(context.Background())
				if c != nil {
					h.track(c)
				}
				return accepted{c, err}
			})
			cancel()
			require.ErrorIs(t, await(t, cancelled), context.Canceled)
			client := dial()
			a := await(t, waiting)
			require.NoError(t, a.err, "the other Accept must not be disturbed")
			require.NoError(t, client.Send(context.Background(), []byte("2")))
			require.Equal(t, "2", string(recvOK(t, h, a.c)))
		})
	})

	t.Run("CloseUnblocksAccept", func(t *testing.T) {
		h, ln, _ := setup(t)
		got := goResult(h, func() error {
			_, err := ln.Accept(context.Background())
			return err
		})
		require.NoError(t, ln.Close())
		require.ErrorIs(t, await(t, got), transport.ErrClosed)
	})

	t.Run("AcceptAfterClose", func(t *testing.T) {
		_, ln, _ := setup(t)
		for range 3 {
			require.NoError(t, ln.Close())
		}
		_, err := ln.Accept(context.Background())
		require.ErrorIs(t, err, transport.ErrClosed)
	})

	t.Run("AcceptedConnectionsSurviveClose", func(t *testing.T) {
		h, ln, dial := setup(t)
		client := dial()
		server := accept(t, h, ln)
		require.NoError(t, ln.Close())
		require.NoError(t, client.Send(context.Background(), []byte("3")))
		require.Equal(t, "3", string(recvOK(t, h, server)))
		require.NoError(t, server.Send(context.Background(), []byte("4")))
		require.Equal(t, "4", string(recvOK(t, h, client)))
	})
}

// harness owns what a subtest starts: at cleanup it closes the tracked
// closers (which unblocks the goroutines), then waits for the goroutines.
type harness struct {
	t       *testing.T
	wg      sync.WaitGroup
	mu      sync.Mutex
	closers []io.Closer
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t}
	t.Cleanup(h.cleanup)
	return h
}

func (h *harness) track(cs ...io.Closer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closers = append(h.closers, cs...)
}

func (h *harness) cleanup() {
	h.mu.Lock()
	closers := h.closers
	h.mu.Unlock()
	for _, c := range slices.Backward(closers) {
		assert.NoError(h.t, c.Close())
	}
	h.wg.Wait()
}

// goResult runs f in a goroutine owned by h and delivers its result.
func goResult[T any](h *harness, f func() T) <-chan T {
	ch := make(chan T, 1)
	h.wg.Go(func() { ch <- f() })
	return ch
}

// await returns the value ch delivers, failing t after waitTimeout.
func await[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v: the call is stuck", waitTimeout)
		panic("unreachable")
	}
}

type result struct {
	frame []byte
	err   error
}

// recvOK receives one frame from c, failing t on an error or a hang.
func recvOK(t *testing.T, h *harness, c transport.Conn) []byte {
	t.Helper()
	r := await(t, goResult(h, func() result {
		f, err := c.Recv(context.Background())
		return result{f, err}
	}))
	require.NoError(t, r.err)
	return r.frame
}

// recvErr receives from c, expecting an error, failing t on a hang.
func recvErr(t *testing.T, h *harness, c transport.Conn) error {
	t.Helper()
	r := await(t, goResult(h, func() result {
		f, err := c.Recv(context.Background())
		return result{f, err}
	}))
	require.Error(t, r.err, "Recv returned a frame: %q", r.frame)
	return r.err
}

// fill starts a goroutine that sends frames of MaxFrameSize bytes on c
// until Send fails (nobody receives them), and returns once Send seems
// blocked: the count of frames sent has stopped moving. The channel
// delivers Send's error.
func fill(t *testing.T, h *harness, c transport.Conn, ctx context.Context) (*atomic.Int64, <-chan error) {
	t.Helper()
	var sent atomic.Int64
	frame := pattern(MaxFrameSize)
	errc := goResult(h, func() error {
		for {
			if err := c.Send(ctx, frame); err != nil {
				return err
			}
			sent.Add(1)
		}
	})
	// Stable over several polls: a sender merely slowed down by a loaded
	// machine rarely stalls that long. (Mistaking one for blocked only
	// weakens the tests that call fill, it does not fail them.)
	last, stable := int64(-1), 0
	require.Eventually(t, func() bool {
		n := sent.Load()
		if n == last {
			stable++
		} else {
			stable = 0
		}
		last = n
		return stable >= 3
	}, waitTimeout, 20*time.Millisecond, "Send never blocked")
	return &sent, errc
}

// sendUntilError sends frames of MaxFrameSize bytes on c, each with its
// own timeout, until one fails, and returns that error.
func sendUntilError(t *testing.T, c transport.Conn, timeout time.Duration) error {
	t.Helper()
	frame := pattern(MaxFrameSize)
	for range 100000 {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := c.Send(ctx, frame)
		cancel()
		if err != nil {
			return err
		}
	}
	t.Fatal("Send never blocked")
	return nil
}

// pattern returns n bytes of printable text that shows damage.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func first(a, _ transport.Conn) transport.Conn  { return a }
func second(_, b transport.Conn) transport.Conn { return b }

// ShortDir returns a fresh directory, removed when the test ends, whose path
// is short enough for Unix socket addresses (at most 108 bytes, which paths
// under t.TempDir() can exceed).
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ab")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
