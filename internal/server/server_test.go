package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a bus served over an in-memory listener.
type env struct {
	t   *testing.T
	bus *agentbus.Bus
	srv *server.Server
	l   *transport.MemoryListener
}

func newEnv(t *testing.T, cfg agentbus.Config, scfg server.Config) *env {
	t.Helper()
	l := transport.NewMemoryListener(transport.MemoryOptions{MaxFrameSize: 4096})
	bus, srv := serve(t, cfg, scfg, l)
	return &env{t: t, bus: bus, srv: srv, l: l}
}

// peer is a raw protocol client: it writes frames and reads them one by one.
type peer struct {
	t    *testing.T
	c    transport.Conn
	n    int
	seen []*protocol.Frame // frames read while waiting for another
}

func (e *env) dial() *peer {
	e.t.Helper()
	c, err := e.l.Dial(context.Background())
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = c.Close() })
	return &peer{t: e.t, c: c}
}

// hello dials and says hello.
func (e *env) hello() *peer {
	p := e.dial()
	f := p.do(`{"op":"hello","version":1,"client":"test"}`)
	require.Equal(e.t, protocol.OpWelcome, f.Op)
	return p
}

func (p *peer) write(raw string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(p.t, p.c.Send(ctx, []byte(raw)))
}

// read returns the next frame, first from those set aside.
func (p *peer) read() *protocol.Frame {
	p.t.Helper()
	if len(p.seen) > 0 {
		f := p.seen[0]
		p.seen = p.seen[1:]
		return f
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	data, err := p.c.Recv(ctx)
	require.NoError(p.t, err)
	f, err := protocol.Decode(data)
	require.NoError(p.t, err, string(data))
	return f
}

// answer reads until the frame answering id, setting others aside.
func (p *peer) answer(id string) *protocol.Frame {
	p.t.Helper()
	for i, f := range p.seen {
		if f.ID == id && f.Op != protocol.OpDeliver {
			p.seen = append(p.seen[:i:i], p.seen[i+1:]...)
			return f
		}
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		data, err := p.c.Recv(ctx)
		cancel()
		require.NoError(p.t, err)
		f, err := protocol.Decode(data)
		require.NoError(p.t, err)
		if f.ID == id && f.Op != protocol.OpDeliver {
			return f
		}
		p.seen = append(p.seen, f)
	}
}

// deliver reads until a deliver frame, setting others aside.
func (p *peer) deliver() *protocol.Frame {
	p.t.Helper()
	for i, f := range p.seen {
		if f.Op == protocol.OpDeliver {
			p.seen = append(p.seen[:i:i], p.seen[i+1:]...)
			return f
		}
	}
	for {
		f := p.read()
		if f.Op == protocol.OpDeliver {
			return f
		}
		p.seen = append(p.seen, f)
	}
}

// do writes an operation (adding an id) and returns its answer.
func (p *peer) do(raw string) *protocol.Frame {
	p.t.Helper()
	p.n++
	id := fmt.Sprintf("t%d", p.n)
	p.write(strings.Replace(raw, "{", fmt.Sprintf(`{"id":%q,`, id), 1))
	return p.answer(id)
}

func (p *peer) ok(raw string) *protocol.Frame {
	p.t.Helper()
	f := p.do(raw)
	require.Equal(p.t, protocol.OpOK, f.Op, "%s: %s %s", raw, f.Code, f.Error)
	return f
}

func (p *peer) fails(raw, code string) {
	p.t.Helper()
	f := p.do(raw)
	require.Equal(p.t, protocol.OpError, f.Op, raw)
	require.Equal(p.t, code, f.Code, "%s: %s", raw, f.Error)
	require.NotEmpty(p.t, f.Error)
}

func TestHello(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{Name: "agentbus/test", MaxFrameSize: 4096})
	p := e.dial()
	p.fails(`{"op":"register","agent":"x"}`, protocol.CodeHelloRequired)
	require.Equal(t, protocol.OpPong, p.do(`{"op":"ping"}`).Op, "ping works before hello")
	p.fails(`{"op":"hello","version":3}`, protocol.CodeUnsupportedVersion)
	p.fails(`{"op":"hello"}`, protocol.CodeUnsupportedVersion)
	w := p.do(`{"op":"hello","version":1,"client":"me"}`)
	require.Equal(t, protocol.OpWelcome, w.Op)
	assert.Equal(t, 1, w.Version)
	assert.Equal(t, "agentbus/test", w.Server)
	assert.Equal(t, 4096, w.MaxFrame)
	p.fails(`{"op":"hello","version":1}`, protocol.CodeInvalidFrame) // one hello per connection
	p.ok(`{"op":"register","agent":"x"}`)

	v2 := e.dial().do(`{"op":"hello","version":2}`)
	require.Equal(t, protocol.OpWelcome, v2.Op)
	assert.Equal(t, 2, v2.Version)
}

