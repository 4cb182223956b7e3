package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/store"
)

// collector is a handler that hands each message to a channel.
func collector(ch chan<- *agentbus.Message) agentbus.HandlerFunc {
	return func(ctx context.Context, m *agentbus.Message) error {
		select {
		case ch <- m:
		case <-ctx.Done():
		}
		return nil
	}
}

// records returns the keys of the durable messages st holds.
func records(t *testing.T, st store.Store) []string {
	t.Helper()
	var keys []string
	require.NoError(t, st.Scan("messages", func(k, _ []byte) error {
		keys = append(keys, string(k))
		return nil
	}))
	return keys
}

// openDisk opens a disk store in dir, closed when the test ends (or by the
// test, before it reopens it).
func openDisk(t *testing.T, dir string) *store.Disk {
	t.Helper()
	d, err := store.Open(dir, store.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// detachedWorker returns a bus on a disk store in dir with a durable agent
// "worker", subscribed to topic and detached, so nothing is handled.
func detachedWorker(t *testing.T, dir, topic string) (*agentbus.Bus, *store.Disk) {
	t.Helper()
	st := openDisk(t, dir)
	b, err := agentbus.New(agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	require.NoError(t, err)
	_, err = b.Spawn("worker", collector(make(chan *agentbus.Message)), agentbus.WithDurable())
	require.NoError(t, err)
	require.NoError(t, b.Subscribe(topic, "worker"))
	require.NoError(t, b.Detach("worker", nil))
	return b, st
}

func shutdown(t *testing.T, b *agentbus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Shutdown(ctx))
}

func TestDurableSendLeavesStoreWhenHandled(t *testing.T) {
	st := store.NewMemory(0)
	b := newBus(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	got := make(chan *agentbus.Message, 8)
	_, err := b.Spawn("worker", collector(got), agentbus.WithDurable())
	require.NoError(t, err)
	durable, attached := b.Durable("worker")
	assert.True(t, durable)
	assert.True(t, attached)
	id, err := b.Send(t.Context(), direct("worker", `"job"`))
	require.NoError(t, err)
	m := <-got
	assert.Equal(t, id, m.ID)
	assert.False(t, m.Redelivered)
	require.Eventually(t, func() bool { require.NoError(t, st.Commit()); return len(records(t, st)) == 0 },
		5*time.Second, time.Millisecond)
	_, err = b.Spawn("worker", collector(got), agentbus.WithDurable())
	require.ErrorIs(t, err, agentbus.ErrAgentExists, "an attached durable agent is not taken over")
	_, err = b.Spawn("plain", collector(got))
	require.NoError(t, err)
	durable, _ = b.Durable("plain")
	assert.False(t, durable)
	require.ErrorIs(t, b.Detach("plain", nil), agentbus.ErrNotDurable)
	require.ErrorIs(t, b.Detach("nobody", nil), agentbus.ErrNoRecipient)
}

// TestDurableRecovery: what a durable agent had queued when the bus stopped
// comes back at the next New, detached; sends queue for it meanwhile; the
// handler that attaches gets the backlog in priority order, marked.
func TestDurableRecovery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	b, st := detachedWorker(t, dir, "jobs.*")
	_, attached := b.Durable("worker")
	require.False(t, attached)
	want := map[string]uint8{}
	for i, p := range []uint8{10, 90, 50, 90, 10} {
		m := direct("worker", `{"n":1}`).WithPriority(p)
		if i == 4 {
			m.RequireAck()
		}
		id, err := b.Send(t.Context(), m)
		require.NoError(t, err)
		want[id] = p
	}
	id, err := b.Publish(t.Context(), "jobs.build", "tester", []byte(`"published"`))
	require.NoError(t, err)
	want[id] = 50
	shutdown(t, b)
	require.NoError(t, st.Close())

	st = openDisk(t, dir)
	b = newBus(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	durable, attached := b.Durable("worker")
	require.True(t, durable, "recovered")
	require.False(t, attached, "recovered detached")
	assert.Equal(t, []string{"worker"}, b.Subscribers("jobs.build"), "its subscription came back")
	late, err := b.Send(t.Context(), direct("worker", `"late"`).WithPriority(100))
	require.NoError(t, err, "a detached durable agent takes messages")
	got := make(chan *agentbus.Message, 16)
	_, err = b.Spawn("worker", collector(got), agentbus.WithDurable())
	require.NoError(t, err)
	var prios []uint8
	for range len(want) + 1 {
		m := <-got
		if m.ID == late {
			assert.False(t, m.Redelivered)
		} else {
			assert.True(t, m.Redelivered, "recovered: %s", m.ID)
			assert.Contains(t, want, m.ID)
		}
		prios = append(prios, m.Priority)
	}
	assert.Equal(t, []uint8{100, 90, 90, 50, 50, 10, 10}, prios)
}

func TestDurableIdempotentSend(t *testing.T) {
	st := store.NewMemory(0)
	b := newBus(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st, DedupWindow: time.Hour}})
	got := make(chan *agentbus.Message, 8)
	_, err := b.Spawn("worker", collector(got), agentbus.WithDurable())
	require.NoError(t, err)
	m := direct("worker", `"once"`)
	id1, err := b.Send(t.Context(), m)
	require.NoError(t, err)
	again := direct("worker", `"once"`)
	again.ID = m.ID
	id2, err := b.Send(t.Context(), again)
	require.NoError(t, err)
	assert.Equal(t, id1, id2)
	other, err := b.Send(t.Context(), direct("worker", `"other"`))
	require.NoError(t, err)
	assert.Equal(t, id1, (<-got).ID)
	assert.Equal(t, other, (<-got).ID, "the repeat was not delivered")
	var dedup int
	require.NoError(t, st.Scan("dedup", func(_, _ []byte) error { dedup++; return nil }))
	assert.Equal(t, 2, dedup, "the window is kept in the store")
}

// TestDurableDedupBound: past MaxDedup IDs the oldest are forgotten, and a
// resend of one is delivered again.
func TestDurableDedupBound(t *testing.T) {
	b := newBus(t, agentbus.Config{Durability: agentbus.DurabilityConfig{MaxDedup: 3}})
	got := make(chan *agentbus.Message, 16)
	_, err := b.Spawn("worker", collector(got), agentbus.WithDurable())
	require.NoError(t, err)
	var sent []*agentbus.Message
	for i := range 5 {
		m := direct("worker", fmt.Sprint(i))
		_, err := b.Send(t.Context(), m.Clone())
		require.NoError(t, err)
		sent = append(sent, m)
		<-got
	}
	_, err = b.Send(t.Context(), sent[4].Clone()) // remembered: accepted once
	require.NoError(t, err)
	_, err = b.Send(t.Context(), sent[0].Clone()) // forgotten: delivered again
	require.NoError(t, err)
	assert.Equal(t, sent[0].ID, (<-got).ID)
	select {
	case m := <-got:
		t.Fatalf("unexpected delivery of %s", m.Payload)
	default:
	}
}

// TestDurableRedeliveryRecovered: a RequiresAck message whose handler
// failed waits for its redelivery; it is recovered with its attempts and
// delivered at its due time.
func TestDurableRedeliveryRecovered(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st := openDisk(t, dir)
	cfg := agentbus.Config{Retry: agentbus.RetryConfig{MaxAttempts: 5, Backoff: 300 * time.Millisecond},
		Durability: agentbus.DurabilityConfig{Store: st}}
	b, err := agentbus.New(cfg)
	require.NoError(t, err)
	failed := make(chan struct{}, 1)
	_, err = b.Spawn("worker", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		failed <- struct{}{}
		return errors.New("not now")
	}), agentbus.WithDurable())
	require.NoError(t, err)
	id, err := b.Send(t.Context(), direct("worker", `"retry me"`).RequireAck())
	require.NoError(t, err)
	<-failed
	require.Eventually(t, func() bool { return b.PendingRetries() == 1 }, 5*time.Second, time.Millisecond)
	shutdown(t, b)
	require.NoError(t, st.Close())

	st = openDisk(t, dir)
	cfg.Durability.Store = st
	b = newBus(t, cfg)
	assert.Equal(t, 1, b.PendingRetries(), "scheduled for its due time")
	got := make(chan *agentbus.Message, 1)
	_, err = b.Spawn("worker", collector(got), agentbus.WithDurable())
	require.NoError(t, err)
	m := <-got
	assert.Equal(t, id, m.ID)
	assert.Equal(t, 2, m.Attempts)
	assert.True(t, m.Redelivered)
}

