package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// daemon is a bus served in memory.
type daemon struct {
	bus *agentbus.Bus
	l   *transport.MemoryListener

	mu    sync.Mutex
	conns []transport.Conn // client sides, to cut them
}

func newDaemon(t *testing.T, cfg agentbus.Config) *daemon {
	t.Helper()
	bus, err := agentbus.New(cfg)
	require.NoError(t, err)
	srv, err := server.New(server.Config{Bus: bus})
	require.NoError(t, err)
	d := &daemon{bus: bus, l: transport.NewMemoryListener(transport.MemoryOptions{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, d.l) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		require.NoError(t, srv.Close(sctx))
		require.NoError(t, bus.Shutdown(sctx))
		require.NoError(t, d.l.Close())
	})
	return d
}

func (d *daemon) dial(ctx context.Context) (transport.Conn, error) {
	c, err := d.l.Dial(ctx)
	if err == nil {
		d.mu.Lock()
		d.conns = append(d.conns, c)
		d.mu.Unlock()
	}
	return c, err
}

// cut closes every connection made so far, as a crash of the network would.
func (d *daemon) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		_ = c.Close()
	}
	d.conns = nil
}

func (d *daemon) client(t *testing.T, opts client.Options) *client.Client {
	t.Helper()
	opts.Dial = d.dial
	opts.MinBackoff = time.Millisecond
	opts.MaxBackoff = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "", opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// inbox is a handler that hands messages to a channel.
type inbox chan *agentbus.Message

func (in inbox) Handle(ctx context.Context, m *agentbus.Message) error {
	select {
	case in <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (in inbox) next(t *testing.T) *agentbus.Message {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
		return nil
	}
}

func TestTopics(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	c := d.client(t, client.Options{})
	ctx := ctx5(t)
	got, err := c.Topics(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, []client.TopicInfo{}, got)
	require.NoError(t, c.Register(ctx, "watcher", make(inbox, 1)))
	require.NoError(t, c.Subscribe(ctx, "watcher", "builds.*"))
	got, err = c.Topics(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, []client.TopicInfo{{Topic: "builds.*", Subscribers: []string{"watcher"}}}, got)
}

func TestSendAndErrors(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	a, b := d.client(t, client.Options{Name: "a"}), d.client(t, client.Options{Name: "b"})
	name, version := a.Server()
	assert.Equal(t, "agentbus", name)
	assert.Equal(t, protocol.Version, version)
	ctx := ctx5(t)
	got := make(inbox, 8)
	require.NoError(t, b.Register(ctx, "bob", got))
	require.NoError(t, a.Register(ctx, "alice", make(inbox, 1)))

	msg := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`{"hi":1}`))
	msg.Recipient = "bob"
	id, err := a.Send(ctx, msg)
	require.NoError(t, err)
	m := got.next(t)
	assert.Equal(t, id, m.ID)
	assert.Equal(t, "alice", m.Sender)

	for _, tc := range []struct {
		name string
		do   func() error
		want error
	}{
		{"no recipient", func() error {
			m := agentbus.NewMessage(agentbus.TypeDirect, "", nil)
			m.Recipient = "nobody"
			_, err := a.Send(ctx, m)
			return err
		}, agentbus.ErrNoRecipient},
		{"agent exists", func() error { return a.Register(ctx, "bob", make(inbox)) }, agentbus.ErrAgentExists},
		{"agent exists locally", func() error { return a.Register(ctx, "alice", make(inbox)) }, agentbus.ErrAgentExists},
		{"invalid agent", func() error { return a.Register(ctx, "has space", make(inbox)) }, agentbus.ErrInvalidAgent},
		{"nil handler", func() error { return a.Register(ctx, "x", nil) }, agentbus.ErrInvalidAgent},
		{"invalid subject", func() error { return b.Subscribe(ctx, "bob", "a..b") }, agentbus.ErrInvalidSubject},
		{"not subscribed", func() error { return b.Unsubscribe(ctx, "bob", "a.b") }, agentbus.ErrNotSubscribed},
		{"unknown letter", func() error { _, err := a.Replay(ctx, 12345, ""); return err }, agentbus.ErrUnknownLetter},
		{"invalid priority", func() error {
			m := agentbus.NewMessage(agentbus.TypeDirect, "", nil)
			m.Recipient, m.Priority = "bob", 101
			_, err := a.Send(ctx, m)
			return err
		}, agentbus.ErrInvalidMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, tc.do(), tc.want)
		})
	}
	// The agent of another client cannot be used as sender.
	spoof := agentbus.NewMessage(agentbus.TypeDirect, "bob", nil)
	spoof.Recipient = "bob"
	_, err = a.Send(ctx, spoof)
	require.Error(t, err)
	require.NoError(t, b.Unregister(ctx, "bob"))
	require.Error(t, b.Unregister(ctx, "bob"))
}

