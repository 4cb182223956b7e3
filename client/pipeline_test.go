package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
)

func direct(to string, payload string) *agentbus.Message {
	m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(payload))
	m.Recipient = to
	return m
}

// requireAccepted fails t unless p, covered by a Flush that returned, is
// settled and was accepted.
func requireAccepted(ctx context.Context, t *testing.T, p *client.Pending) {
	t.Helper()
	select {
	case <-p.Done():
	default:
		t.Fatal("Flush returned before a send it covers was settled")
	}
	id, err := p.Wait(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, id)
}

// A stream of asynchronous sends arrives whole and in order, and Flush
// returns once every one is confirmed.
func TestSendAsyncStreamsInOrder(t *testing.T) {
	d := newDaemon(t, agentbus.Config{MailboxSize: 4096})
	s := d.client(t, client.Options{Window: 64})
	r := d.client(t, client.Options{})
	ctx := ctx5(t)
	const n = 2000
	got := make(inbox, n)
	require.NoError(t, r.Register(ctx, "sink", got))
	handles := make([]*client.Pending, 0, n)
	for i := range n {
		p, err := s.SendAsync(ctx, direct("sink", fmt.Sprint(i)))
		require.NoError(t, err)
		handles = append(handles, p)
	}
	require.NoError(t, s.Flush(ctx))
	for _, p := range handles {
		requireAccepted(ctx, t, p)
	}
	for i := range n {
		require.Equal(t, fmt.Sprint(i), string(got.next(t).Payload))
	}
}

// Every refusal is reported: by its handle, and once by the next Flush.
func TestFlushReportsEveryRefusal(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	s := d.client(t, client.Options{})
	r := d.client(t, client.Options{})
	ctx := ctx5(t)
	got := make(inbox, 8)
	require.NoError(t, r.Register(ctx, "sink", got))
	var bad []*client.Pending
	for i := range 6 {
		to := "sink"
		if i%2 == 1 {
			to = fmt.Sprint("nobody-", i)
		}
		p, err := s.SendAsync(ctx, direct(to, fmt.Sprint(i)))
		require.NoError(t, err)
		if i%2 == 1 {
			bad = append(bad, p)
		}
	}
	err := s.Flush(ctx)
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)
	for i, p := range bad {
		_, perr := p.Wait(ctx)
		require.ErrorIs(t, perr, agentbus.ErrNoRecipient)
		assert.ErrorIs(t, p.Err(), agentbus.ErrNoRecipient)
		assert.Contains(t, err.Error(), fmt.Sprintf("nobody-%d", 2*i+1), "each refusal is in Flush's error")
	}
	assert.Len(t, err.(interface{ Unwrap() []error }).Unwrap(), 3)
	require.NoError(t, s.Flush(ctx), "a refusal is reported once")
	for range 3 {
		got.next(t)
	}
	// Send keeps its meaning: the refusal is its error.
	_, err = s.Send(ctx, direct("nobody", "1"))
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)
}

