// Package mcpbus lets any MCP-capable AI agent join an agentbus bus: it is a
// Model Context Protocol server, built on the official Go SDK
// (github.com/modelcontextprotocol/go-sdk), that connects to the daemon
// through package client as one registered agent and offers the bus as MCP
// tools and resources. The command `agentbus mcp --as NAME` runs it over
// stdio, or streamable HTTP with --http; docs/bridges.md shows how to add it
// to an MCP client's configuration:
//
//	{"mcpServers": {"agentbus": {"command": "agentbus", "args": ["mcp", "--as", "assistant"]}}}
//
// # Tools and resources
//
// The tools are send, request (waits for the response, up to its
// timeout_ms), reply (answers a request taken from the inbox), publish,
// subscribe, unsubscribe, inbox, agents, stats and dead_letters; the
// resources are AgentsURI and TopicsURI. Every tool has a JSON schema for
// its arguments and its result.
//
// # The inbox
//
// Deliveries to the agent wait until an inbox call takes them; each is
// acknowledged (when it requires an ack) and credited to the daemon only
// then. The waiting is bounded: the client holds at most its AgentQueue
// deliveries (client.Options), and the daemon the rest in the agent's
// mailbox, where senders feel the bus's backpressure. Nothing is dropped:
// what no inbox call took when the client closes is dead-lettered by the
// daemon.
//
// # Errors
//
// Bad input is never a crash: it is an MCP tool error whose text is a
// ToolError, a JSON object with the bus's error code (PROTOCOL.md) and a
// message. Arguments that break a tool's schema get invalid_frame, the
// protocol's code for a bad field; everything the daemon refuses gets its
// own code (no_recipient, invalid_subject, request_timeout, …).
package mcpbus