func TestRequestReply(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	asker, worker := d.client(t, client.Options{}), d.client(t, client.Options{})
	ctx := ctx5(t)
	require.NoError(t, worker.Register(ctx, "worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		assert.Equal(t, "worker", client.AgentFromContext(ctx))
		_, err := worker.Reply(ctx, m, []byte(`{"answer":42}`))
		return err
	})))
	req := agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`{"q":"?"}`))
	req.Recipient = "worker"
	resp, err := asker.Request(ctx, req)
	require.NoError(t, err)
	assert.JSONEq(t, `{"answer":42}`, string(resp.Payload))
	assert.Equal(t, "worker", resp.Sender)

	// A request to an agent that never answers times out by ctx.
	require.NoError(t, worker.Register(ctx, "mute", make(inbox, 8)))
	req = agentbus.NewMessage(agentbus.TypeRequest, "", nil)
	req.Recipient = "mute"
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = asker.Request(short, req)
	require.Error(t, err)
	assert.True(t, errors.Is(err, agentbus.ErrRequestTimeout) || errors.Is(err, context.DeadlineExceeded), err)
}

func TestPublishSubscribe(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	pub, sub := d.client(t, client.Options{}), d.client(t, client.Options{})
	ctx := ctx5(t)
	got := make(inbox, 8)
	require.NoError(t, sub.Register(ctx, "monitor", got))
	require.NoError(t, sub.Subscribe(ctx, "monitor", "progress.*"))
	_, err := pub.Publish(ctx, "progress.w1", []byte(`{"done":1}`))
	require.NoError(t, err)
	m := got.next(t)
	assert.Equal(t, "progress.w1", m.Topic)
	require.NoError(t, sub.Unsubscribe(ctx, "monitor", "progress.*"))
	assert.Empty(t, d.bus.Subscribers("progress.w1"))
}

func TestAckAndNack(t *testing.T) {
	d := newDaemon(t, agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 3, Backoff: time.Millisecond}})
	a, w := d.client(t, client.Options{}), d.client(t, client.Options{})
	ctx := ctx5(t)
	var calls atomic.Int32
	done := make(chan int, 1)
	require.NoError(t, w.Register(ctx, "w", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		if calls.Add(1) < 2 {
			return errors.New("not yet")
		}
		done <- m.Attempts
		return nil
	})))
	m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`1`))
	m.Recipient, m.RequiresAck = "w", true
	_, err := a.Send(ctx, m)
	require.NoError(t, err)
	select {
	case attempts := <-done:
		assert.Equal(t, 2, attempts, "nacked once, acked on the redelivery")
	case <-ctx.Done():
		t.Fatal("not redelivered")
	}
	require.Eventually(t, func() bool { return d.bus.Accounting().Balanced() }, 5*time.Second, time.Millisecond)
	assert.Empty(t, d.bus.DeadLetters().List(deadletter.Filter{}))
}

