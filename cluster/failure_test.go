package cluster_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/cluster/wire"
)

// failureTimeout bounds each wait of the process tests.
const failureTimeout = 20 * time.Second

// startCluster starts n node processes, node0 to node(n-1), joined to node0,
// and waits until each sees all alive.
func startCluster(t *testing.T, n int) []*proc {
	t.Helper()
	name := fmt.Sprintf("proc-%d-%d", os.Getpid(), time.Now().UnixNano())
	var nodes []*proc
	for i := range n {
		seed := ""
		if i > 0 {
			seed = nodes[0].info.Addr
		}
		nodes = append(nodes, startNode(t, name, fmt.Sprintf("node%d", i), seed))
	}
	for _, p := range nodes {
		waitAlive(t, p, n)
	}
	return nodes
}

// alive returns the names of the members p lists alive.
func alive(t *testing.T, p *proc) []string {
	var names []string
	for _, m := range p.do(command{Op: "members"}).Members {
		if m.State == agentbus.StateAlive {
			names = append(names, m.Name)
		}
	}
	slices.Sort(names)
	return names
}

func waitAlive(t *testing.T, p *proc, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(alive(t, p)) == n }, failureTimeout, 20*time.Millisecond,
		"%s sees %v", p.name, alive(t, p))
}

// waitWhere waits until every node places agent on member id.
func waitWhere(t *testing.T, nodes []*proc, agent, id string) {
	t.Helper()
	for _, p := range nodes {
		require.Eventually(t, func() bool { return p.do(command{Op: "where", Name: agent}).Where == id },
			failureTimeout, 10*time.Millisecond, "%s does not place %s on %s", p.name, agent, id)
	}
}

// TestProcessesKillMidStream kills a node's process (SIGKILL) while another
// streams messages to its agent: once membership declares it dead (within
// DetectionBound), sends to its agent fail with ErrNoRecipient, every
// message the sender had in flight is dead-lettered on the sender as
// node_unreachable unless the dead node had confirmed it, and every
// survivor's ledger balances. A new process of the same name then rejoins.
func TestProcessesKillMidStream(t *testing.T) { soak(t, killMidStream) }

// soak runs a failure test once, or AGENTBUS_CLUSTER_SOAK times (a longer
// run, to catch what happens rarely).
func soak(t *testing.T, test func(t *testing.T)) {
	rounds, err := strconv.Atoi(os.Getenv("AGENTBUS_CLUSTER_SOAK"))
	if err != nil || rounds < 1 {
		rounds = 1
	}
	for i := range rounds {
		t.Run(fmt.Sprintf("round=%d", i), test)
	}
}

func killMidStream(t *testing.T) {
	nodes := startCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	require.Empty(t, c.do(command{Op: "spawn", Name: "sink", Kind: "sink"}).Err)
	waitWhere(t, nodes, "sink", c.info.ID)
	require.Empty(t, a.do(command{Op: "stream", To: "sink"}).Err)
	require.Eventually(t, func() bool { return a.do(command{Op: "stats"}).Links.Confirmed > 1000 },
		failureTimeout, 10*time.Millisecond)

	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	require.Eventually(t, func() bool { return !slices.Contains(alive(t, a), "node2") }, failureTimeout,
		10*time.Millisecond)
	detected := time.Since(killed)
	bound := agentbus.ClusterConfig{}.DetectionBound()
	t.Logf("SIGKILL detected after %v (bound %v)", detected, bound)
	assert.Less(t, detected, bound+time.Second, "detection took longer than documented")

	// The stream stops at its first ErrNoRecipient; nothing is in flight.
	require.Eventually(t, func() bool {
		st := a.do(command{Op: "stats"})
		return st.Refused["no_recipient"] > 0 && st.Links.InFlight == 0
	}, failureTimeout, 10*time.Millisecond)
	st := a.do(command{Op: "stop"})
	t.Logf("sender: %d sent, %d confirmed by the dead node, %d dead-lettered node_unreachable",
		st.Sent, st.Links.Confirmed, st.Dead["node_unreachable"])
	assert.Equal(t, st.Sent, st.Links.Confirmed+st.Dead["node_unreachable"],
		"every message sent was confirmed by the dead node or dead-lettered here")
	assert.Equal(t, st.Links.Sent, st.Sent)
	for _, p := range []*proc{a, b} {
		require.Eventually(t, func() bool {
			l := p.do(command{Op: "stats"}).Ledger
			return l.Balanced() && l.Idle()
		}, failureTimeout, 10*time.Millisecond, "%s: %+v", p.name, p.do(command{Op: "stats"}).Ledger)
	}

	// A new process of node2 rejoins; the name is free again.
	c2 := startNode(t, a.info.ID[:0]+clusterOf(t, a), "node2", a.info.Addr)
	waitAlive(t, a, 3)
	require.Empty(t, c2.do(command{Op: "spawn", Name: "sink", Kind: "sink"}).Err)
	waitWhere(t, []*proc{a, b, c2}, "sink", c2.info.ID)
}