// The window bounds unconfirmed sends: with the recipient full, the daemon
// holds the send that waits for room (and the sends behind it, which it
// carries out in order), SendAsync blocks once the window is full, and the
// connection's other operations go on meanwhile.
func TestWindowPushesBack(t *testing.T) {
	d := newDaemon(t, agentbus.Config{MailboxSize: 1, Backpressure: agentbus.BackpressureConfig{Timeout: time.Minute}})
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	_, err := d.bus.Spawn("slow", agentbus.HandlerFunc(func(ctx context.Context, _ *agentbus.Message) error {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
		return nil
	}))
	require.NoError(t, err)
	const window = 3
	s := d.client(t, client.Options{Window: window})
	ctx := ctx5(t)
	// One in the handler, one in the mailbox, and then the window's worth
	// unconfirmed: one waiting for room and the rest behind it, which the
	// daemon carries out in order.
	for i := range 2 + window {
		p, err := s.SendAsync(ctx, direct("slow", fmt.Sprint(i)))
		require.NoError(t, err)
		if i < 2 {
			_, err := p.Wait(ctx)
			require.NoError(t, err)
		}
		if i == 0 {
			<-started
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = s.SendAsync(short, direct("slow", `"over"`))
	require.ErrorIs(t, err, context.DeadlineExceeded, "the window is full")
	_, err = s.Ping(ctx)
	require.NoError(t, err, "a ping is not held up by sends waiting for room")
	close(release)
	require.NoError(t, s.Flush(ctx))
	p, err := s.SendAsync(ctx, direct("slow", `"after"`))
	require.NoError(t, err)
	_, err = p.Wait(ctx)
	require.NoError(t, err)
}

// Concurrent Sends share the pipeline and each returns its own answer.
func TestConcurrentSendsShareThePipeline(t *testing.T) {
	d := newDaemon(t, agentbus.Config{MailboxSize: 4096})
	s := d.client(t, client.Options{Window: 16})
	r := d.client(t, client.Options{})
	ctx := ctx5(t)
	got := make(inbox, 4096)
	require.NoError(t, r.Register(ctx, "sink", got))
	const senders, each = 8, 100
	errs := make(chan error, senders)
	for g := range senders {
		go func() {
			for i := range each {
				to := "sink"
				if i == 50 {
					to = "nobody"
				}
				_, err := s.Send(ctx, direct(to, fmt.Sprintf(`"%d-%d"`, g, i)))
				if (to == "nobody") != errors.Is(err, agentbus.ErrNoRecipient) {
					errs <- fmt.Errorf("send %d-%d to %s: %v", g, i, to, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range senders {
		require.NoError(t, <-errs)
	}
	for range senders * (each - 1) {
		got.next(t)
	}
}

// A dropped connection settles what was in flight with ErrDisconnected.
func TestDisconnectSettlesPending(t *testing.T) {
	d := newDaemon(t, agentbus.Config{MailboxSize: 1, Backpressure: agentbus.BackpressureConfig{Timeout: time.Minute}})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	_, err := d.bus.Spawn("stuck", agentbus.HandlerFunc(func(ctx context.Context, _ *agentbus.Message) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}))
	require.NoError(t, err)
	s := d.client(t, client.Options{})
	ctx := ctx5(t)
	var last *client.Pending
	for i := range 5 {
		last, err = s.SendAsync(ctx, direct("stuck", fmt.Sprint(i)))
		require.NoError(t, err)
	}
	d.cut()
	_, err = last.Wait(ctx)
	require.ErrorIs(t, err, client.ErrDisconnected)
	require.ErrorIs(t, s.Flush(ctx), client.ErrDisconnected)
}

// ReplyAsync answers requests without a round trip per reply: the
// requester gets each response, the replies (more than the window holds)
// are confirmed in batches, a Flush confirms the rest, and a refused reply
// settles its Pending with the refusal and is reported by Flush.
func TestReplyAsync(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	const window = 4
	asker, worker := d.client(t, client.Options{}), d.client(t, client.Options{Window: window})
	ctx := ctx5(t)
	replies := make(chan *client.Pending, 64)
	require.NoError(t, worker.Register(ctx, "worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		p, err := worker.ReplyAsync(ctx, m, m.Payload)
		if err == nil {
			replies <- p
		}
		return err
	})))
	const n = 3 * window // past the window: a full window has its replies confirmed
	for i := range n {
		req := agentbus.NewMessage(agentbus.TypeRequest, "", []byte(fmt.Sprint(i)))
		req.Recipient = "worker"
		resp, err := asker.Request(ctx, req)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(i), string(resp.Payload))
		assert.Equal(t, "worker", resp.Sender)
	}
	require.NoError(t, worker.Flush(ctx))
	for range n {
		p := <-replies
		requireAccepted(ctx, t, p)
	}

	// A reply from an agent the client does not own is refused.
	req := agentbus.NewMessage(agentbus.TypeRequest, "asker", nil)
	req.Recipient, req.RequestID = "ghost", "r-ghost"
	p, err := worker.ReplyAsync(ctx, req, []byte(`1`))
	require.NoError(t, err)
	err = worker.Flush(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ghost")
	_, perr := p.Wait(ctx)
	require.Error(t, perr)
	require.NoError(t, worker.Flush(ctx), "a refusal is reported once")
	_, err = worker.ReplyAsync(ctx, nil, nil)
	require.ErrorIs(t, err, agentbus.ErrInvalidMessage)
}
