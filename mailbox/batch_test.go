package mailbox

import (
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The agent takes messages of one level in batches; a more urgent message
// posted while it works through a batch is still delivered next.
func TestUrgentMessagePreemptsBatch(t *testing.T) {
	inv := &invoker{user: make(chan any, 16), gate: make(chan struct{}, 16)}
	m, drops := newTestMailbox(Config{Capacity: 16}, actor.NewDefaultDispatcher(10), inv)
	a := named("a", 10)
	require.NoError(t, m.TryPost(a))
	require.Equal(t, a, <-inv.user) // the agent is inside a; the queue is empty
	b, c, d := named("b", 10), named("c", 10), named("d", 10)
	for _, it := range []*item{b, c, d} {
		require.NoError(t, m.TryPost(it))
	}
	inv.gate <- struct{}{}          // a returns; the agent takes b, c, d as one batch
	require.Equal(t, b, <-inv.user) // inside b, with c and d in its batch
	x := named("x", 90)
	require.NoError(t, m.TryPost(x))
	assert.Equal(t, 3, m.Len(), "batched messages still count as queued")
	for range 4 {
		inv.gate <- struct{}{}
	}
	assert.Equal(t, []any{x, c, d}, receive(t, inv.user, 3))
	assert.Empty(t, drops.all())
}

// Closing a mailbox drops what the agent had batched, even when the agent is
// suspended (as after a failure) and will never run again.
func TestCloseDropsBatchWhileSuspended(t *testing.T) {
	inv := &invoker{user: make(chan any, 16), gate: make(chan struct{}, 16)}
	m, drops := newTestMailbox(Config{Capacity: 16}, actor.NewDefaultDispatcher(10), inv)
	a := named("a", 10)
	require.NoError(t, m.TryPost(a))
	require.Equal(t, a, <-inv.user)
	b, c, d := named("b", 10), named("c", 10), named("d", 10)
	for _, it := range []*item{b, c, d} {
		require.NoError(t, m.TryPost(it))
	}
	inv.gate <- struct{}{}
	require.Equal(t, b, <-inv.user) // inside b, with c and d batched
	m.PostSystemMessage(suspend)    // served after b, before c
	inv.gate <- struct{}{}
	require.Eventually(t, m.suspended.Load, 5*time.Second, time.Millisecond)

	stopped := errors.New("stopped")
	m.Close(stopped)
	require.Eventually(t, func() bool { return len(drops.all()) == 2 }, 5*time.Second, time.Millisecond)
	for i, dr := range drops.all() {
		assert.Equal(t, []any{c, d}[i], dr.msg)
		assert.ErrorIs(t, dr.reason, stopped)
	}
	assert.Zero(t, m.Len())
	assert.Equal(t, []any{a, b}, inv.delivered())
}

// CloseFromActor, called by the actor itself, drops its batch before it
// returns.
func TestCloseFromActorDropsBatchAtOnce(t *testing.T) {
	inv := &invoker{user: make(chan any, 16)}
	var m *Mailbox
	stopped := errors.New("stopped")
	inv.onUser = func(msg any) {
		if msg.(*item).name == "b" {
			m.CloseFromActor(stopped) // as an agent's Stopped hook does
		}
	}
	m, drops := newTestMailbox(Config{Capacity: 16}, actor.NewSynchronizedDispatcher(10), inv)
	m.PostSystemMessage(suspend)
	a, b, c, d := named("a", 10), named("b", 10), named("c", 10), named("d", 10)
	for _, it := range []*item{a, b, c, d} {
		require.NoError(t, m.TryPost(it))
	}
	m.PostSystemMessage(resume) // delivers a, then b, which closes the mailbox
	assert.Equal(t, []any{a, b}, inv.delivered())
	var dropped []any
	for _, dr := range drops.all() {
		dropped = append(dropped, dr.msg)
		assert.ErrorIs(t, dr.reason, stopped)
	}
	assert.Equal(t, []any{c, d}, dropped)
	assert.Zero(t, m.Len())
}

// An agent that keeps up takes its batch straight from the inbox. If a more
// urgent message follows that batch in the inbox, the batch goes back and the
// urgent one is delivered first, TTLs and all.
func TestInboxBatchOutranked(t *testing.T) {
	m, inv, drops := newSuspended(Config{Capacity: 16})
	l1 := &item{name: "l1", prio: 10, deadline: time.Now().Add(time.Hour)}
	l2, x, l3 := named("l2", 10), named("x", 90), named("l3", 10)
	for _, it := range []*item{l1, l2, x, l3} {
		require.NoError(t, m.TryPost(it))
	}
	in := m.in.Load() // held: the agent releases it once it is empty
	m.PostSystemMessage(resume)
	assert.Equal(t, []any{x, l1, l2, l3}, inv.delivered())
	assert.Empty(t, drops.all())
	m.mu.Lock()
	assert.Zero(t, in.ttlQueued, "l1's deadline was counted back out")
	m.mu.Unlock()
}
