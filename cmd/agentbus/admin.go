package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/protocol"
)

// modulePath is the module the CLI belongs to.
const modulePath = "github.com/descartes/agentbus"

// moduleVersion is the version the binary was built from, as the go
// command stamped it (a tag, or a pseudo-version from the VCS), else
// "(devel)".
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "(devel)"
	case dirty:
		return "(devel " + rev + ", modified)"
	default:
		return "(devel " + rev + ")"
	}
}

// versionInfo is what version prints.
type versionInfo struct {
	Version  string      `json:"version"`
	Module   string      `json:"module"`
	Go       string      `json:"go"`
	Protocol int         `json:"protocol"`
	Daemon   *daemonInfo `json:"daemon"` // null when no daemon answers
}

type daemonInfo struct {
	Server   string `json:"server"`
	Protocol int    `json:"protocol"`
	Socket   string `json:"socket"`
}

// versionDial bounds how long version looks for the daemon.
const versionDial = time.Second

func newVersion(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of the CLI, its protocol and the daemon",
		Long: `Print the module version the CLI was built from, the Go version, the protocol version
it speaks, and, when a daemon answers at the socket within a second, the daemon's name
and the protocol version the two agree on. No daemon is not an error here.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo{Version: moduleVersion(), Module: modulePath, Go: runtime.Version(), Protocol: protocol.Version}
			ctx, cancel := context.WithTimeout(cmd.Context(), versionDial)
			defer cancel()
			var daemonLine string
			if c, err := client.Dial(ctx, g.socket, client.Options{Name: "agentbus-cli", NoReconnect: true}); err == nil {
				name, pv := c.Server()
				_ = c.Close()
				v.Daemon = &daemonInfo{Server: name, Protocol: pv, Socket: g.socket}
				daemonLine = fmt.Sprintf("%s, protocol %d, at %s", name, pv, g.socket)
			} else {
				daemonLine = fmt.Sprintf("none at %s (%s)", g.socket, dialCause(err))
			}
			if g.json {
				return g.printJSON(v)
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "agentbus\t%s (%s)\n", v.Version, v.Module)
			fmt.Fprintf(w, "go\t%s\n", v.Go)
			fmt.Fprintf(w, "protocol\t%d\n", v.Protocol)
			fmt.Fprintf(w, "daemon\t%s\n", daemonLine)
			return w.Flush()
		},
	}
	g.addJSON(cmd, "print the versions as JSON")
	return cmd
}

// pingResult is what ping --json prints.
type pingResult struct {
	Server    string    `json:"server"`
	Protocol  int       `json:"protocol"`
	Socket    string    `json:"socket"`
	ConnectUS float64   `json:"connect_us"` // connect and hello
	RTTUS     []float64 `json:"rtt_us"`     // each ping's round trip
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func newPing(g *globals) *cobra.Command {
	var count int
	cmd := &cobra.Command{
		Use:   "ping",
		Short: "Check that the daemon answers, and measure the round trip",
		Long: `Connect to the daemon, say hello, and ping it --count times, printing each round trip
(like "nats rtt"). It fails with exit status 3 when no daemon answers at the socket.`,
		Example: `  agentbus ping
  agentbus ping -c 10`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 1 {
				return usagef("--count: %d is not a positive number", count)
			}
			if err := g.checkTimeout(); err != nil {
				return err
			}
			start := time.Now()
			c, err := g.dial(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			r := pingResult{Socket: g.socket, ConnectUS: micros(time.Since(start))}
			r.Server, r.Protocol = c.Server()
			var rtts []time.Duration
			for range count {
				d, err := call(cmd.Context(), g, c.Ping)
				if err != nil {
					return g.daemonErr(err, "ping")
				}
				rtts = append(rtts, d)
				r.RTTUS = append(r.RTTUS, micros(d))
				if !g.json {
					fmt.Fprintf(g.stdout, "pong from %s at %s: time=%v\n", r.Server, g.socket, d)
				}
			}
			if g.json {
				return g.printJSON(r)
			}
			if count > 1 {
				var sum time.Duration
				for _, d := range rtts {
					sum += d
				}
				fmt.Fprintf(g.stdout, "%d pings: min/avg/max = %v/%v/%v\n", count, slices.Min(rtts),
					sum/time.Duration(count), slices.Max(rtts))
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&count, "count", "c", 1, "how many pings")
	g.addJSON(cmd, "print the result as JSON")
	g.addTimeout(cmd, "give up on each pong after this long")
	return cmd
}

func newAgents(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agents",
		Short: "List the agents, with their queue depths",
		Long: `List every agent registered with the daemon, sorted by name: the messages queued in
its mailbox now and the mailbox's capacity, the messages it received, handled and
failed, its restarts, and when it last finished a message.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				st, err := call(ctx, g, c.Stats)
				if err != nil {
					return g.daemonErr(err, "agents")
				}
				if g.json {
					return g.printJSON(st.Agents)
				}
				return printAgents(g, st.Agents)
			})
		},
	}
	g.addJSON(cmd, "print the agents as a JSON array")
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}

// printAgents writes the agents' table, and their number on stderr.
func printAgents(g *globals, agents []agentbus.AgentStats) error {
	if len(agents) == 0 {
		fmt.Fprintln(g.stderr, "no agents are registered")
		return nil
	}
	if err := agentsTable(g.stdout, agents); err != nil {
		return err
	}
	fmt.Fprintf(g.stderr, "%d agent(s)\n", len(agents))
	return nil
}

// agentsTable writes one line per agent: its queue depth and counts.
func agentsTable(out io.Writer, agents []agentbus.AgentStats) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "AGENT\tQUEUED\tCAP\tRECEIVED\tHANDLED\tFAILED\tRESTARTS\tLAST ACTIVE")
	for _, a := range agents {
		last := "-"
		if !a.LastActive.IsZero() {
			last = a.LastActive.Local().Format("15:04:05.000")
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", a.Name, a.Queued, a.Capacity, a.Received, a.Handled,
			a.Failed, a.Restarts, last)
	}
	return w.Flush()
}

// shells are the shells completion writes scripts for.
var shells = []string{"bash", "zsh", "fish", "powershell"}

func newCompletion(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print the shell completion script",
		Long: `Print the script that makes the shell complete agentbus's commands, flags and their
values (dead-letter reasons, message types, shells).

  bash (needs the bash-completion package):
    source <(agentbus completion bash)                       # this shell
    agentbus completion bash > /etc/bash_completion.d/agentbus

  zsh (with "autoload -U compinit; compinit" in ~/.zshrc):
    agentbus completion zsh > "${fpath[1]}/_agentbus"

  fish:
    agentbus completion fish > ~/.config/fish/completions/agentbus.fish

  PowerShell:
    agentbus completion powershell | Out-String | Invoke-Expression`,
		ValidArgs: shells,
		Args: args(func(cmd *cobra.Command, a []string) error {
			if len(a) != 1 || !slices.Contains(shells, a[0]) {
				return fmt.Errorf("completion takes one shell: %s", strings.Join(shells, ", "))
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, a []string) error {
			out := cmd.OutOrStdout()
			switch a[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			default:
				return root.GenPowerShellCompletionWithDesc(out)
			}
		},
	}
}