func TestDirectAndSpoofing(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	a, b := e.hello(), e.hello()
	a.ok(`{"op":"register","agent":"alice"}`)
	b.ok(`{"op":"register","agent":"bob"}`)
	a.fails(`{"op":"register","agent":"bob"}`, protocol.CodeAgentExists)
	a.fails(`{"op":"register","agent":"$sys"}`, protocol.CodeInvalidAgent)

	ok := a.ok(`{"op":"send","message":{"recipient":"bob","payload":{"n":1},"priority":70}}`)
	require.NotEmpty(t, ok.MessageID)
	d := b.deliver()
	assert.Equal(t, "bob", d.Agent)
	assert.Equal(t, ok.MessageID, d.Message.ID)
	assert.Equal(t, "alice", d.Message.Sender, "the only agent of the connection is stamped as sender")
	assert.Equal(t, agentbus.TypeDirect, d.Message.Type)
	assert.JSONEq(t, `{"n":1}`, string(d.Message.Payload))
	assert.EqualValues(t, 70, d.Message.Priority)

	// A client cannot send as an agent it did not register.
	a.fails(`{"op":"send","message":{"sender":"bob","recipient":"bob","payload":1}}`, protocol.CodeNotRegistered)
	a.fails(`{"op":"send","message":{"recipient":"nobody"}}`, protocol.CodeNoRecipient)
	a.fails(`{"op":"send","message":{"recipient":"bob","priority":101}}`, protocol.CodeInvalidMessage)
	a.fails(`{"op":"send","message":{"type":"response","request_id":"x"}}`, protocol.CodeInvalidFrame)
	a.fails(`{"op":"unregister","agent":"bob"}`, protocol.CodeNotRegistered)
	b.ok(`{"op":"unregister","agent":"bob"}`)
	a.fails(`{"op":"send","message":{"recipient":"bob"}}`, protocol.CodeNoRecipient)
	a.ok(`{"op":"register","agent":"bob"}`) // the name is free again
}

func TestRequestRespond(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	a, b := e.hello(), e.hello()
	a.ok(`{"op":"register","agent":"asker"}`)
	b.ok(`{"op":"register","agent":"worker"}`)
	a.write(`{"op":"request","id":"r1","timeout_ms":5000,"message":{"recipient":"worker","payload":{"q":2}}}`)
	d := b.deliver()
	require.Equal(t, agentbus.TypeRequest, d.Message.Type)
	require.Equal(t, "asker", d.Message.Sender)
	b.ok(fmt.Sprintf(`{"op":"respond","message":{"request_id":%q,"payload":{"a":4}}}`, d.Message.RequestID))
	r := a.answer("r1")
	require.Equal(t, protocol.OpResponse, r.Op, r.Error)
	assert.JSONEq(t, `{"a":4}`, string(r.Message.Payload))
	assert.Equal(t, "worker", r.Message.Sender)

	// A request nobody answers in time.
	a.write(`{"op":"request","id":"r2","timeout_ms":50,"message":{"recipient":"worker","payload":{}}}`)
	b.deliver()
	r = a.answer("r2")
	require.Equal(t, protocol.OpError, r.Op)
	assert.Equal(t, protocol.CodeRequestTimeout, r.Code)
}

