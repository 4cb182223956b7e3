package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/store"
)

// TestDurableRegister: a durable agent's deliveries leave the store once
// credited; when its connection closes it stays, detached, and messages
// queue for it; the next connection that registers it gets what was not
// credited (marked redelivered) and what queued meanwhile, nothing
// dead-lettered.
func TestDurableRegister(t *testing.T) {
	st := store.NewMemory(0)
	e := newEnv(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}}, server.Config{})
	s, w := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w","window":8,"durable":true}`)
	var ids []string
	for i := range 3 {
		ids = append(ids, s.ok(fmt.Sprintf(`{"op":"send","message":{"recipient":"w","payload":%d}}`, i)).MessageID)
	}
	for range 3 {
		d := w.deliver()
		assert.False(t, d.Message.Redelivered)
	}
	w.write(`{"op":"credit","agent":"w","n":1}`) // the first was handled
	w.write(`{"op":"ping","id":"p"}`)
	require.Equal(t, protocol.OpPong, w.answer("p").Op)
	require.Eventually(t, func() bool { require.NoError(t, st.Commit()); return storedCount(t, st) == 2 },
		5*time.Second, time.Millisecond)
	require.NoError(t, w.c.Close())
	require.Eventually(t, func() bool { _, attached := e.bus.Durable("w"); return !attached }, 5*time.Second,
		time.Millisecond)
	ids = append(ids, s.ok(`{"op":"send","message":{"recipient":"w","payload":3}}`).MessageID)
	assert.Zero(t, e.bus.DeadLetters().Len(), "nothing dead-lettered for a durable agent's connection")

	w2 := e.hello()
	w2.ok(`{"op":"register","agent":"w","durable":true}`) // no window: settled once written
	got := map[string]bool{}
	for range 3 {
		d := w2.deliver()
		got[d.Message.ID] = d.Message.Redelivered
	}
	assert.Equal(t, map[string]bool{ids[1]: true, ids[2]: true, ids[3]: false}, got)
	require.Eventually(t, func() bool { require.NoError(t, st.Commit()); return storedCount(t, st) == 0 },
		5*time.Second, time.Millisecond)

	// A durable name attached to a live connection is not taken over.
	w3 := e.hello()
	w3.fails(`{"op":"register","agent":"w","durable":true}`, protocol.CodeAgentExists)
	w3.fails(`{"op":"register","agent":"w"}`, protocol.CodeAgentExists)
	// Unregistering ends the durable agent.
	w2.ok(`{"op":"unregister","agent":"w"}`)
	require.Eventually(t, func() bool { _, ok := e.bus.PID("w"); return !ok }, 5*time.Second, time.Millisecond)
}

func TestDurableRequiresAck(t *testing.T) {
	st := store.NewMemory(0)
	e := newEnv(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}}, server.Config{})
	s, w := e.hello(), e.hello()
	w.ok(`{"op":"register","agent":"w","window":4,"durable":true}`)
	id := s.ok(`{"op":"send","message":{"recipient":"w","requires_ack":true,"payload":1}}`).MessageID
	d := w.deliver()
	require.Equal(t, id, d.Message.ID)
	require.Equal(t, 1, storedCount(t, st))
	w.ok(fmt.Sprintf(`{"op":"ack","message_id":%q}`, id))
	require.Eventually(t, func() bool { require.NoError(t, st.Commit()); return storedCount(t, st) == 0 },
		5*time.Second, time.Millisecond)
}

func storedCount(t *testing.T, st store.Store) int {
	t.Helper()
	n := 0
	require.NoError(t, st.Scan("messages", func(_, _ []byte) error { n++; return nil }))
	return n
}
