package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus/client"
)

// globals are the flags every command shares.
type globals struct {
	socket  string
	json    bool
	timeout time.Duration
	name    string

	stdin          io.Reader
	stdout, stderr io.Writer
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "agentbus",
		Short: "An actor-model message bus for AI agents: the daemon and its CLI",
		Long: `agentbus runs a message bus daemon on a Unix socket and talks to it.

Agents in any process (and any language: see PROTOCOL.md) connect to the daemon,
register names, and send, publish, subscribe, request and respond. Messages are
delivered in priority order, bounded by mailbox limits, and never silently lost:
what cannot be delivered goes to the dead-letter queue with a reason.

Exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 daemon unreachable.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.socket, "socket", DefaultSocketPath(), "the daemon's Unix socket (env AGENTBUS_SOCKET)")
	pf.BoolVar(&g.json, "json", false, "print JSON instead of human-readable output")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up on the daemon after this long")
	pf.StringVar(&g.name, "as", "", "the agent name this command registers, when it needs one (default cli-<pid>)")
	root.AddCommand(newServe(g), newSend(g), newPub(g), newSub(g), newReq(g), newStats(g), newDLQ(g), newHistory(g), newMCP(g))
	return root
}

// DefaultSocketPath is $AGENTBUS_SOCKET, else $XDG_RUNTIME_DIR/agentbus.sock,
// else /tmp/agentbus-$UID/agentbus.sock.
func DefaultSocketPath() string {
	if p := os.Getenv("AGENTBUS_SOCKET"); p != "" {
		return p
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "agentbus.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("agentbus-%d", os.Getuid()), "agentbus.sock")
}

// isCobraUsage recognizes cobra's own usage errors, which are plain errors.
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "accepts ") || strings.HasPrefix(s, "requires at least") ||
		strings.HasPrefix(s, "invalid argument")
}

// args wraps a cobra argument check so that its error means bad usage.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// dial connects to the daemon, without reconnecting: a CLI command is one
// session.
func (g *globals) dial(ctx context.Context) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, min(g.timeout, 5*time.Second))
	defer cancel()
	c, err := client.Dial(ctx, g.socket, client.Options{Name: "agentbus-cli", NoReconnect: true})
	if err != nil {
		return nil, unreachableError{fmt.Errorf("cannot reach the daemon at %s (is `agentbus serve` running?): %w", g.socket, err)}
	}
	return c, nil
}

// agentName is --as, or cli-<pid>.
func (g *globals) agentName() string {
	if g.name != "" {
		return g.name
	}
	return fmt.Sprintf("cli-%d", os.Getpid())
}