func TestDisconnectMidRequest(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	a, b := e.hello(), e.hello()
	a.ok(`{"op":"register","agent":"asker"}`)
	b.ok(`{"op":"register","agent":"worker"}`)
	a.write(`{"op":"request","id":"r1","message":{"recipient":"worker","payload":{}}}`)
	b.deliver()
	start := time.Now()
	require.NoError(t, b.c.Close()) // the worker goes away without answering
	r := a.answer("r1")
	require.Equal(t, protocol.OpError, r.Op)
	assert.Equal(t, protocol.CodeTransportClosed, r.Code, r.Error)
	assert.Less(t, time.Since(start), 5*time.Second, "the requester learns at once, not at its timeout")
	require.Eventually(t, func() bool { _, ok := e.bus.PID("worker"); return !ok }, 5*time.Second, time.Millisecond)
	letters := e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.TransportClosed})
	require.Len(t, letters, 1)
	assert.Equal(t, "worker", letters[0].Agent)
}

func TestPubSub(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	pub, sub := e.hello(), e.hello()
	pub.ok(`{"op":"register","agent":"builder"}`)
	sub.ok(`{"op":"register","agent":"monitor"}`)
	sub.ok(`{"op":"subscribe","topic":"progress.>"}`)
	sub.fails(`{"op":"subscribe","topic":"bad..subject"}`, protocol.CodeInvalidSubject)
	sub.fails(`{"op":"subscribe","agent":"builder","topic":"x"}`, protocol.CodeNotRegistered)
	sub.fails(`{"op":"subscribe"}`, protocol.CodeInvalidFrame)
	pub.ok(`{"op":"publish","message":{"topic":"progress.build","payload":{"done":50}}}`)
	d := sub.deliver()
	assert.Equal(t, "progress.build", d.Message.Topic)
	assert.Equal(t, "builder", d.Message.Sender)
	assert.Equal(t, agentbus.TypePublish, d.Message.Type)
	sub.ok(`{"op":"unsubscribe","topic":"progress.>"}`)
	sub.fails(`{"op":"unsubscribe","topic":"progress.>"}`, protocol.CodeNotSubscribed)
	require.Empty(t, e.bus.Subscribers("progress.build"))
}

func TestBadFrames(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	p := e.hello()
	for _, tc := range []struct{ name, raw, code string }{
		{"not json", `not json`, protocol.CodeInvalidFrame},
		{"not an object", `[1,2]`, protocol.CodeInvalidFrame},
		{"no op", `{"limit":1}`, protocol.CodeInvalidFrame},
		{"wrong type", `{"op":5}`, protocol.CodeInvalidFrame},
		{"wrong field type", `{"op":"send","message":"text"}`, protocol.CodeInvalidFrame},
		{"unknown op", `{"op":"teleport"}`, protocol.CodeUnknownOp},
		{"send without message", `{"op":"send"}`, protocol.CodeInvalidFrame},
		{"register without agent", `{"op":"register"}`, protocol.CodeInvalidAgent},
		{"ack without id", `{"op":"ack"}`, protocol.CodeInvalidFrame},
		{"ack not pending", `{"op":"ack","message_id":"m"}`, protocol.CodeNotPending},
		{"replay without seq", `{"op":"replay"}`, protocol.CodeInvalidFrame},
		{"replay unknown", `{"op":"replay","seq":99}`, protocol.CodeUnknownLetter},
		{"bad reason", `{"op":"dead_letters","reason":"bored"}`, protocol.CodeInvalidFrame},
		{"bad history type", `{"op":"history","type":"telegram"}`, protocol.CodeInvalidFrame},
		{"negative timeout", `{"op":"request","timeout_ms":-1,"message":{"recipient":"x"}}`, protocol.CodeInvalidFrame},
		{"payload not json", `{"op":"send","message":{"recipient":"x","payload":"\u0000"}}`, protocol.CodeNoRecipient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.t = t
			var f *protocol.Frame
			if strings.HasPrefix(tc.raw, "{") {
				f = p.do(tc.raw)
			} else { // not an object: the answer has no id
				p.write(tc.raw)
				f = p.read()
			}
			require.Equal(t, protocol.OpError, f.Op)
			assert.Equal(t, tc.code, f.Code, f.Error)
		})
	}
	p.t = t
	// Invalid UTF-8, and an oversized frame (the transport skips it).
	p.write("{\"op\":\"ping\",\"id\":\"\xff\"}")
	f := p.read()
	assert.Equal(t, protocol.CodeInvalidFrame, f.Code)
	assert.Contains(t, f.Error, "UTF-8")
	require.Equal(t, protocol.OpPong, p.do(`{"op":"ping"}`).Op, "the connection is still served")
}