func TestReconnectRestoresAgentsAndSubscriptions(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	w := d.client(t, client.Options{})
	ctx := ctx5(t)
	got := make(inbox, 8)
	require.NoError(t, w.Register(ctx, "w", got))
	require.NoError(t, w.Subscribe(ctx, "w", "news.>"))
	d.cut()
	// The daemon notices, stops w; the client reconnects and restores it.
	require.Eventually(t, func() bool {
		return w.Reconnects() == 1 && len(d.bus.Subscribers("news.today")) == 1
	}, 5*time.Second, time.Millisecond)
	other := d.client(t, client.Options{})
	_, err := other.Publish(ctx, "news.today", []byte(`"hello again"`))
	require.NoError(t, err)
	assert.Equal(t, "news.today", got.next(t).Topic)
	_, err = w.Ping(ctx)
	require.NoError(t, err)
}

func TestNoReconnectAndClose(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	c := d.client(t, client.Options{NoReconnect: true})
	ctx := ctx5(t)
	_, err := c.Ping(ctx)
	require.NoError(t, err)
	d.cut()
	require.Eventually(t, func() bool {
		_, err := c.Ping(ctx)
		return errors.Is(err, client.ErrDisconnected) && errors.Is(err, agentbus.ErrTransportClosed)
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	_, err = c.Ping(ctx)
	require.ErrorIs(t, err, client.ErrClosed)
}

func TestDialFails(t *testing.T) {
	_, err := client.Dial(context.Background(), "/nonexistent/agentbus.sock", client.Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "/nonexistent/agentbus.sock")
}

func TestInspection(t *testing.T) {
	d := newDaemon(t, agentbus.Config{EnableHistory: true})
	c := d.client(t, client.Options{})
	ctx := ctx5(t)
	_, err := c.Publish(ctx, "void", []byte(`1`))
	require.NoError(t, err)
	var letters []client.Letter
	require.Eventually(t, func() bool {
		letters, err = c.DeadLetters(ctx, client.LetterFilter{Reason: "no_subscribers"})
		return err == nil && len(letters) == 1
	}, 5*time.Second, time.Millisecond)
	msgs, err := c.History(ctx, client.HistoryQuery{Topic: "void"})
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	raw, err := c.StatsJSON(ctx)
	require.NoError(t, err)
	assert.NotEmpty(t, raw)
}

// A handler that calls the daemon while many messages queue up for its
// agent: the window keeps the connection's reader free, so the call is
// answered.
func TestBusyHandlerCallsDaemon(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	w := d.client(t, client.Options{AgentQueue: 8})
	sender := d.client(t, client.Options{})
	ctx := ctx5(t)
	const n = 200
	var handled atomic.Int32
	require.NoError(t, w.Register(ctx, "busy", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		if _, err := w.Publish(ctx, "progress.busy", []byte(`1`)); err != nil {
			return err
		}
		handled.Add(1)
		return nil
	})))
	for i := range n {
		m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(fmt.Sprint(i)))
		m.Recipient = "busy"
		_, err := sender.Send(ctx, m)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return handled.Load() == n }, 5*time.Second, time.Millisecond, "handled %d", handled.Load())
}

func TestStatsAndOversized(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	c := d.client(t, client.Options{})
	ctx := ctx5(t)
	require.NoError(t, c.Register(ctx, "me", make(inbox, 8)))
	_, err := c.Publish(ctx, "void", []byte(`1`))
	require.NoError(t, err)
	st, err := c.Stats(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 1, st.Types[agentbus.TypePublish])
	assert.EqualValues(t, 1, st.Senders.Get("me"))
	require.Len(t, st.Agents, 1)
	assert.Equal(t, "me", st.Agents[0].Name)

	// A frame over the transport's cap is refused before it is sent.
	big := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`"`+strings.Repeat("x", transport.DefaultMaxFrameSize)+`"`))
	big.Recipient = "me"
	_, err = c.Send(ctx, big)
	require.ErrorIs(t, err, agentbus.ErrMessageTooLarge)
	_, err = c.Ping(ctx)
	require.NoError(t, err, "the connection is still usable")
}