// TestDurableDeadLetters: the dead-letter queue, with its replay records,
// comes back after a restart; a message replayed with its own ID is not
// taken for a duplicate.
func TestDurableDeadLetters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st := openDisk(t, dir)
	cfg := agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}}
	b, err := agentbus.New(cfg)
	require.NoError(t, err)
	fail := true
	got := make(chan *agentbus.Message, 4)
	_, err = b.Spawn("worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		if fail {
			fail = false
			return errors.New("bad input")
		}
		got <- m
		return nil
	}), agentbus.WithDurable())
	require.NoError(t, err)
	id, err := b.Send(t.Context(), direct("worker", `"x"`))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return b.DeadLetters().Len() == 1 }, 5*time.Second, time.Millisecond)
	l := b.DeadLetters().List(deadletter.Filter{})[0]
	assert.Equal(t, deadletter.HandlerError, l.Reason)
	rid, err := b.Replay(t.Context(), l.Seq, "")
	require.NoError(t, err)
	assert.Equal(t, id, rid)
	assert.Equal(t, id, (<-got).ID, "replayed despite the dedup window")
	shutdown(t, b)
	assert.Empty(t, records(t, st))
	require.NoError(t, st.Close())

	st = openDisk(t, dir)
	cfg.Durability.Store = st
	b = newBus(t, cfg)
	letters := b.DeadLetters().List(deadletter.Filter{})
	require.Len(t, letters, 1)
	assert.Equal(t, id, letters[0].Message.ID)
	assert.Equal(t, deadletter.HandlerError, letters[0].Reason)
	assert.Equal(t, "bad input", letters[0].Err[len(letters[0].Err)-len("bad input"):])
	assert.Equal(t, 1, letters[0].Replays)
	assert.Equal(t, "worker", letters[0].ReplayedTo)
	assert.Equal(t, l.Seq, letters[0].Seq)
	_, err = b.Spawn("again", collector(got))
	require.NoError(t, err)
	_, err = b.Replay(t.Context(), letters[0].Seq, "again")
	require.NoError(t, err, "a recovered letter can be replayed")
	assert.Equal(t, id, (<-got).ID)

	assert.Equal(t, 1, b.PurgeDeadLetters())
	shutdown(t, b)
	require.NoError(t, st.Close())
	st = openDisk(t, dir)
	cfg.Durability.Store = st
	b = newBus(t, cfg)
	assert.Zero(t, b.DeadLetters().Len(), "purged from the store too")
}

