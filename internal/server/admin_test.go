package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/internal/testutil"
	"github.com/descartes/agentbus/transport"
)

func TestDeadLetterGetAndPurge(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	p := e.hello()
	for i := range 3 {
		p.ok(fmt.Sprintf(`{"op":"publish","message":{"topic":"nobody.listens","payload":%d}}`, i))
	}
	require.Eventually(t, func() bool { return e.bus.DeadLetters().Len() == 3 }, 5*time.Second, time.Millisecond)
	seq := e.bus.DeadLetters().List(deadletter.Filter{})[1].Seq

	f := p.do(fmt.Sprintf(`{"op":"dead_letter","seq":%d}`, seq))
	require.Equal(t, protocol.OpDeadLetters, f.Op, f.Error)
	require.Len(t, f.Letters, 1)
	assert.Equal(t, seq, f.Letters[0].Seq)
	assert.Equal(t, "no_subscribers", f.Letters[0].Reason)
	assert.JSONEq(t, `1`, string(f.Letters[0].Message.Payload))
	p.fails(`{"op":"dead_letter","seq":999}`, protocol.CodeUnknownLetter)
	p.fails(`{"op":"dead_letter"}`, protocol.CodeInvalidFrame)

	assert.Equal(t, 3, p.ok(`{"op":"purge_dead_letters"}`).N)
	assert.Zero(t, e.bus.DeadLetters().Len())
	assert.Zero(t, p.ok(`{"op":"purge_dead_letters"}`).N, "nothing left")
	p.fails(fmt.Sprintf(`{"op":"dead_letter","seq":%d}`, seq), protocol.CodeUnknownLetter)
	assert.EqualValues(t, 3, e.bus.Stats().DeadLetters.ByReason[deadletter.NoSubscribers], "counts are kept")
}

func TestSubscribersCount(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	a, b := e.hello(), e.hello()
	a.ok(`{"op":"register","agent":"a"}`)
	b.ok(`{"op":"register","agent":"b"}`)
	assert.Zero(t, a.ok(`{"op":"subscribers","topic":"news.today"}`).N)
	a.ok(`{"op":"subscribe","topic":"news.>"}`)
	b.ok(`{"op":"subscribe","topic":"*.today"}`)
	assert.Equal(t, 2, a.ok(`{"op":"subscribers","topic":"news.today"}`).N)
	assert.Equal(t, 1, a.ok(`{"op":"subscribers","topic":"news.tomorrow"}`).N)
	a.fails(`{"op":"subscribers"}`, protocol.CodeInvalidFrame)
}

// A request whose requester gave up (its timeout passed) frees the remote
// agent at once: it gets its next message, a late response is
// dead-lettered as late_response, and a shutdown does not wait for the
// ack timeout.
func TestAbandonedRequestFreesAgent(t *testing.T) {
	e, stop := serveUntilStopped(t, server.Config{AckTimeout: time.Hour})
	bus := e.bus
	a, b := e.hello(), e.hello()
	a.ok(`{"op":"register","agent":"asker"}`)
	b.ok(`{"op":"register","agent":"silent"}`)
	a.write(`{"op":"request","id":"r1","timeout_ms":50,"message":{"recipient":"silent","payload":1}}`)
	req := b.deliver()
	r := a.answer("r1")
	require.Equal(t, protocol.CodeRequestTimeout, r.Code, r.Error)

	// Free again: the next message is delivered although no response came.
	a.ok(`{"op":"send","message":{"recipient":"silent","payload":2}}`)
	next := b.deliver()
	assert.JSONEq(t, `2`, string(next.Message.Payload))
	b.ok(fmt.Sprintf(`{"op":"respond","message":{"request_id":%q,"payload":"late"}}`, req.Message.RequestID))
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.LateResponse})) == 1
	}, 5*time.Second, time.Millisecond)

	// Another abandoned request, then a shutdown: it does not wait.
	a.write(`{"op":"request","id":"r2","timeout_ms":50,"message":{"recipient":"silent","payload":3}}`)
	b.deliver()
	require.Equal(t, protocol.CodeRequestTimeout, a.answer("r2").Code)
	require.NoError(t, stop(), "the shutdown drained: nothing waits on the abandoned request")
	acc := bus.Accounting()
	assert.Equal(t, acc.Accepted, acc.Handled+acc.DeadLettered, "%+v", acc)
}

// Each connection's lines are at Debug; at Info, a summary line a moment
// after the connections change, then at most one per SummaryInterval, and
// a last one at Close.
func TestSummaryLog(t *testing.T) {
	var buf testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e, stop := serveUntilStopped(t, server.Config{Logger: log, SummaryInterval: time.Hour})
	srv := e.srv

	a := e.hello()
	a.ok(`{"op":"register","agent":"a"}`)
	require.Eventually(t, func() bool {
		return strings.Contains(buf.String(), "msg=clients connections=1 ")
	}, 5*time.Second, time.Millisecond, buf.String())
	// Within the interval: these wait for the next line.
	for range 3 {
		require.NoError(t, e.hello().c.Close())
	}
	require.Eventually(t, func() bool { return srv.Conns() == 1 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, 1, strings.Count(buf.String(), "msg=clients "), buf.String())

	require.NoError(t, stop())
	out := buf.String()
	assert.Contains(t, out, "msg=clients connections=0 agents=0 connected=3 disconnected=4",
		"the line pending for an hour is logged at Close")
	assert.Equal(t, 2, strings.Count(out, "msg=clients "), out)
	for _, debug := range []string{"client connected", "client hello", "agent registered", "client disconnected"} {
		assert.NotContains(t, out, debug, "a connection's own lines are at debug")
	}
}

// serveUntilStopped is newEnv for a test that stops the daemon itself, as
// the daemon does: stop ends Serve, shuts the bus down, then closes the
// server, and returns the bus's Shutdown error. The cleanup stops it if the
// test did not.
func serveUntilStopped(t *testing.T, scfg server.Config) (e *env, stop func() error) {
	t.Helper()
	bus, err := agentbus.New(agentbus.Config{})
	require.NoError(t, err)
	scfg.Bus = bus
	srv, err := server.New(scfg)
	require.NoError(t, err)
	l := transport.NewMemoryListener(transport.MemoryOptions{MaxFrameSize: 4096})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	stopped := false
	stop = func() error {
		stopped = true
		cancel()
		require.NoError(t, <-done)
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		err := bus.Shutdown(sctx)
		require.NoError(t, srv.Close(sctx))
		require.NoError(t, l.Close())
		return err
	}
	t.Cleanup(func() {
		if !stopped {
			_ = stop()
		}
	})
	return &env{t: t, bus: bus, srv: srv, l: l}, stop
}
