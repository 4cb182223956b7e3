package cluster_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(nodeEnv) != "" {
		os.Exit(runNode())
	}
	// A process that ran a cluster node keeps its data link's gRPC listener
	// until it exits (see hub).
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("google.golang.org/grpc.(*Server).Serve"))
}
