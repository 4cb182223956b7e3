package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/server"
)

// at once bounds what "answers at once" may take on a loaded machine: far
// below the ack timeout and the daemon's stop timeout (5 s), which the
// old behaviour waited for.
const atOnce = 2 * time.Second

// Unregistering a busy agent answers at once, frees the name at once, and
// dead-letters what was queued or held for it as agent_stopped.
func TestUnregisterBusyAgent(t *testing.T) {
	tests := []struct {
		name     string
		register string
		send     func(p *peer, i int)
		queued   int // messages dead-lettered as agent_stopped
	}{
		{
			name:     "window full",
			register: `{"op":"register","agent":"w","window":1}`,
			send: func(p *peer, i int) {
				p.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"w","payload":%d}}`, i))
			},
			queued: 2, // one delivered (the client may still handle it), two queued
		},
		{
			name:     "unacked delivery",
			register: `{"op":"register","agent":"w"}`,
			send: func(p *peer, i int) {
				p.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"w","payload":%d,"requires_ack":true}}`, i))
			},
			queued: 3, // the one awaiting its ack, and the two queued behind it
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, agentbus.Config{}, server.Config{AckTimeout: time.Minute})
			w, s := e.hello(), e.hello()
			w.ok(tt.register)
			for i := range 3 {
				tt.send(s, i)
			}
			w.deliver()
			start := time.Now()
			w.ok(`{"op":"unregister","agent":"w"}`)
			assert.Less(t, time.Since(start), atOnce, "unregister answers at once")
			_, ok := e.bus.PID("w")
			assert.False(t, ok, "the name is gone")
			s.fails(`{"op":"send","message":{"recipient":"w","payload":9}}`, protocol.CodeNoRecipient)
			s.ok(`{"op":"register","agent":"w"}`)
			require.Eventually(t, func() bool {
				return len(e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.AgentStopped})) == tt.queued
			}, 5*time.Second, time.Millisecond)
			assert.Empty(t, e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.NoRecipient}))
		})
	}
}

// A request delivered to an agent that is unregistered before it answers
// fails at once for its requester, with agent_stopped.
func TestUnregisterFailsPendingRequest(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{AckTimeout: time.Minute})
	w, r := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w"}`)
	r.write(`{"op":"request","id":"q","message":{"recipient":"w","payload":1}}`)
	w.deliver()
	start := time.Now()
	w.ok(`{"op":"unregister","agent":"w"}`)
	f := r.answer("q")
	assert.Less(t, time.Since(start), atOnce)
	require.Equal(t, protocol.OpError, f.Op)
	assert.Equal(t, protocol.CodeAgentStopped, f.Code, f.Error)
	require.Eventually(t, func() bool {
		return len(e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.AgentStopped})) == 1
	}, 5*time.Second, time.Millisecond, "the request is dead-lettered as agent_stopped too")
	assert.Empty(t, e.bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.TransportClosed}))
}

// A ping is answered while sends of the same connection wait for room.
func TestPingNotHeldUpBySends(t *testing.T) {
	e := newEnv(t, agentbus.Config{MailboxSize: 1, Backpressure: agentbus.BackpressureConfig{Timeout: time.Minute}},
		server.Config{})
	w, s := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w","window":1}`)
	// One delivered, one in the mailbox, two waiting for room.
	for i := range 4 {
		s.write(fmt.Sprintf(`{"op":"send","id":"s%d","message":{"recipient":"w","payload":%d}}`, i, i))
	}
	w.deliver()
	start := time.Now()
	require.Equal(t, protocol.OpPong, s.do(`{"op":"ping"}`).Op)
	assert.Less(t, time.Since(start), atOnce)
	w.write(`{"op":"credit","agent":"w","n":1}`)
	for range 3 {
		w.deliver()
		w.write(`{"op":"credit","agent":"w","n":1}`)
	}
	for i := range 4 {
		assert.Equal(t, protocol.OpOK, s.answer(fmt.Sprint("s", i)).Op)
	}
}

// A windowed agent takes no more out of its mailbox than its window has
// room for, so what waits there keeps its priority order.
func TestWindowKeepsPriorityOrder(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	w, s := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w","window":1}`)
	s.ok(`{"op":"send","message":{"recipient":"w","payload":"blocker"}}`)
	require.Equal(t, `"blocker"`, string(w.deliver().Message.Payload))
	s.ok(`{"op":"send","message":{"recipient":"w","payload":"low","priority":0}}`)
	s.ok(`{"op":"send","message":{"recipient":"w","payload":"high","priority":100}}`)
	w.write(`{"op":"credit","agent":"w","n":1}`)
	assert.Equal(t, `"high"`, string(w.deliver().Message.Payload))
	w.write(`{"op":"credit","agent":"w","n":1}`)
	assert.Equal(t, `"low"`, string(w.deliver().Message.Payload))
}

// Every bad field value of a message is invalid_message, with an error
// that names the field and says it once.
func TestBadMessageFields(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{})
	p := e.hello()
	p.ok(`{"op":"register","agent":"me"}`)
	tests := []struct {
		name, message, mention string
	}{
		{"priority 101", `{"recipient":"me","payload":1,"priority":101}`, "priority"},
		{"priority 1000", `{"recipient":"me","payload":1,"priority":1000}`, "priority"},
		{"priority -1", `{"recipient":"me","payload":1,"priority":-1}`, "priority"},
		{"priority string", `{"recipient":"me","payload":1,"priority":"high"}`, "priority"},
		{"unknown type", `{"recipient":"me","payload":1,"type":"telegram"}`, "type"},
		{"empty type", `{"recipient":"me","payload":1,"type":""}`, "type"},
		{"recipient number", `{"recipient":7,"payload":1}`, "recipient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := p.do(`{"op":"send","message":` + tt.message + `}`)
			require.Equal(t, protocol.OpError, f.Op)
			assert.Equal(t, protocol.CodeInvalidMessage, f.Code, f.Error)
			assert.Contains(t, f.Error, tt.mention)
			assert.NotContains(t, f.Error, "wireMessage")
			assert.Equal(t, 1, strings.Count(f.Error, "invalid message"), f.Error)
		})
	}
}

// Empty lists are sent as [], a negative limit is refused, and a request
// whose agent never answers fails with ack_timeout.
func TestAnswersAsDocumented(t *testing.T) {
	e := newEnv(t, agentbus.Config{}, server.Config{AckTimeout: 50 * time.Millisecond})
	p := e.hello()
	raw := func(op string) string {
		p.write(`{"op":"` + op + `","id":"x"}`)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		data, err := p.c.Recv(ctx)
		require.NoError(t, err)
		return string(data)
	}
	assert.Contains(t, raw("dead_letters"), `"letters":[]`)
	assert.Contains(t, raw("history"), `"messages":[]`)
	p.fails(`{"op":"dead_letters","limit":-1}`, protocol.CodeInvalidFrame)
	p.fails(`{"op":"history","limit":-1}`, protocol.CodeInvalidFrame)
	p.fails(`{"op":"register","agent":""}`, protocol.CodeInvalidAgent)

	w := e.hello()
	w.ok(`{"op":"register","agent":"w"}`)
	p.write(`{"op":"request","id":"q","message":{"recipient":"w","payload":1}}`)
	w.deliver() // and never answered
	f := p.answer("q")
	require.Equal(t, protocol.OpError, f.Op)
	assert.Equal(t, protocol.CodeAckTimeout, f.Code, f.Error)
}