// clusterOf is the cluster name p was started with.
func clusterOf(t *testing.T, p *proc) string {
	for _, e := range p.cmd.Env {
		if v, ok := cutPrefix(e, "AGENTBUS_TEST_CLUSTER="); ok {
			return v
		}
	}
	t.Fatal("no cluster name")
	return ""
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

// TestProcessesStall stops a node's process (SIGSTOP) for longer than the
// failure detector's timeout, lets another node take one of its agents'
// names meanwhile, and resumes it (SIGCONT): it rejoins, the earlier claim
// keeps the name (the stalled node's: the other node's agent is stopped),
// and at no moment is the name live on two nodes: every node samples,
// every 500 µs, whether it holds the name, and the intervals never overlap.
func TestProcessesStall(t *testing.T) { soak(t, stall) }

func stall(t *testing.T) {
	nodes := startCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	require.Empty(t, c.do(command{Op: "spawn", Name: "keeper", Kind: "sink"}).Err)
	waitWhere(t, nodes, "keeper", c.info.ID)
	for _, p := range nodes {
		require.Empty(t, p.do(command{Op: "watch", Name: "keeper"}).Err)
	}

	require.NoError(t, c.cmd.Process.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	for _, p := range []*proc{a, b} {
		require.Eventually(t, func() bool { return !slices.Contains(alive(t, p), "node2") }, failureTimeout,
			10*time.Millisecond)
	}
	t.Logf("stalled node declared dead after %v", time.Since(stopped))
	require.Empty(t, a.do(command{Op: "spawn", Name: "keeper", Kind: "sink"}).Err, "the stalled node's name is free")
	waitWhere(t, []*proc{a, b}, "keeper", a.info.ID)
	require.Empty(t, b.do(command{Op: "send", To: "keeper", Payload: `1`}).Err)
	require.Eventually(t, func() bool { return a.do(command{Op: "stats"}).Handled["keeper"] == 1 }, failureTimeout,
		10*time.Millisecond)

	require.NoError(t, c.cmd.Process.Signal(syscall.SIGCONT))
	resumed := time.Now()
	for _, p := range nodes {
		waitAlive(t, p, 3)
	}
	waitWhere(t, nodes, "keeper", c.info.ID)
	t.Logf("stalled node rejoined and settled %v after SIGCONT", time.Since(resumed))
	require.Empty(t, b.do(command{Op: "send", To: "keeper", Payload: `2`}).Err)
	require.Eventually(t, func() bool { return c.do(command{Op: "stats"}).Handled["keeper"] == 1 }, failureTimeout,
		10*time.Millisecond)
	assert.EqualValues(t, 1, a.do(command{Op: "stats"}).Handled["keeper"], "a's agent was stopped")

	var intervals [][2]int64
	for _, p := range nodes {
		tl := p.do(command{Op: "timeline"}).Timeline
		for i := 0; i < len(tl); i += 2 {
			end := tl[i+1]
			intervals = append(intervals, [2]int64{tl[i], end})
			t.Logf("%s: keeper live from %v for %v", p.name, time.Unix(0, tl[i]).Format("15:04:05.000000"),
				time.Duration(end-tl[i]))
		}
	}
	for i := range intervals {
		for j := i + 1; j < len(intervals); j++ {
			x, y := intervals[i], intervals[j]
			assert.False(t, x[0] < y[1] && y[0] < x[1], "keeper live on two nodes at once: %v and %v", x, y)
		}
	}
	assert.GreaterOrEqual(t, len(intervals), 3, "live on c, then a, then c again")
}

// TestProcessesRefuseBadPeers speaks to a node process as a broken or
// hostile peer would, over its real gRPC data link and its real membership
// port: envelopes of a type the node does not know (which would crash
// protoactor's receiver), out-of-range indexes, a frame of another wire
// version, a frame from a non-member, and a membership peer of another wire
// version. Each is dropped (or refused) and counted; the node keeps
// working.
func TestProcessesRefuseBadPeers(t *testing.T) {
	nodes := startCluster(t, 2)
	a, b := nodes[0], nodes[1]
	require.Empty(t, a.do(command{Op: "spawn", Name: "echo", Kind: "echo"}).Err)
	waitWhere(t, nodes, "echo", a.info.ID)

	conn, err := grpc.NewClient("passthrough:///"+a.info.Remote, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), failureTimeout)
	defer cancel()
	stream, err := remote.NewRemotingClient(conn).Receive(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_ConnectRequest{
		ConnectRequest: &remote.ConnectRequest{ConnectionType: &remote.ConnectRequest_ServerConnection{
			ServerConnection: &remote.ServerConnection{SystemId: "evil", Address: a.info.Remote}}}}}))
	_, err = stream.Recv()
	require.NoError(t, err)
	target := []*actor.PID{{Address: a.info.Remote, Id: "$cluster/" + a.info.ID}}
	frame := func(f *wire.Frame) []byte {
		b, err := proto.Marshal(f)
		require.NoError(t, err)
		return b
	}
	batches := []*remote.MessageBatch{
		{TypeNames: []string{"evil.Unknown"}, Targets: target, Envelopes: []*remote.MessageEnvelope{{MessageData: []byte{1}}}},
		{TypeNames: []string{"google.protobuf.BytesValue"}, Targets: target, Envelopes: []*remote.MessageEnvelope{{}}},
		{TypeNames: []string{wire.FullName}, Targets: target, Envelopes: []*remote.MessageEnvelope{
			{TypeId: 5}, {Target: 7}, {Sender: 3}, {SerializerId: 1}}},
		{TypeNames: []string{wire.FullName}, Targets: target, Envelopes: []*remote.MessageEnvelope{
			{MessageData: frame(&wire.Frame{Version: 2, Kind: wire.Kind_DELIVER, From: b.info.ID})},
			{MessageData: frame(&wire.Frame{Version: wire.Version, Kind: wire.Kind_DELIVER, From: "stranger/1"})},
			{MessageData: frame(&wire.Frame{Version: wire.Version, Kind: 99, From: b.info.ID})},
		}},
	}
	for _, batch := range batches {
		require.NoError(t, stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: batch}}))
	}
	require.Eventually(t, func() bool {
		l := a.do(command{Op: "stats"}).Links
		return l.Malformed >= 7 && l.Refused >= 1 && l.Strays >= 1
	}, failureTimeout, 10*time.Millisecond, "%+v", a.do(command{Op: "stats"}).Links)

	// A membership peer of another wire version is refused at join.
	evil := memberlist.DefaultLANConfig()
	evil.Name, evil.BindAddr, evil.BindPort = "evil/1", "127.0.0.1", 0
	evil.Label = "agentbus/" + clusterOf(t, a)
	evil.LogOutput = io.Discard
	evil.Delegate = metaDelegate(frame(&wire.Frame{Version: 2, Kind: wire.Kind_META, From: "evil/1",
		Cluster: clusterOf(t, a), NodeName: "evil"}))
	ml, err := memberlist.Create(evil)
	require.NoError(t, err)
	before := a.do(command{Op: "stats"}).Links.Refused
	_, _ = ml.Join([]string{a.info.Addr}) // it hears a's state; a refuses to take its
	require.Eventually(t, func() bool { return a.do(command{Op: "stats"}).Links.Refused > before }, failureTimeout,
		10*time.Millisecond)
	require.NoError(t, ml.Shutdown())
	assert.NotContains(t, alive(t, a), "evil")

	// The node still works.
	r := b.do(command{Op: "request", To: "echo", Payload: `"still here"`})
	require.Empty(t, r.Err)
	assert.JSONEq(t, `"still here"`, r.Payload)
}

// metaDelegate is a memberlist delegate that announces meta and nothing
// else.
type metaDelegate []byte

func (d metaDelegate) NodeMeta(int) []byte           { return d }
func (metaDelegate) NotifyMsg([]byte)                {}
func (metaDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (metaDelegate) LocalState(bool) []byte          { return nil }
func (metaDelegate) MergeRemoteState([]byte, bool)   {}
