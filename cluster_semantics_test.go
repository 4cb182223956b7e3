package agentbus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// holdGate is a handler that records what it handles, after blocking the first
// message until released.
type holdGate struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	got     []*agentbus.Message
	fail    int // fail this many first attempts
}

func newHoldGate() *holdGate {
	return &holdGate{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *holdGate) Handle(_ context.Context, m *agentbus.Message) error {
	first := false
	g.once.Do(func() { first = true; close(g.started) })
	if first {
		<-g.release
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail > 0 {
		g.fail--
		return errors.New("not yet")
	}
	g.got = append(g.got, m)
	return nil
}

func (g *holdGate) handled() []*agentbus.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]*agentbus.Message(nil), g.got...)
}

func queued(b *agentbus.Bus, agent string) int {
	for _, a := range b.Stats().Agents {
		if a.Name == agent {
			return a.Queued
		}
	}
	return -1
}

// TestClusterPriorityEndToEnd: messages that wait in a remote agent's
// mailbox are handled by priority, FIFO within a level, as locally.
func TestClusterPriorityEndToEnd(t *testing.T) {
	buses := newCluster(t, 2, nil, nil)
	a, b := buses[0], buses[1]
	g := newHoldGate()
	_, err := b.Spawn("prio", g)
	require.NoError(t, err)
	seen(t, buses, "prio", b)
	send := func(payload string, prio uint8) {
		_, err := a.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(payload)).
			WithRecipient("prio").WithPriority(prio))
		require.NoError(t, err)
	}
	send(`"first"`, 50)
	<-g.started
	for _, p := range []string{`"low1"`, `"low2"`, `"low3"`} {
		send(p, 10)
	}
	send(`"high"`, 90)
	require.Eventually(t, func() bool { return queued(b, "prio") == 4 }, clusterTimeout, 5*time.Millisecond)
	close(g.release)
	require.Eventually(t, func() bool { return len(g.handled()) == 5 }, clusterTimeout, 5*time.Millisecond)
	var order []string
	for _, m := range g.handled() {
		order = append(order, string(m.Payload))
	}
	assert.Equal(t, []string{`"first"`, `"high"`, `"low1"`, `"low2"`, `"low3"`}, order)
}

// TestClusterBackpressure: a sender to a full remote agent waits, then gets
// ErrBackpressureTimeout, as for a local one; what it had in flight is
// handled or dead-lettered mailbox_full on the remote node, and both
// ledgers balance.
func TestClusterBackpressure(t *testing.T) {
	buses := newCluster(t, 2, nil, func(_ int, c *agentbus.Config) {
		c.Backpressure.Timeout = 200 * time.Millisecond
		c.Cluster.Window = 4
	})
	a, b := buses[0], buses[1]
	g := newHoldGate()
	_, err := b.Spawn("slow", g, agentbus.WithMailboxSize(2))
	require.NoError(t, err)
	seen(t, buses, "slow", b)
	accepted := 0
	var refused error
	for range 40 {
		_, err := a.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient("slow"))
		if err != nil {
			refused = err
			break
		}
		accepted++
	}
	require.ErrorIs(t, refused, agentbus.ErrBackpressureTimeout)
	assert.Less(t, accepted, 40)
	close(g.release)
	for _, x := range buses {
		require.Eventually(t, func() bool { acc := x.Accounting(); return acc.Idle() && acc.Balanced() },
			clusterTimeout, 5*time.Millisecond, "%+v", x.Accounting())
	}
	full := int(b.DeadLetters().Counts()[deadletter.MailboxFull])
	assert.Equal(t, accepted, len(g.handled())+full, "every accepted message handled or dead-lettered on b")
}

// TestClusterTTLAndRedelivery: a TTL counts across the hop (a message that
// expires in the remote mailbox is dead-lettered there as expired), and a
// message that requires an ack is redelivered on the remote node.
func TestClusterTTLAndRedelivery(t *testing.T) {
	buses := newCluster(t, 2, nil, func(_ int, c *agentbus.Config) { c.Retry.Backoff = 10 * time.Millisecond })
	a, b := buses[0], buses[1]
	g := newHoldGate()
	g.fail = 1 // the first message (held until release) fails once
	_, err := b.Spawn("ttl", g)
	require.NoError(t, err)
	seen(t, buses, "ttl", b)
	_, err = a.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(`"acked"`)).
		WithRecipient("ttl").RequireAck())
	require.NoError(t, err)
	<-g.started
	_, err = a.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(`"short"`)).
		WithRecipient("ttl").WithTTL(50*time.Millisecond))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return queued(b, "ttl") == 1 }, clusterTimeout, 5*time.Millisecond)
	deadline := time.Now().Add(60 * time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(deadline) }, time.Second, 5*time.Millisecond)
	close(g.release)
	require.Eventually(t, func() bool { return len(g.handled()) == 1 }, clusterTimeout, 5*time.Millisecond)
	m := g.handled()[0]
	assert.JSONEq(t, `"acked"`, string(m.Payload))
	assert.Equal(t, 2, m.Attempts, "redelivered once on b")
	require.Eventually(t, func() bool { return b.DeadLetters().Counts()[deadletter.Expired] == 1 }, clusterTimeout,
		5*time.Millisecond)
	assert.Zero(t, a.DeadLetters().Len())
}
