package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// clusterTimeout bounds every wait of the cluster tests: a few detection
// times on a loaded machine.
const clusterTimeout = 15 * time.Second

// newCluster starts n buses forming one cluster on 127.0.0.1 (free ports),
// each joined to the first, and waits until each sees all. They are shut
// down when the test ends. With p, they share a simulated partition.
func newCluster(t *testing.T, n int, p *agentbus.Partition, tune func(i int, c *agentbus.Config)) []*agentbus.Bus {
	t.Helper()
	name := fmt.Sprintf("test-%d", time.Now().UnixNano())
	buses := make([]*agentbus.Bus, 0, n)
	var seeds []string
	for i := range n {
		cfg := agentbus.Config{Cluster: &agentbus.ClusterConfig{Name: name, NodeName: fmt.Sprintf("node%d", i),
			Seeds: seeds, Partition: p}}
		if tune != nil {
			tune(i, &cfg)
		}
		b, err := agentbus.New(cfg)
		require.NoError(t, err)
		buses = append(buses, b)
		if i == 0 {
			seeds = []string{b.Cluster().Self().Addr}
		}
	}
	t.Cleanup(func() {
		for _, b := range slices.Backward(buses) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			assert.NoError(t, b.Shutdown(ctx))
			cancel()
		}
	})
	for _, b := range buses {
		require.Eventually(t, func() bool { return aliveCount(b) == n }, clusterTimeout, 10*time.Millisecond,
			"%s sees %v", b.Cluster().Self().Name, b.Cluster().Members())
	}
	return buses
}

func aliveCount(b *agentbus.Bus) int {
	alive := 0
	for _, m := range b.Cluster().Members() {
		if m.State == agentbus.StateAlive {
			alive++
		}
	}
	return alive
}

// seen waits until every bus's directory places agent on the bus that runs
// it.
func seen(t *testing.T, buses []*agentbus.Bus, agent string, on *agentbus.Bus) {
	t.Helper()
	want := on.Cluster().Self().ID
	for _, b := range buses {
		require.Eventually(t, func() bool {
			m, ok := b.Cluster().Where(agent)
			return ok && m.ID == want
		}, clusterTimeout, 5*time.Millisecond, "%s does not see %s", b.Cluster().Self().Name, agent)
	}
}

func TestClusterSendRequestAcrossNodes(t *testing.T) {
	buses := newCluster(t, 3, nil, nil)
	a, b, c := buses[0], buses[1], buses[2]
	got := newRecorder(16)
	_, err := c.Spawn("sink", got)
	require.NoError(t, err)
	_, err = b.Spawn("echo", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := b.Reply(ctx, m, m.Payload)
		return err
	}))
	require.NoError(t, err)
	seen(t, buses, "sink", c)
	seen(t, buses, "echo", b)

	// Send: a → sink on c.
	_, err = a.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(`{"n":1}`)).
		WithRecipient("sink").WithMetadata("k", "v").WithTTL(time.Minute))
	require.NoError(t, err)
	m := receive(t, got.got)
	assert.JSONEq(t, `{"n":1}`, string(m.Payload))
	assert.Equal(t, "tester", m.Sender)
	assert.Equal(t, "v", m.Metadata["k"])
	assert.Equal(t, time.Minute, m.TTL)

	// Request: a → echo on b, the response routed back to a.
	resp, err := a.Request(t.Context(), agentbus.NewMessage(agentbus.TypeRequest, "tester", []byte(`"ping"`)).
		WithRecipient("echo"))
	require.NoError(t, err)
	assert.JSONEq(t, `"ping"`, string(resp.Payload))

	// A name is the cluster's: a cannot take "sink".
	_, err = a.Spawn("sink", got)
	require.ErrorIs(t, err, agentbus.ErrAgentExists)

	// Every node's ledger balances once idle.
	for _, x := range buses {
		require.Eventually(t, func() bool { acc := x.Accounting(); return acc.Idle() && acc.Balanced() },
			clusterTimeout, 5*time.Millisecond, "%+v", x.Accounting())
	}
}

func TestClusterRequestFailsAtOnceWhenRemoteHandlerFails(t *testing.T) {
	buses := newCluster(t, 2, nil, nil)
	a, b := buses[0], buses[1]
	_, err := b.Spawn("broken", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		return errors.New("out of order")
	}))
	require.NoError(t, err)
	seen(t, buses, "broken", b)
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, err = a.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "tester", nil).WithRecipient("broken"))
	require.ErrorIs(t, err, agentbus.ErrDeadLettered)
	assert.Contains(t, err.Error(), "handler_error")
	assert.Contains(t, err.Error(), "out of order")
	assert.Less(t, time.Since(start), 5*time.Second, "failed at once, not at its timeout")
	// The dead letter is on the node that last held the request.
	assert.Equal(t, 1, b.DeadLetters().Len())
	assert.Equal(t, 0, a.DeadLetters().Len())
}