func TestDurableStoreFull(t *testing.T) {
	st := store.NewMemory(600)
	b := newBus(t, agentbus.Config{Backpressure: agentbus.BackpressureConfig{Timeout: 50 * time.Millisecond},
		Durability: agentbus.DurabilityConfig{Store: st}})
	_, err := b.Spawn("worker", collector(make(chan *agentbus.Message)), agentbus.WithDurable())
	require.NoError(t, err)
	require.NoError(t, b.Detach("worker", nil))
	var sent int
	for {
		_, err = b.Send(t.Context(), direct("worker", `"fill"`))
		if err != nil {
			break
		}
		sent++
		require.Less(t, sent, 100)
	}
	require.ErrorIs(t, err, agentbus.ErrStoreFull)
	require.ErrorIs(t, err, agentbus.ErrBackpressureTimeout)
	assert.Positive(t, sent)
	assert.Len(t, records(t, st), sent, "nothing refused was kept, nothing accepted was dropped")
}

// TestDurableHandOff: a hand-off agent's deliveries stay stored until
// settled; what was handed and not settled when it detached is handed
// again, marked, to the next attachment.
func TestDurableHandOff(t *testing.T) {
	st := store.NewMemory(0)
	b := newBus(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	got := make(chan *agentbus.Message, 8)
	_, err := b.Spawn("remote", collector(got), agentbus.WithDurable(), agentbus.WithHandOff())
	require.NoError(t, err)
	id1, err := b.Send(t.Context(), direct("remote", `1`))
	require.NoError(t, err)
	id2, err := b.Send(t.Context(), direct("remote", `2`))
	require.NoError(t, err)
	<-got
	<-got
	require.NoError(t, b.Settle("remote", id1))
	require.ErrorIs(t, b.Settle("remote", id1), agentbus.ErrNotPending)
	require.NoError(t, st.Commit())
	assert.Len(t, records(t, st), 1, "the unsettled one stays")

	require.NoError(t, b.Detach("remote", nil))
	require.NoError(t, b.Detach("remote", nil), "twice is fine")
	id3, err := b.Send(t.Context(), direct("remote", `3`))
	require.NoError(t, err)
	again := make(chan *agentbus.Message, 8)
	_, err = b.Spawn("remote", collector(again), agentbus.WithDurable(), agentbus.WithHandOff())
	require.NoError(t, err)
	seen := map[string]bool{}
	for range 2 {
		m := <-again
		seen[m.ID] = m.Redelivered
	}
	assert.Equal(t, map[string]bool{id2: true, id3: false}, seen)
	require.NoError(t, b.Settle("remote", id2))
	require.NoError(t, b.Settle("remote", id3))
	require.NoError(t, st.Commit())
	assert.Empty(t, records(t, st))
}

// TestDurableTransportClosed: a hand-off handler that finds its transport
// gone detaches the agent and keeps the message.
func TestDurableTransportClosed(t *testing.T) {
	st := store.NewMemory(0)
	b := newBus(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	tried := make(chan string, 8)
	_, err := b.Spawn("remote", agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		tried <- m.ID
		return agentbus.ErrTransportClosed
	}), agentbus.WithDurable(), agentbus.WithHandOff())
	require.NoError(t, err)
	id, err := b.Send(t.Context(), direct("remote", `1`))
	require.NoError(t, err)
	assert.Equal(t, id, <-tried)
	require.Eventually(t, func() bool { _, attached := b.Durable("remote"); return !attached }, 5*time.Second,
		time.Millisecond)
	assert.Zero(t, b.DeadLetters().Len())
	got := make(chan *agentbus.Message, 1)
	_, err = b.Spawn("remote", collector(got), agentbus.WithDurable(), agentbus.WithHandOff())
	require.NoError(t, err)
	m := <-got
	assert.Equal(t, id, m.ID)
	assert.True(t, m.Redelivered)
}