// A handler that panics: the client recovers, and a requires_ack message
// is refused so the bus redelivers it.
func TestHandlerPanicIsNacked(t *testing.T) {
	d := newDaemon(t, agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 2, Backoff: time.Millisecond}})
	w, s := d.client(t, client.Options{}), d.client(t, client.Options{})
	ctx := ctx5(t)
	var calls atomic.Int32
	require.NoError(t, w.Register(ctx, "w", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		calls.Add(1)
		panic("boom")
	})))
	m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`1`))
	m.Recipient, m.RequiresAck = "w", true
	_, err := s.Send(ctx, m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		letters, err := s.DeadLetters(ctx, client.LetterFilter{Reason: "retries_exhausted"})
		return err == nil && len(letters) == 1
	}, 5*time.Second, time.Millisecond)
	assert.EqualValues(t, 2, calls.Load())
}

// Unregister handles what the daemon had already delivered to the client.
func TestUnregisterHandlesDelivered(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	w, s := d.client(t, client.Options{}), d.client(t, client.Options{})
	ctx := ctx5(t)
	gate := make(chan struct{})
	var handled atomic.Int32
	require.NoError(t, w.Register(ctx, "w", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		<-gate
		handled.Add(1)
		return nil
	})))
	const n = 5
	for i := range n {
		m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(fmt.Sprint(i)))
		m.Recipient = "w"
		_, err := s.Send(ctx, m)
		require.NoError(t, err)
	}
	// All five reach the client (the window is 256): the daemon's agent
	// has handed them all over.
	require.Eventually(t, func() bool {
		st, err := s.Stats(ctx)
		return err == nil && len(st.Agents) == 1 && st.Agents[0].Handled == n
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, w.Unregister(ctx, "w"))
	close(gate)
	require.Eventually(t, func() bool { return handled.Load() == n }, 5*time.Second, time.Millisecond)
}

// An agent registered while the client reconnects is registered once, by
// Register itself, not also by the restore of the agents it had before.
func TestRegisterWhileReconnecting(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	ctx := ctx5(t)
	c, err := client.Dial(ctx, "", client.Options{Dial: d.dial, MinBackoff: 100 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	require.NoError(t, c.Register(ctx, "old", make(inbox, 1)))
	d.cut()
	require.Eventually(t, func() bool { return !c.Connected() }, 5*time.Second, time.Millisecond)
	got := make(inbox, 1)
	require.NoError(t, c.Register(ctx, "new", got), "waits for the new connection, then registers")
	assert.True(t, c.Connected())
	require.Eventually(t, func() bool { return c.Reconnects() == 1 }, 5*time.Second, time.Millisecond)
	for _, name := range []string{"old", "new"} {
		_, ok := d.bus.PID(name)
		assert.True(t, ok, name)
	}
	other := d.client(t, client.Options{})
	m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`1`))
	m.Recipient = "new"
	_, err = other.Send(ctx, m)
	require.NoError(t, err)
	got.next(t)
}

// Close leaves nothing unseen: messages delivered to the client that no
// handler took are dead-lettered by the daemon, and the ones handled are
// not.
func TestCloseDeadLettersUnhandled(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	s := d.client(t, client.Options{})
	ctx := ctx5(t)
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := client.Dial(wctx, "", client.Options{Dial: d.dial})
	require.NoError(t, err)
	started := make(chan struct{})
	var handled atomic.Int32
	require.NoError(t, w.Register(ctx, "w", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		if string(m.Payload) == "0" {
			close(started)
			<-ctx.Done() // held until Close ends the handlers
		}
		handled.Add(1)
		return nil
	})))
	const n = 5
	for i := range n {
		m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(fmt.Sprint(i)))
		m.Recipient = "w"
		_, err := s.Send(ctx, m)
		require.NoError(t, err)
	}
	<-started
	require.Eventually(t, func() bool { // all five forwarded to the client
		st, err := s.Stats(ctx)
		return err == nil && len(st.Agents) == 1 && st.Agents[0].Handled == n
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, w.Close())
	assert.EqualValues(t, 1, handled.Load())
	var letters []client.Letter
	require.Eventually(t, func() bool {
		letters, err = s.DeadLetters(ctx, client.LetterFilter{Reason: "transport_closed"})
		return err == nil && len(letters) == n-1
	}, 5*time.Second, time.Millisecond)
	for i, l := range letters {
		assert.Equal(t, fmt.Sprint(i+1), string(l.Message.Payload))
	}
}