func TestOversizedFrame(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	// A Unix socket lets a peer write any line; the in-memory transport
	// refuses on Send, so test the daemon's answer with a real socket.
	dir := shortDir(t)
	l, err := transport.ListenUnix(dir+"/s", transport.UnixOptions{MaxFrameSize: 1024})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, l) }()
	defer func() { cancel(); require.NoError(t, <-done); require.NoError(t, l.Close()) }()
	c, err := transport.DialUnix(context.Background(), dir+"/s", transport.UnixOptions{MaxFrameSize: 1 << 20})
	require.NoError(t, err)
	p := &peer{t: t, c: c}
	defer c.Close()
	p.do(`{"op":"hello","version":1}`)
	p.write(`{"op":"ping","pad":"` + strings.Repeat("x", 4000) + `"}`)
	f := p.read()
	assert.Equal(t, protocol.CodeFrameTooLarge, f.Code)
	require.Equal(t, protocol.OpPong, p.do(`{"op":"ping"}`).Op)
}

func TestGarbageFloodClosesOnlyThatConnection(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{MaxBadFrames: 5})
	good := e.hello()
	good.ok(`{"op":"register","agent":"good"}`)
	bad := e.dial()
	for range 5 {
		bad.write("garbage")
	}
	// The fifth bad frame in a row is answered, then too_many_errors.
	for range 5 {
		assert.Equal(t, protocol.CodeInvalidFrame, bad.read().Code)
	}
	assert.Equal(t, protocol.CodeTooManyErrors, bad.read().Code)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := bad.c.Recv(ctx)
	require.ErrorIs(t, err, transport.ErrPeerClosed)
	require.Equal(t, protocol.OpPong, good.do(`{"op":"ping"}`).Op)
	require.Eventually(t, func() bool { return e.srv.Conns() == 1 }, 5*time.Second, time.Millisecond)
}

func TestDisconnectDeadLettersQueued(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{OutboundQueue: 1})
	sender, slow := e.hello(), e.hello()
	slow.ok(`{"op":"register","agent":"slow"}`)
	// slow never reads: the memory transport's buffer, the outbound
	// queue and the handler fill, then the mailbox queues the rest.
	const n = 200
	for i := range n {
		sender.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"slow","payload":%d}}`, i))
	}
	require.NoError(t, slow.c.Close())
	require.Eventually(t, func() bool { _, ok := e.bus.PID("slow"); return !ok }, 5*time.Second, time.Millisecond)
	// Every message is accounted for: read by the client before it
	// closed (none here, it never read), buffered in the transport, or
	// dead-lettered as transport_closed.
	require.Eventually(t, func() bool {
		return e.bus.DeadLetters().Counts()[deadletter.TransportClosed] > n-transport.DefaultMemoryBuffer-3
	}, 5*time.Second, time.Millisecond)
}

func TestRequiresAck(t *testing.T) {
	e := newEnv(t, agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 2, Backoff: time.Millisecond}},
		server.Config{})
	a, w := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w"}`)
	id := a.ok(`{"op":"send","message":{"recipient":"w","requires_ack":true,"payload":1}}`).MessageID
	d := w.deliver()
	require.True(t, d.Message.RequiresAck)
	assert.Equal(t, 1, d.Message.Attempts)
	w.ok(fmt.Sprintf(`{"op":"nack","message_id":%q,"error":"busy"}`, id))
	d = w.deliver() // redelivered
	assert.Equal(t, 2, d.Message.Attempts)
	w.ok(fmt.Sprintf(`{"op":"ack","message_id":%q}`, id))
	w.fails(fmt.Sprintf(`{"op":"ack","message_id":%q}`, id), protocol.CodeNotPending)
	require.Eventually(t, func() bool { return e.bus.Accounting().Balanced() }, 5*time.Second, time.Millisecond)
	assert.Empty(t, e.bus.DeadLetters().List(deadletter.Filter{}))
}