// TestDurableStop: a durable agent that is stopped for good leaves the
// store, and is not recovered.
func TestDurableStop(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	b, st := detachedWorker(t, dir, "jobs.>")
	_, err := b.Send(t.Context(), direct("worker", `1`))
	require.NoError(t, err)
	require.NoError(t, b.Stop(t.Context(), "worker"))
	shutdown(t, b)
	assert.Empty(t, records(t, st))
	require.NoError(t, st.Close())

	st = openDisk(t, dir)
	b = newBus(t, agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	assert.Empty(t, b.Agents())
	assert.Empty(t, b.Topics())
	letters := b.DeadLetters().List(deadletter.Filter{})
	require.Len(t, letters, 1)
	assert.Equal(t, deadletter.AgentStopped, letters[0].Reason)
}

func TestDurabilityConfig(t *testing.T) {
	for _, cfg := range []agentbus.DurabilityConfig{{DedupWindow: -1}, {MaxDedup: -1}} {
		_, err := agentbus.New(agentbus.Config{Durability: cfg})
		require.ErrorIs(t, err, agentbus.ErrInvalidConfig)
	}
}

// TestDurableCorruptRecord: a record that passes its checksum but does not
// decode stops New with an error naming the file.
func TestDurableCorruptRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	st := openDisk(t, dir)
	require.NoError(t, st.Commit(store.Put("messages", []byte("worker\x00id"), []byte("0123456789abcdef{not json"))))
	_, err := agentbus.New(agentbus.Config{Durability: agentbus.DurabilityConfig{Store: st}})
	require.ErrorIs(t, err, store.ErrCorrupt)
	assert.ErrorContains(t, err, st.Path())
}
