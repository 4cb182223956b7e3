package main

import (
	"context"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
)

// clusterAddr waits for the daemon's "cluster node" log line and returns its
// membership address.
func clusterAddr(t *testing.T, p *proc) string {
	t.Helper()
	re := regexp.MustCompile(`msg="cluster node" .*listen=(\S+)`)
	var addr string
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(p.log())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	}, 20*time.Second, 5*time.Millisecond, "no cluster node line: %s", p.log())
	return addr
}

// TestServeCluster runs two daemons as one cluster: a client of one reaches
// an agent registered by a client of the other, and `stats --cluster` shows
// both nodes.
func TestServeCluster(t *testing.T) {
	one := startDaemon(t, "--cluster", "cli-test", "--node", "one")
	two := startDaemon(t, "--cluster", "cli-test", "--node", "two", "--seeds", clusterAddr(t, one))
	w := dialClient(t, one.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.Register(ctx, "worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := w.Reply(ctx, m, []byte(`{"from":"one"}`))
		return err
	})))
	var out string
	require.Eventually(t, func() bool {
		var code int
		code, out, _ = cli(t, two.socket, "req", "--to", "worker", `{}`)
		return code == 0
	}, 20*time.Second, 20*time.Millisecond, "the agent of the other daemon is not reachable")
	assert.Contains(t, out, `"from":"one"`)

	code, out, errOut := cli(t, two.socket, "stats", "--cluster")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `(?m)^one\s+1\s`, out, "one: one agent")
	assert.Regexp(t, `(?m)^two\s+0\s`, out)
	assert.Contains(t, out, "balanced: true")

	code, _, errOut = cli(t, one.socket, "stats", "--cluster", "--json")
	require.Equal(t, 0, code, errOut)
}

func TestServeClusterUsage(t *testing.T) {
	sock := filepath.Join(shortDir(t), "bus.sock")
	for _, args := range [][]string{
		{"--seeds", "127.0.0.1:7000"},                        // without --cluster
		{"--cluster", "c", "--listen", "0.0.0.0:0"},          // all interfaces
		{"--cluster", "c", "--seeds", "nohost"},              // not host:port
		{"--cluster", "c", "--listen", "127.0.0.1:notaport"}, // bad port
	} {
		code, _, errOut := cli(t, sock, append([]string{"serve"}, args...)...)
		assert.NotEqual(t, 0, code, "%v", args)
		assert.NotEmpty(t, errOut, "%v", args)
	}
	code, _, errOut := cli(t, sock, "stats", "--cluster")
	assert.NotEqual(t, 0, code, "no daemon")
	assert.NotEmpty(t, errOut)
}
