// Package crossbench holds BenchmarkCrossProcess: agentbus and NATS
// measured side by side as users run them, each server its own OS process
// and the clients in processes of their own. The package has no code of its
// own; see crossbench_test.go and docs/performance.md ("Across processes").
package crossbench