func TestAckTimeoutRetriesThenDeadLetters(t *testing.T) {
	e := newEnv(t, agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 2, Backoff: time.Millisecond}},
		server.Config{AckTimeout: 20 * time.Millisecond})
	a, w := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w"}`)
	a.ok(`{"op":"send","message":{"recipient":"w","requires_ack":true,"payload":1}}`)
	w.deliver()
	w.deliver() // never acked: redelivered once, then dead-lettered
	require.Eventually(t, func() bool {
		return len(e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.RetriesExhausted})) == 1
	}, 5*time.Second, time.Millisecond)
}

func TestInspection(t *testing.T) {
	e := newEnv(t, agentbus.Config{EnableHistory: true}, server.Config{MaxList: 2})
	p := e.hello()
	p.ok(`{"op":"register","agent":"me"}`)
	for i := range 3 {
		p.ok(fmt.Sprintf(`{"op":"publish","message":{"topic":"nobody.listens","payload":%d}}`, i))
	}
	require.Eventually(t, func() bool {
		return len(e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.NoSubscribers})) == 3
	}, 5*time.Second, time.Millisecond)
	f := p.do(`{"op":"dead_letters","reason":"no_subscribers","limit":100}`)
	require.Equal(t, protocol.OpDeadLetters, f.Op)
	require.Len(t, f.Letters, 2, "capped by MaxList, newest kept")
	assert.Equal(t, "no_subscribers", f.Letters[0].Reason)
	assert.JSONEq(t, `2`, string(f.Letters[1].Message.Payload))

	h := p.do(`{"op":"history","topic":"nobody.>","type":"publish"}`)
	require.Equal(t, protocol.OpHistory, h.Op)
	require.Len(t, h.Messages, 2)
	assert.JSONEq(t, `2`, string(h.Messages[0].Payload), "newest first")

	// Replay a letter to an agent of ours.
	r := p.ok(fmt.Sprintf(`{"op":"replay","seq":%d,"to":"me"}`, f.Letters[0].Seq))
	d := p.deliver()
	assert.Equal(t, r.MessageID, d.Message.ID)

	s := p.do(`{"op":"stats"}`)
	require.Equal(t, protocol.OpStats, s.Op)
	var st map[string]any
	require.NoError(t, json.Unmarshal(s.Stats, &st))
	assert.NotEmpty(t, st)
}

func TestTopics(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{MaxList: 2})
	p := e.hello()
	f := p.do(`{"op":"topics"}`)
	require.Equal(t, protocol.OpTopics, f.Op)
	assert.Empty(t, f.Topics, "no subscriptions yet")

	p.ok(`{"op":"register","agent":"a"}`)
	p.ok(`{"op":"register","agent":"b"}`)
	p.ok(`{"op":"subscribe","agent":"a","topic":"jobs.>"}`)
	p.ok(`{"op":"subscribe","agent":"b","topic":"jobs.>"}`)
	p.ok(`{"op":"subscribe","agent":"b","topic":"alerts"}`)
	p.ok(`{"op":"subscribe","agent":"a","topic":"zeta"}`)
	f = p.do(`{"op":"topics","limit":10}`)
	require.Equal(t, protocol.OpTopics, f.Op)
	assert.Equal(t, []protocol.TopicInfo{
		{Topic: "alerts", Subscribers: []string{"b"}},
		{Topic: "jobs.>", Subscribers: []string{"a", "b"}},
	}, f.Topics, "sorted, capped by MaxList")
}

