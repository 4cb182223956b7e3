package agentbus

// AgentIdleGoroutines is agentIdleGoroutines, for the external tests: the
// goroutines of the agents' dispatcher that may wait after a burst.
const AgentIdleGoroutines = agentIdleGoroutines
