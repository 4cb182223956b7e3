package cluster_test

import (
	"fmt"

	"github.com/descartes/agentbus/cluster"
)

// How long a node that stopped answering stays listed as alive, at most,
// with the default timing and with a faster one. (ExampleBus_Cluster, in
// the agentbus package, forms a cluster.)
func ExampleConfig_DetectionBound() {
	fmt.Println(cluster.Config{}.DetectionBound())
	fmt.Println(cluster.Config{ProbeInterval: 100 * 1e6, ProbeTimeout: 50 * 1e6, SuspicionMult: 3}.DetectionBound())
	// Output:
	// 2.95s
	// 1.15s
}
