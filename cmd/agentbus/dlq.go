package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/deadletter"
)

// reasons are the dead-letter reasons, for --reason.
func reasons() []string {
	out := make([]string, len(deadletter.Reasons))
	for i, r := range deadletter.Reasons {
		out[i] = string(r)
	}
	return out
}

// messageTypes are the message type names, for --type.
func messageTypes() []string {
	var out []string
	for t := agentbus.TypeDirect; t.Valid(); t++ {
		out = append(out, t.String())
	}
	return out
}

// parseSeq reads a dead letter's number.
func parseSeq(s string) (uint64, error) {
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || seq == 0 {
		return 0, usagef("SEQ: %q is not a dead letter's number (see the SEQ column of agentbus dlq list)", s)
	}
	return seq, nil
}

func newDLQ(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge dead letters",
		Long: `The dead-letter queue holds the messages the bus could not deliver, each with its reason
(no_recipient, no_subscribers, expired, mailbox_full, handler_error, …), the agent it was
for, and the error. It is bounded: the oldest letters are evicted first.`,
		Args: group,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDLQList(g), newDLQGet(g), newDLQReplay(g), newDLQPurge(g))
	return cmd
}

func newDLQList(g *globals) *cobra.Command {
	var filter client.LetterFilter
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List dead letters, oldest first",
		Example: `  agentbus dlq list --reason mailbox_full --limit 20`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if filter.Limit < 0 {
				return usagef("--limit: %d is negative", filter.Limit)
			}
			if filter.Reason != "" && !slices.Contains(reasons(), filter.Reason) {
				return usagef("--reason: %q is not one of %s", filter.Reason, strings.Join(reasons(), ", "))
			}
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				letters, err := call(ctx, g, func(ctx context.Context) ([]client.Letter, error) {
					return c.DeadLetters(ctx, filter)
				})
				if err != nil {
					return g.daemonErr(err, "list dead letters")
				}
				if g.json {
					if letters == nil {
						letters = []client.Letter{}
					}
					return g.printJSON(letters)
				}
				w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "SEQ\tTIME\tREASON\tAGENT\tMESSAGE\tERROR")
				for _, l := range letters {
					id := l.Value
					if l.Message != nil {
						id = l.Message.ID
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", l.Seq, l.Time.Local().Format("15:04:05.000"), l.Reason,
						dash(l.Agent), dash(id), dash(plainText(l.Error)))
				}
				if err := w.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "%d dead letter(s)\n", len(letters))
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&filter.Reason, "reason", "", "only this reason (no_subscribers, mailbox_full, expired, …)")
	f.StringVar(&filter.Agent, "agent", "", "only letters for this agent")
	f.StringVar(&filter.Topic, "topic", "", "only messages on this topic")
	f.IntVar(&filter.Limit, "limit", 100, "at most this many, newest kept")
	_ = cmd.RegisterFlagCompletionFunc("reason", cobra.FixedCompletions(reasons(), cobra.ShellCompDirectiveNoFileComp))
	g.addJSON(cmd, "print the letters as a JSON array")
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}

// plainText is plain for an error's text.
func plainText(s string) string {
	if s == "" {
		return ""
	}
	return plain(stringError(s))
}

type stringError string

func (e stringError) Error() string { return string(e) }

func newDLQGet(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get SEQ",
		Short: "Show one dead letter in full",
		Long: `Show dead letter SEQ (the SEQ column of "agentbus dlq list"): why it was not delivered,
for whom, when, after how many attempts, and the whole message.`,
		Example: `  agentbus dlq get 42
  agentbus dlq get 42 --json | jq .message.payload`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			seq, err := parseSeq(a[0])
			if err != nil {
				return err
			}
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				l, err := call(ctx, g, func(ctx context.Context) (client.Letter, error) { return c.DeadLetter(ctx, seq) })
				if err != nil {
					return g.daemonErr(err, fmt.Sprintf("dead letter %d", seq))
				}
				if g.json {
					return g.printJSON(l)
				}
				return printLetter(g.stdout, l)
			})
		},
	}
	g.addJSON(cmd, "print the letter as JSON")
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}

// printLetter writes l for humans: its fields, then its message as
// indented JSON.
func printLetter(out io.Writer, l client.Letter) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "seq\t%d\n", l.Seq)
	fmt.Fprintf(w, "reason\t%s\n", l.Reason)
	fmt.Fprintf(w, "time\t%s\n", l.Time.Local().Format(time.RFC3339Nano))
	fmt.Fprintf(w, "agent\t%s\n", dash(l.Agent))
	fmt.Fprintf(w, "error\t%s\n", dash(plainText(l.Error)))
	fmt.Fprintf(w, "attempts\t%d\n", l.Attempts)
	fmt.Fprintf(w, "replays\t%d\n", l.Replays)
	if l.Value != "" {
		fmt.Fprintf(w, "value\t%s\n", l.Value)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if l.Message == nil {
		return nil
	}
	data, err := json.MarshalIndent(l.Message, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "message\n%s\n", data)
	return err
}