func TestClusterPublishOneCopyPerSubscriber(t *testing.T) {
	buses := newCluster(t, 3, nil, nil)
	recs := make([]*recorder, 3)
	for i, b := range buses {
		recs[i] = newRecorder(16)
		name := fmt.Sprintf("sub%d", i)
		_, err := b.Spawn(name, recs[i])
		require.NoError(t, err)
		pattern := "jobs.*.done"
		if i == 2 {
			pattern = "jobs.>"
		}
		require.NoError(t, b.Subscribe(pattern, name))
	}
	// Subscriptions reach the other nodes' directories within a moment:
	// publish probes until every subscriber has one.
	pending := map[int]bool{0: true, 1: true, 2: true}
	require.Eventually(t, func() bool {
		_, err := buses[0].Publish(t.Context(), "jobs.probe.done", "tester", []byte(`"probe"`))
		require.NoError(t, err)
		for i, r := range recs {
			select {
			case <-r.got:
				delete(pending, i)
			default:
			}
		}
		return len(pending) == 0
	}, clusterTimeout, 20*time.Millisecond)
	_, err := buses[0].Publish(t.Context(), "jobs.probe.done", "tester", []byte(`"last"`)) // after the probes, by the same topic
	require.NoError(t, err)
	for i, r := range recs {
		for {
			m := receive(t, r.got)
			if string(m.Payload) == `"last"` {
				break
			}
		}
		for _, b := range buses { // every copy handled: nothing else can arrive
			require.Eventually(t, func() bool { return b.Accounting().Idle() }, clusterTimeout, 5*time.Millisecond)
		}
		select {
		case m := <-r.got:
			t.Fatalf("sub%d got a second copy: %s", i, m.Payload)
		default:
		}
	}
}

func TestClusterBroadcastReachesEveryNode(t *testing.T) {
	buses := newCluster(t, 3, nil, nil)
	recs := make([]*recorder, 3)
	for i, b := range buses {
		recs[i] = newRecorder(4)
		_, err := b.Spawn(fmt.Sprintf("agent%d", i), recs[i])
		require.NoError(t, err)
	}
	for i := range buses {
		seen(t, buses, fmt.Sprintf("agent%d", i), buses[i])
	}
	_, err := buses[0].Send(t.Context(), agentbus.NewMessage(agentbus.TypeBroadcast, "agent0", []byte(`"all"`)))
	require.NoError(t, err)
	for i := 1; i < 3; i++ {
		assert.JSONEq(t, `"all"`, string(receive(t, recs[i].got).Payload))
	}
	select {
	case m := <-recs[0].got:
		t.Fatalf("the sender got its own broadcast: %v", m)
	default:
	}
}

func TestClusterNodeEventsAndDeadLetterOnLeave(t *testing.T) {
	buses := newCluster(t, 2, nil, nil)
	a, b := buses[0], buses[1]
	events, err := a.Events(64)
	require.NoError(t, err)
	defer events.Close()
	_, err = b.Spawn("sink", newRecorder(1))
	require.NoError(t, err)
	seen(t, buses, "sink", b)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, b.Shutdown(ctx))
	for e := range events.C() {
		if e.Kind == agentbus.EventNodeLeft {
			require.NotNil(t, e.Node)
			assert.Equal(t, "node1", e.Node.Name)
			assert.ErrorIs(t, e.Err, agentbus.ErrNodeLeft)
			break
		}
	}
	_, err = a.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient("sink"))
	require.ErrorIs(t, err, agentbus.ErrNoRecipient)
}

// receive returns the next message on c, failing after clusterTimeout.
func receive(t *testing.T, c <-chan *agentbus.Message) *agentbus.Message {
	t.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(clusterTimeout):
		t.Fatal("no message")
		return nil
	}
}

// TestClusterPartitionHeals splits a cluster in two (a simulated partition:
// the nodes drop every packet between the sides), lets each side take the
// same agent name, and heals it: the earlier claim keeps the name on every
// node; the other agent is stopped and what was queued for it is
// dead-lettered as name_conflict on its node.
func TestClusterPartitionHeals(t *testing.T) {
	p := agentbus.NewPartition()
	buses := newCluster(t, 3, p, nil)
	a, b, c := buses[0], buses[1], buses[2]
	addr := func(x *agentbus.Bus) string { return x.Cluster().Self().Addr }
	p.Split([]string{addr(a)}, []string{addr(b), addr(c)})
	require.Eventually(t, func() bool { return aliveCount(a) == 1 && aliveCount(b) == 2 && aliveCount(c) == 2 },
		clusterTimeout, 10*time.Millisecond)

	// Each side takes "dup": a first.
	got := newRecorder(8)
	_, err := a.Spawn("dup", got)
	require.NoError(t, err)
	release := make(chan struct{})
	var handled sync.WaitGroup
	handled.Add(1)
	_, err = b.Spawn("dup", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
		defer handled.Done()
		<-release
		return nil
	}))
	require.NoError(t, err, "b's side does not see a")
	seen(t, []*agentbus.Bus{b, c}, "dup", b)
	for range 3 { // one in b's handler, two queued behind it
		_, err := c.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", nil).WithRecipient("dup"))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return b.Stats().Agents[0].Queued == 2 }, clusterTimeout, 5*time.Millisecond)
	stopped, err := b.Watch("dup", 8)
	require.NoError(t, err)

	p.Heal()
	for _, x := range buses {
		require.Eventually(t, func() bool { return aliveCount(x) == 3 }, clusterTimeout, 10*time.Millisecond)
	}
	seen(t, buses, "dup", a)
	close(release) // b's agent stops once its handler returns
	handled.Wait()
	for e := range stopped.C() {
		if e.Kind == agentbus.EventStopped {
			assert.ErrorIs(t, e.Err, agentbus.ErrNameConflict)
			break
		}
	}
	assert.EqualValues(t, 2, b.DeadLetters().Counts()[deadletter.NameConflict], "b's queue")
	_, err = c.Send(t.Context(), agentbus.NewMessage(agentbus.TypeDirect, "tester", []byte(`"after"`)).WithRecipient("dup"))
	require.NoError(t, err)
	assert.JSONEq(t, `"after"`, string(receive(t, got.got).Payload))
}
