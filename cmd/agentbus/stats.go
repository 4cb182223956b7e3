package main

import (
	"context"
	"encoding/json"
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
	var clusterWide bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show the bus's statistics",
		Long: `Show the daemon's statistics: message totals, backlog, delivery latency, dead letters
by reason, and per agent, topic, sender and message type. --json prints the snapshot
as the daemon sent it. --cluster asks a cluster node's daemon for every node's: one
line per node (its ledger, links and dead letters), then the cluster's sum.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				if clusterWide {
					cs, err := call(ctx, g, c.ClusterStats)
					if err != nil {
						return g.daemonErr(err, "cluster stats")
					}
					if g.json {
						return json.NewEncoder(g.stdout).Encode(cs)
					}
					return printClusterStats(g.stdout, cs)
				}
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
	cmd.Flags().BoolVar(&clusterWide, "cluster", false, "every cluster node's statistics (the daemon must be a cluster node)")
	g.addJSON(cmd, "print the daemon's snapshot as JSON")
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}

// printClusterStats writes one line per node and the cluster's ledger.
func printClusterStats(out io.Writer, cs agentbus.ClusterStats) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "agentbus cluster statistics at %s: %d nodes\n\n", cs.Time.Local().Format(time.DateTime), len(cs.Nodes))
	fmt.Fprintln(w, "NODE\tAGENTS\tACCEPTED\tHANDLED\tDEAD\tIN FLIGHT\tTO PEERS\tCONFIRMED\tUNDELIVERED\tFROM PEERS\tDEAD LETTERS")
	for _, n := range cs.Nodes {
		l := n.Stats.Ledger
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", n.Member.Name, len(n.Stats.Agents), l.Accepted,
			l.Handled, l.DeadLettered, l.InFlight, n.Links.Sent, n.Links.Confirmed, n.Links.Undelivered, n.Links.Received,
			counts(n.Stats.DeadLetters.ByReason))
	}
	l := cs.Ledger
	fmt.Fprintf(w, "(cluster)\t\t%d\t%d\t%d\t%d\t\t\t\t\tbalanced: %v\n", l.Accepted, l.Handled, l.DeadLettered, l.InFlight,
		l.Balanced())
	for _, id := range cs.Missing {
		fmt.Fprintf(w, "%s\tdid not answer\n", id)
	}
	return w.Flush()
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
