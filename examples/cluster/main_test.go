package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(nodeEnv); name != "" { // started by run as node b or c
		os.Exit(node(name))
	}
	// The process's cluster data link (gRPC) stays until it exits; and
	// protoactor's endpoint writer, when it fails to reconnect to the node
	// that was killed, never closes the gRPC connection of each failed
	// attempt (remote/endpoint_writer.go, initializeInternal), whose
	// goroutines then retry until the process exits.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("google.golang.org/grpc.(*Server).Serve"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc.(*addrConn).resetTransport"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc.(*addrConn).resetTransportAndUnlock"), // its name in grpc 1.83
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/transport.(*http2Client).reader"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/transport.(*controlBuffer).get"),
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/remote.(*endpointWriter).initialize"))
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out))
	t.Log("\n" + out.String())
	for _, want := range []string{
		"cluster: a, b, c alive\n",
		`chain: planner on a asked researcher on b, which asked writer on c: "draft: the history of agents"` + "\n",
		"archive on c: 3 messages confirmed by c\n",
		"c killed (SIGKILL): a saw it go: agentbus: node unreachable\n",
		"a's dead letters: node_unreachable 2\n",
		`a send to archive now: agentbus: no such recipient: "archive"` + "\n",
		"cluster ledger balanced: true\n",
	} {
		assert.Contains(t, out.String(), want)
	}
	assert.Regexp(t, `a: .*to other nodes (\d+) = confirmed \d+ \+ undelivered 2`, out.String())
}
