package cluster_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(nodeEnv) != "" {
		os.Exit(runNode())
	}
	code := m.Run()
	stopBenchPeer()
	// A process that ran a cluster node keeps its data link's gRPC listener
	// until it exits (see hub).
	if err := goleak.Find(goleak.IgnoreAnyFunction("google.golang.org/grpc.(*Server).Serve")); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}
