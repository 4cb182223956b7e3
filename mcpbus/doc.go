// Package mcpbus lets any MCP-capable AI agent join an agentbus bus: it is a
// Model Context Protocol server, built on the official Go SDK
// (github.com/modelcontextprotocol/go-sdk), that connects to the daemon
// through package client as one registered agent and offers the bus as MCP
// tools and resources. The command `agentbus mcp --as NAME` runs it over
// stdio (or streamable HTTP with --http).
package mcpbus