// A handler's failure is seen as it would be in-process: a request fails
// at once, and a plain message is dead-lettered as handler_error.
func TestHandlerFailureReported(t *testing.T) {
	d := newDaemon(t, agentbus.Config{})
	w, s := d.client(t, client.Options{}), d.client(t, client.Options{})
	ctx := ctx5(t)
	require.NoError(t, w.Register(ctx, "w", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		return errors.New("cannot do that")
	})))
	req := agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`1`))
	req.Recipient = "w"
	start := time.Now()
	_, err := s.Request(ctx, req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot do that")
	assert.Less(t, time.Since(start), 3*time.Second, "at once, not after a timeout")

	m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`2`))
	m.Recipient = "w"
	_, err = s.Send(ctx, m)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		letters, err := s.DeadLetters(ctx, client.LetterFilter{Reason: "handler_error"})
		return err == nil && len(letters) == 2 // the request and the message
	}, 5*time.Second, time.Millisecond)
}

// credits is a connection that reports the n of each credit frame it sends.
type credits struct {
	transport.Conn
	n chan int
}

func (c *credits) Send(ctx context.Context, frame []byte) error {
	if f, err := protocol.Decode(frame); err == nil && f.Op == protocol.OpCredit {
		c.n <- f.N
	}
	return c.Conn.Send(ctx, frame)
}

func TestCreditsAnsweredDeliveriesInBatches(t *testing.T) {
	// A request settled by its response needs no credit to be accounted
	// for: its credit waits for the batch (a quarter of the window). A
	// plain delivery is credited as soon as the queue runs empty, with
	// whatever waited.
	d := newDaemon(t, agentbus.Config{})
	sent := make(chan int, 100)
	ctx := ctx5(t)
	worker, err := client.Dial(ctx, "", client.Options{AgentQueue: 8, NoReconnect: true,
		Dial: func(ctx context.Context) (transport.Conn, error) {
			c, err := d.dial(ctx)
			return &credits{Conn: c, n: sent}, err
		}})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, worker.Close()) })
	asker := d.client(t, client.Options{})
	handled := make(chan string, 100)
	require.NoError(t, worker.Register(ctx, "worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		if m.Type == agentbus.TypeRequest {
			_, err := worker.Reply(ctx, m, m.Payload)
			return err
		}
		handled <- string(m.Payload)
		return nil
	})))
	next := func() int {
		t.Helper()
		select {
		case n := <-sent:
			return n
		case <-ctx.Done():
			t.Fatal("no credit")
			return 0
		}
	}
	// 21 requests, one at a time, through a window of 8: credited by 2.
	for i := range 21 {
		req := agentbus.NewMessage(agentbus.TypeRequest, "", fmt.Appendf(nil, "%d", i))
		req.Recipient = "worker"
		_, err := asker.Request(ctx, req)
		require.NoError(t, err)
	}
	for range 10 {
		require.Equal(t, 2, next())
	}
	// A plain message: credited at once, with the request left over.
	m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`"plain"`))
	m.Recipient = "worker"
	_, err = asker.Send(ctx, m)
	require.NoError(t, err)
	require.Equal(t, `"plain"`, <-handled)
	require.Equal(t, 2, next())
	m = agentbus.NewMessage(agentbus.TypeDirect, "", []byte(`"again"`))
	m.Recipient = "worker"
	_, err = asker.Send(ctx, m)
	require.NoError(t, err)
	require.Equal(t, 1, next())
}
