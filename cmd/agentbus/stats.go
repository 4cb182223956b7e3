package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
)

func newStats(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show the bus's statistics",
		Long: `Show the daemon's statistics: message totals, backlog, delivery latency, dead letters
by reason, and per agent, topic, sender and message type. --json prints the snapshot
as the daemon sent it.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				if g.json {
					raw, err := call(ctx, g, c.StatsJSON)
					if err != nil {
						return g.daemonErr(err, "stats")
					}
					_, err = fmt.Fprintf(g.stdout, "%s\n", raw)
					return err
				}
				st, err := call(ctx, g, c.Stats)
				if err != nil {
					return g.daemonErr(err, "stats")
				}
				return printStats(g.stdout, st)
			})
		},
	}
	g.addJSON(cmd, "print the daemon's snapshot as JSON")
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}

// printStats writes st for humans.
func printStats(out io.Writer, st agentbus.Stats) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	t := st.Totals
	fmt.Fprintf(w, "agentbus statistics at %s\n\n", st.Time.Local().Format(time.DateTime))
	fmt.Fprintf(w, "messages\tsent %d\tdelivered %d\tfailed %d\texpired %d\tdead-lettered %d\trejected %d\n",
		t.Sent, t.Delivered, t.Failed, t.Expired, t.DeadLettered, t.Rejected)
	fmt.Fprintf(w, "backlog\tpending %d/%d\trequests %d\tretries %d\n",
		st.Backpressure.Pending, st.Backpressure.MaxPending, st.PendingRequests, st.PendingRetries)
	if st.Latency.Count > 0 {
		fmt.Fprintf(w, "latency\tp50 %v\tp99 %v\tmessages %d\n",
			st.Latency.Quantile(0.5), st.Latency.Quantile(0.99), st.Latency.Count)
	}
	if len(st.DeadLetters.ByReason) > 0 {
		fmt.Fprintf(w, "dead letters\t%s\n", counts(st.DeadLetters.ByReason))
	}
	if len(st.Rejected) > 0 {
		fmt.Fprintf(w, "rejected\t%s\n", counts(st.Rejected))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(st.Agents) > 0 {
		fmt.Fprintln(out)
		if err := agentsTable(out, st.Agents); err != nil {
			return err
		}
	}
	types := make(map[string]uint64, len(st.Types))
	for k, v := range st.Types {
		types[k.String()] = v
	}
	for _, table := range []struct {
		title string
		rows  map[string]uint64
	}{{"TOPIC", st.Topics.Map()}, {"SENDER", st.Senders.Map()}, {"TYPE", types}} {
		if !slices.ContainsFunc(slices.Collect(maps.Values(table.rows)), func(n uint64) bool { return n != 0 }) {
			continue
		}
		fmt.Fprintln(out)
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "%s\tMESSAGES\n", table.title)
		for _, k := range slices.Sorted(maps.Keys(table.rows)) {
			if table.rows[k] == 0 {
				continue
			}
			name := k
			if name == "" {
				name = "(anonymous)"
			}
			fmt.Fprintf(w, "%s\t%d\n", name, table.rows[k])
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// counts formats a map as "k1 n1, k2 n2" sorted by key, leaving out zeros
// ("none" if all are zero).
func counts[K ~string](m map[K]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