func newDLQReplay(g *globals) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:     "replay SEQ",
		Short:   "Send a dead letter again",
		Long:    `Send dead letter SEQ again, to where it was going or to --to, and print the new message id.`,
		Example: `  agentbus dlq replay 42 --to backup-worker`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			seq, err := parseSeq(a[0])
			if err != nil {
				return err
			}
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				id, err := call(ctx, g, func(ctx context.Context) (string, error) { return c.Replay(ctx, seq, to) })
				if err != nil {
					return g.daemonErr(err, fmt.Sprintf("replay dead letter %d", seq))
				}
				return g.printID(id)
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "send to this agent instead")
	g.addJSON(cmd, `print {"message_id": …} instead of the id`)
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}

func newDLQPurge(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete every dead letter",
		Long: `Delete every letter in the dead-letter queue and print how many went. The counts by
reason in "agentbus stats" are kept. On a terminal it asks first; elsewhere it needs
--force.`,
		Example: `  agentbus dlq purge --force`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			interactive := !force && isTerminal(g.stdin) && g.tty
			if !force && !interactive {
				return usagef("dlq purge deletes every dead letter: add --force")
			}
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				if interactive {
					st, err := call(ctx, g, c.Stats)
					if err != nil {
						return g.daemonErr(err, "purge dead letters")
					}
					fmt.Fprintf(g.stderr, "Delete the %d dead letter(s) the daemon holds? [y/N] ", st.DeadLetters.Held)
					line, _ := bufio.NewReader(g.stdin).ReadString('\n')
					if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
						fmt.Fprintln(g.stderr, "agentbus: nothing purged")
						return nil
					}
				}
				n, err := call(ctx, g, c.PurgeDeadLetters)
				if err != nil {
					return g.daemonErr(err, "purge dead letters")
				}
				if g.json {
					return g.printJSON(map[string]int{"purged": n})
				}
				_, err = fmt.Fprintf(g.stdout, "purged %d dead letter(s)\n", n)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask")
	g.addJSON(cmd, `print {"purged": n}`)
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}

func newHistory(g *globals) *cobra.Command {
	var q client.HistoryQuery
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show recently accepted messages, newest first",
		Long: `Show the messages the bus accepted, newest first. The daemon keeps them only when
started with --history.`,
		Example: `  agentbus history --topic 'progress.>' --limit 20`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.Limit < 0 {
				return usagef("--limit: %d is negative", q.Limit)
			}
			if q.Type != "" {
				if _, err := actors.ParseMessageType(q.Type); err != nil {
					return usagef("--type: %q is not one of %s", q.Type, strings.Join(messageTypes(), ", "))
				}
			}
			return g.session(cmd, func(ctx context.Context, c *client.Client, _ string) error {
				msgs, err := call(ctx, g, func(ctx context.Context) ([]*agentbus.Message, error) { return c.History(ctx, q) })
				if err != nil {
					return g.daemonErr(err, "history")
				}
				if g.json {
					if msgs == nil {
						msgs = []*agentbus.Message{}
					}
					return g.printJSON(msgs)
				}
				if len(msgs) == 0 {
					fmt.Fprintln(g.stderr, "no messages (the daemon keeps a history only when started with --history)")
					return nil
				}
				w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "TIME\tTYPE\tSENDER\tTO\tPRIO\tID")
				for _, m := range msgs {
					dest := m.Recipient
					if m.Topic != "" {
						dest = m.Topic
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", m.Timestamp.Local().Format("15:04:05.000"), m.Type,
						dash(m.Sender), dash(dest), m.Priority, m.ID)
				}
				return w.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Sender, "sender", "", "only from this agent")
	f.StringVar(&q.Recipient, "recipient", "", "only to this agent")
	f.StringVar(&q.Topic, "topic", "", "only on this topic (a subject or pattern)")
	f.StringVar(&q.Type, "type", "", "only of this type")
	f.IntVar(&q.Limit, "limit", 50, "at most this many")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(messageTypes(), cobra.ShellCompDirectiveNoFileComp))
	g.addJSON(cmd, "print the messages as a JSON array")
	g.addTimeout(cmd, "give up on the daemon after this long")
	return cmd
}
