package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus/client"
)

// globals are the flags and streams the commands share. Only --socket is
// a flag of every command; the others are added by the commands they mean
// something to (see addJSON, addTimeout, addAs).
type globals struct {
	socket  string
	json    bool
	timeout time.Duration
	name    string

	stdin          io.Reader
	stdout, stderr io.Writer
	// tty: stderr is a terminal, so waits are shown there (see waiting).
	tty bool
}

const rootLong = `agentbus runs a message bus for AI agents as a daemon on a Unix socket, and talks to it.

Agents in any process and any language (see PROTOCOL.md) connect to the daemon, register
names, and send, publish, subscribe, request and respond. Messages are delivered in
priority order from bounded mailboxes and are never silently lost: what cannot be
delivered goes to the dead-letter queue, with a reason.

Common flows:

  Run the daemon (--history keeps what "agentbus history" shows):
    agentbus serve --history

  Watch a topic in one terminal, publish on it from another:
    agentbus sub 'progress.>'
    agentbus pub progress.build '{"done":50}'

  Ask an agent and print its answer; send it a message:
    agentbus req worker '{"task":"lint"}'
    agentbus send worker '{"task":"lint"}' --priority 90 --ttl 5s

  See what is going on:
    agentbus ping                   # is the daemon there, and how fast
    agentbus agents                 # who is connected, how much is queued
    agentbus stats                  # totals, latency, dead letters by reason

  Find what was not delivered, and send it again:
    agentbus dlq list --reason no_recipient
    agentbus dlq get 42
    agentbus dlq replay 42 --to backup-worker

  Let an MCP-capable AI agent join the bus as an agent (see docs/bridges.md):
    agentbus mcp --as assistant

Payloads are JSON ('{"a":1}', '[1,2]', '"text"', 42, true). Text that does not start like
JSON is sent as a JSON string; text that starts with {, [ or " but does not parse is
refused, so that a typo is not sent as a string; --raw sends any text as a JSON string.
"-" reads the payload from standard input.

The socket is --socket, else $AGENTBUS_SOCKET, else $XDG_RUNTIME_DIR/agentbus.sock,
else /tmp/agentbus-$UID/agentbus.sock.

Exit status:
  0  done
  1  the operation failed: the daemon refused it, or it timed out (the message says why)
  2  bad usage: an unknown command or flag, a bad argument, payload or config
  3  the daemon could not be reached, or the connection to it was lost

Shell completion: see "agentbus completion --help". Full reference: docs/cli.md.`

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr, tty: isTerminal(stderr)}
	root := &cobra.Command{
		Use:           "agentbus",
		Short:         "A message bus for AI agents: the daemon and its CLI",
		Long:          rootLong,
		SilenceUsage:  true,
		SilenceErrors: true,
		// agentbus alone prints this help; agentbus bogus is bad usage.
		Args: group,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.CompletionOptions.DisableDefaultCmd = true // ours refuses unknown shells with exit code 2
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.socket, "socket", DefaultSocketPath(), "the daemon's Unix socket")
	root.AddGroup(&cobra.Group{ID: "msg", Title: "Messages:"}, &cobra.Group{ID: "look", Title: "Inspection:"},
		&cobra.Group{ID: "run", Title: "The daemon and the CLI:"})
	for _, c := range []*cobra.Command{newSend(g), newPub(g), newSub(g), newReq(g)} {
		c.GroupID = "msg"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newAgents(g), newStats(g), newDLQ(g), newHistory(g), newPing(g)} {
		c.GroupID = "look"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newServe(g), newMCP(g), newVersion(g), newCompletion(root)} {
		c.GroupID = "run"
		root.AddCommand(c)
	}
	root.SetHelpCommandGroupID("run")
	// A command that groups others runs only to print its help: its usage
	// shows "[command]", not "[flags]".
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}",
		"{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	return root
}

// group is the argument check of a command that only groups others: no
// argument (it then prints its help), or else bad usage naming the unknown
// subcommand. Cobra itself would print the help and succeed.
func group(cmd *cobra.Command, a []string) error {
	if len(a) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", a[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only on its own path
	}
	if s := cmd.SuggestionsFor(a[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usageError{fmt.Errorf("%s; run '%s --help' for the list", msg, cmd.CommandPath())}
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

// args wraps a cobra argument check so that its error means bad usage.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// addJSON adds --json to cmd.
func (g *globals) addJSON(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVar(&g.json, "json", false, what)
}

// addTimeout adds --timeout to cmd.
func (g *globals) addTimeout(cmd *cobra.Command, what string) {
	cmd.Flags().DurationVar(&g.timeout, "timeout", 30*time.Second, what)
}

// addAs adds --as to cmd.
func (g *globals) addAs(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&g.name, "as", "", what)
}

// checkTimeout refuses a --timeout that is not positive.
func (g *globals) checkTimeout() error {
	if g.timeout <= 0 {
		return usagef("--timeout: %v is not a positive duration", g.timeout)
	}
	return nil
}

// dialTimeout bounds connecting and saying hello.
const dialTimeout = 5 * time.Second

// dial connects to the daemon for a one-shot command: without reconnecting,
// so that a daemon that goes away fails the command at once.
func (g *globals) dial(ctx context.Context) (*client.Client, error) {
	return g.dialWith(ctx, client.Options{NoReconnect: true})
}

// dialWith connects to the daemon with opts (its Name set here).
func (g *globals) dialWith(ctx context.Context, opts client.Options) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, min(max(g.timeout, time.Second), dialTimeout))
	defer cancel()
	opts.Name = "agentbus-cli"
	c, err := client.Dial(ctx, g.socket, opts)
	if err != nil {
		return nil, unreachableError{explainf(err, "no daemon at %s (%s): is \"agentbus serve\" running?", g.socket, dialCause(err))}
	}
	return c, nil
}

// dialCause says in words why connecting to the socket failed.
func dialCause(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return "the socket does not exist"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens on the socket"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "permission denied"
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("it did not answer within %v", dialTimeout)
	default:
		return plain(err)
	}
}

// agentName is --as, or cli-<pid>.
func (g *globals) agentName() string {
	if g.name != "" {
		return g.name
	}
	return fmt.Sprintf("cli-%d", os.Getpid())
}
