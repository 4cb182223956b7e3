package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/mcpbus"
)

func newMCP(g *globals) *cobra.Command {
	var httpAddr string
	var inbox int
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve the bus to an MCP client (an AI agent) as one agent",
		Long: `Run a Model Context Protocol server that joins the daemon's bus as the agent --as
(default mcp-<pid>) and offers it as tools (send, request, reply, publish, subscribe,
unsubscribe, inbox, agents, stats, dead_letters) and resources (agentbus://agents,
agentbus://topics). An MCP client starts it as a subprocess and speaks MCP on its
stdin and stdout; with --http it serves streamable HTTP on a loopback address
instead, every session acting as the same agent.

Messages for the agent wait for the inbox tool: at most --inbox of them in this
process, the rest in the agent's mailbox in the daemon, where senders feel its
backpressure. Nothing is dropped: what no inbox call took when the server stops
is dead-lettered by the daemon. See docs/bridges.md for a client configuration.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkTimeout(); err != nil {
				return err
			}
			if inbox < 1 {
				return usagef("--inbox: %d, want at least 1", inbox)
			}
			if httpAddr != "" {
				if err := loopback(httpAddr); err != nil {
					return usagef("--http: %v", err)
				}
			}
			return runMCP(cmd.Context(), g, httpAddr, inbox)
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http", "", "serve streamable HTTP on this loopback address (e.g. 127.0.0.1:8765) instead of stdio")
	cmd.Flags().IntVar(&inbox, "inbox", 256, "deliveries held in this process for the inbox tool; the rest wait in the daemon")
	g.addAs(cmd, "the agent name to register (default mcp-<pid>)")
	g.addTimeout(cmd, "give up on connecting and registering after this long")
	return cmd
}

// loopback checks that addr is host:port with a loopback host: the HTTP
// server has no authentication of its own.
func loopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address (the MCP endpoint has no authentication)", host)
}

func runMCP(ctx context.Context, g *globals, httpAddr string, inbox int) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dctx, cancel := context.WithTimeout(ctx, min(g.timeout, 5*time.Second))
	c, err := client.Dial(dctx, g.socket, client.Options{Name: "agentbus-mcp", Logger: logger, AgentQueue: inbox})
	cancel()
	if err != nil {
		return unreachableError{explainf(err, "no daemon at %s (%s): is \"agentbus serve\" running?", g.socket, dialCause(err))}
	}
	defer c.Close()
	name := g.name
	if name == "" {
		name = fmt.Sprintf("mcp-%d", os.Getpid())
	}
	rctx, cancel := context.WithTimeout(ctx, g.timeout)
	s, err := mcpbus.New(rctx, c, mcpbus.Options{Agent: name, Logger: logger})
	cancel()
	if err != nil {
		return err
	}
	if httpAddr == "" {
		err = s.Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(g.stdin), Writer: nopWriteCloser{g.stdout}})
	} else {
		err = serveMCPHTTP(ctx, s, httpAddr, g.stderr)
	}
	if ctx.Err() != nil {
		return nil // a signal: a normal stop
	}
	return err
}

// serveMCPHTTP serves s over streamable HTTP on addr until ctx ends.
func serveMCPHTTP(ctx context.Context, s *mcpbus.Server, addr string, stderr io.Writer) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	fmt.Fprintf(stderr, "agentbus mcp: serving MCP on http://%s/ as %s\n", l.Addr(), s.Agent())
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// nopWriteCloser is an io.WriteCloser whose Close does nothing: stdout stays
// open after the session.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