func TestManyConnections(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	const n = 20
	var wg sync.WaitGroup
	hub := e.hello()
	hub.ok(`{"op":"register","agent":"hub"}`)
	for i := range n {
		p := e.hello()
		wg.Go(func() {
			p.ok(fmt.Sprintf(`{"op":"register","agent":"c%d"}`, i))
			p.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"hub","payload":%d}}`, i))
		})
	}
	wg.Wait()
	got := map[string]bool{}
	for range n {
		got[hub.deliver().Message.Sender] = true
	}
	assert.Len(t, got, n)
}

func TestConfig(t *testing.T) {
	_, err := server.New(server.Config{})
	require.ErrorIs(t, err, server.ErrInvalidConfig)
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	defer func() { require.NoError(t, bus.Shutdown(context.Background())) }()
	_, err = server.New(server.Config{Bus: bus, OutboundQueue: -1})
	require.ErrorIs(t, err, server.ErrInvalidConfig)
}

func TestTooMany(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{MaxAgents: 1, MaxRequests: 1})
	p, w := e.hello(), e.hello()
	p.ok(`{"op":"register","agent":"one"}`)
	p.fails(`{"op":"register","agent":"two"}`, protocol.CodeTooManyAgents)
	w.ok(`{"op":"register","agent":"w"}`)
	p.write(`{"op":"request","id":"r1","message":{"recipient":"w"}}`)
	w.deliver()
	p.fails(`{"op":"request","message":{"recipient":"w"}}`, protocol.CodeTooManyRequests)
}

func TestWindow(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	s, w := e.hello(), e.hello()
	w.fails(`{"op":"register","agent":"w","window":-1}`, protocol.CodeInvalidFrame)
	w.ok(`{"op":"register","agent":"w","window":2}`)
	w.fails(`{"op":"credit","agent":"w"}`, protocol.CodeInvalidFrame)
	for i := range 3 {
		s.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"w","payload":%d}}`, i))
	}
	assert.JSONEq(t, `0`, string(w.deliver().Message.Payload))
	assert.JSONEq(t, `1`, string(w.deliver().Message.Payload))
	// The third waits for credit: the forwarder holds it.
	pid, ok := e.bus.PID("w")
	require.True(t, ok)
	require.NotNil(t, pid)
	w.write(`{"op":"ping","id":"p"}`)
	require.Equal(t, protocol.OpPong, w.answer("p").Op)
	require.Empty(t, w.seen, "no delivery beyond the window")
	w.write(`{"op":"credit","agent":"w","n":1}`)
	assert.JSONEq(t, `2`, string(w.deliver().Message.Payload))
	// Too much credit is harmless; an agent without a window refuses it.
	w.write(`{"op":"credit","agent":"w","n":100}`)
	w.ok(`{"op":"register","agent":"v"}`)
	w.fails(`{"op":"credit","agent":"v","n":1}`, protocol.CodeInvalidFrame)
}

func TestMaxConns(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{MaxConns: 1})
	first := e.hello()
	second := e.dial()
	f := second.read()
	assert.Equal(t, protocol.CodeTooManyConnections, f.Code, f.Error)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := second.c.Recv(ctx)
	require.ErrorIs(t, err, transport.ErrPeerClosed)
	require.Equal(t, protocol.OpPong, first.do(`{"op":"ping"}`).Op, "the first is still served")
	_, err = server.New(server.Config{Bus: e.bus, MaxConns: -1})
	require.ErrorIs(t, err, server.ErrInvalidConfig)
}

// A windowed client that disconnects: the deliveries it never credited are
// dead-lettered; the credited ones are not.
func TestUncreditedDeliveriesDeadLettered(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	s, w := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w","window":8}`)
	for i := range 3 {
		s.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"w","payload":%d}}`, i))
	}
	for range 3 {
		w.deliver()
	}
	w.write(`{"op":"credit","agent":"w","n":1}`) // the first was handled
	w.write(`{"op":"ping","id":"p"}`)
	require.Equal(t, protocol.OpPong, w.answer("p").Op) // the credit is in
	require.NoError(t, w.c.Close())
	require.Eventually(t, func() bool {
		return len(e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.TransportClosed})) == 2
	}, 5*time.Second, time.Millisecond)
	for i, l := range e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.TransportClosed}) {
		assert.JSONEq(t, fmt.Sprint(i+1), string(l.Message.Payload))
		assert.Equal(t, "w", l.Agent)
	}
}

// pipeline writes n frames without waiting (pings and sends to the peer's
// own agent "me", in turn), then reads every answer and delivery: answers
// come in the order of their operations, deliveries in the order sent,
// also when the daemon writes several at once.
func pipeline(t *testing.T, c transport.Conn, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	frames := make([][]byte, n)
	for i := range frames {
		if i%2 == 0 {
			frames[i] = fmt.Appendf(nil, `{"op":"ping","id":"%d"}`, i)
		} else {
			frames[i] = fmt.Appendf(nil, `{"op":"send","id":"%d","message":{"recipient":"me","payload":%d}}`, i, i)
		}
	}
	// All of them in one write where the transport can, so that the daemon
	// reads them together.
	sent, err := transport.SendBatch(ctx, c, frames)
	require.NoError(t, err)
	require.Equal(t, n, sent)
	// Pings are answered as they are read, sends once carried out, in
	// order: each kind of answer comes in order, the two kinds interleaved
	// as they happen to be.
	pong, ok, delivered := 0, 1, 1
	for pong < n || ok < n || delivered < n {
		data, err := c.Recv(ctx)
		require.NoError(t, err)
		f, err := protocol.Decode(data)
		require.NoError(t, err)
		switch f.Op {
		case protocol.OpDeliver:
			require.Equal(t, fmt.Sprint(delivered), string(f.Message.Payload))
			delivered += 2
		case protocol.OpPong:
			require.Equal(t, fmt.Sprint(pong), f.ID)
			pong += 2
		case protocol.OpOK:
			require.Equal(t, fmt.Sprint(ok), f.ID)
			ok += 2
		default:
			t.Fatalf("unexpected %s", data)
		}
	}
}

func TestPipelinedOperations(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	p := e.hello()
	p.ok(`{"op":"register","agent":"me"}`)
	pipeline(t, p.c, 40) // 40 frames, 60 back: within the memory transport's 64
}

func TestPipelinedOperationsOverUnixSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "p.sock")
	l, err := transport.ListenUnix(path, transport.UnixOptions{})
	require.NoError(t, err)
	serve(t, agentbus.Config{}, server.Config{}, l)
	ctx := context.Background()
	c, err := transport.DialUnix(ctx, path, transport.UnixOptions{})
	require.NoError(t, err)
	defer c.Close()
	for _, f := range []string{`{"op":"hello","id":"h","version":1}`, `{"op":"register","id":"r","agent":"me"}`} {
		require.NoError(t, c.Send(ctx, []byte(f)))
		data, err := c.Recv(ctx)
		require.NoError(t, err)
		fr, err := protocol.Decode(data)
		require.NoError(t, err)
		require.NotEqual(t, protocol.OpError, fr.Op, fr.Error)
	}
	// More than the outbound queue, and answers that the daemon writes
	// while deliveries queue up for the same connection.
	pipeline(t, c, 400)
}

func TestDisconnectDeadLettersEachDeliveryOnce(t *testing.T) {
	// A windowed agent whose client never reads: its deliveries sit in the
	// transport (written, never credited), in the outbound queue (never
	// written), in its handler and in its mailbox. When the client goes,
	// each of them is dead-lettered, and only once.
	e := newEnv(t, agentbus.Config{}, server.Config{OutboundQueue: 8})
	s, w := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w","window":1000}`)
	const n = 120
	for i := range n {
		s.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"w","payload":%d}}`, i))
	}
	require.NoError(t, w.c.Close())
	require.Eventually(t, func() bool { return e.bus.DeadLetters().Len() >= n }, 5*time.Second, time.Millisecond)
	seen := map[string]int{}
	for _, l := range e.bus.DeadLetters().List(deadletter.Filter{Limit: 2 * n}) {
		require.NotNil(t, l.Message, "%+v", l)
		seen[string(l.Message.Payload)]++
	}
	for i := range n {
		assert.Equal(t, 1, seen[fmt.Sprint(i)], "message %d", i)
	}
	require.Eventually(t, func() bool { return e.bus.Accounting().Balanced() }, 5*time.Second, time.Millisecond)
}
