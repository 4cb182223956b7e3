package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/client"
)

// payloadArg turns a command-line payload into JSON: "-" reads stdin; text
// that is valid JSON is taken as is; anything else becomes a JSON string.
func payloadArg(g *globals, arg string) (json.RawMessage, error) {
	if arg == "-" {
		data, err := io.ReadAll(io.LimitReader(g.stdin, agentbus.DefaultMaxMessageSize+1))
		if err != nil {
			return nil, fmt.Errorf("read payload from stdin: %w", err)
		}
		arg = strings.TrimSpace(string(data))
	}
	if json.Valid([]byte(arg)) {
		return json.RawMessage(arg), nil
	}
	s, _ := json.Marshal(arg)
	return s, nil
}

// msgFlags are the message fields send, pub and req can set.
type msgFlags struct {
	priority int
	ttl      time.Duration
	ack      bool
	corr     string
}

func (m *msgFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVarP(&m.priority, "priority", "p", 50, "priority 0-100, higher first")
	f.DurationVar(&m.ttl, "ttl", 0, "drop the message (dead letter: expired) if not delivered within this")
	f.BoolVar(&m.ack, "ack", false, "require an acknowledgement (redelivered until acked)")
	f.StringVar(&m.corr, "correlation-id", "", "correlation id")
}

func (m *msgFlags) apply(msg *agentbus.Message) error {
	if m.priority < 0 || m.priority > actors.MaxPriority {
		return usagef("--priority: %d is not in 0..%d", m.priority, actors.MaxPriority)
	}
	if m.ttl < 0 {
		return usagef("--ttl: negative")
	}
	msg.Priority = uint8(m.priority)
	msg.TTL = m.ttl
	msg.RequiresAck = m.ack
	msg.CorrelationID = m.corr
	return nil
}

// message builds a message of type t whose payload is the command-line
// argument arg (see payloadArg), with the flags' fields.
func (m *msgFlags) message(g *globals, t agentbus.MessageType, arg string) (*agentbus.Message, error) {
	payload, err := payloadArg(g, arg)
	if err != nil {
		return nil, err
	}
	msg := agentbus.NewMessage(t, "", payload)
	if err := m.apply(msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// sendOne runs a session that hands msg, sent as --as if given, to do
// (Send or PublishMessage) and prints the message's ID.
func (g *globals) sendOne(cmd *cobra.Command, msg *agentbus.Message,
	do func(*client.Client, context.Context, *agentbus.Message) (string, error)) error {
	return g.session(cmd, false, nil, func(ctx context.Context, c *client.Client, agent string) error {
		msg.Sender = agent
		ctx, cancel := context.WithTimeout(ctx, g.timeout)
		defer cancel()
		id, err := do(c, ctx, msg)
		if err != nil {
			return err
		}
		return g.printID(id)
	})
}

// printID prints a message ID: a line, or {"message_id": …} with --json.
func (g *globals) printID(id string) error {
	if g.json {
		return g.printJSON(map[string]string{"message_id": id})
	}
	_, err := fmt.Fprintln(g.stdout, id)
	return err
}

// session dials the daemon, registers --as when asked (or when need is
// set), runs fn, and closes.
func (g *globals) session(cmd *cobra.Command, need bool, h agentbus.Handler,
	fn func(ctx context.Context, c *client.Client, agent string) error) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	agent := ""
	if need || g.name != "" {
		agent = g.agentName()
		if h == nil {
			h = agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil })
		}
		rctx, cancel := context.WithTimeout(ctx, g.timeout)
		err := c.Register(rctx, agent, h)
		cancel()
		if err != nil {
			return fmt.Errorf("register %q: %w", agent, err)
		}
	}
	return fn(ctx, c, agent)
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	return enc.Encode(v)
}

func newSend(g *globals) *cobra.Command {
	var mf msgFlags
	var to, typ string
	cmd := &cobra.Command{
		Use:   "send --to AGENT PAYLOAD",
		Short: "Send a direct message to an agent",
		Long: `Send a message to the agent named by --to and print its id once the bus accepted it.
PAYLOAD is JSON; text that is not JSON is sent as a JSON string; "-" reads stdin.
With --as NAME the command registers NAME for the duration and sends as it.`,
		Example: `  agentbus send --to coder '{"task":"lint","file":"main.go"}'
  agentbus send --to coder -p 90 --ttl 5s 'urgent'`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if to == "" {
				return usagef("--to is required")
			}
			t, err := actors.ParseMessageType(typ)
			if err != nil {
				return usagef("--type: %v", err)
			}
			msg, err := mf.message(g, t, a[0])
			if err != nil {
				return err
			}
			msg.Recipient = to
			return g.sendOne(cmd, msg, (*client.Client).Send)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the recipient agent (required)")
	cmd.Flags().StringVar(&typ, "type", "direct", "message type: direct, heartbeat, control, error or broadcast")
	mf.add(cmd)
	return cmd
}

func newPub(g *globals) *cobra.Command {
	var mf msgFlags
	cmd := &cobra.Command{
		Use:     "pub TOPIC PAYLOAD",
		Short:   "Publish a message on a topic",
		Long:    `Publish PAYLOAD on TOPIC (a dot-separated subject) and print the message id.`,
		Example: `  agentbus pub progress.build '{"done":50}'`,
		Args:    args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			msg, err := mf.message(g, agentbus.TypePublish, a[1])
			if err != nil {
				return err
			}
			msg.Topic = a[0]
			return g.sendOne(cmd, msg, (*client.Client).PublishMessage)
		},
	}
	mf.add(cmd)
	return cmd
}

func newSub(g *globals) *cobra.Command {
	var count int
	cmd := &cobra.Command{
		Use:   "sub PATTERN...",
		Short: "Subscribe and print messages as they arrive",
		Long: `Register an agent (--as, default cli-<pid>), subscribe it to each PATTERN (a subject,
or a pattern with * for one token and > for the rest), and print every message it
receives until interrupted or --count messages arrived. Messages sent directly to the
agent are printed too.`,
		Example: `  agentbus sub 'progress.>'
  agentbus sub --json --count 1 tasks.done`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, patterns []string) error {
			if count < 0 {
				return usagef("--count: negative")
			}
			got := make(chan *agentbus.Message, 64)
			h := agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
				select {
				case got <- m:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			return g.session(cmd, true, h, func(ctx context.Context, c *client.Client, agent string) error {
				for _, p := range patterns {
					sctx, cancel := context.WithTimeout(ctx, g.timeout)
					err := c.Subscribe(sctx, agent, p)
					cancel()
					if err != nil {
						return fmt.Errorf("subscribe %q: %w", p, err)
					}
				}
				if !g.json {
					fmt.Fprintf(g.stderr, "agentbus: %s subscribed to %s; ^C to stop\n", agent, strings.Join(patterns, ", "))
				}
				for n := 0; count == 0 || n < count; n++ {
					select {
					case m := <-got:
						if err := g.printMessage(m); err != nil {
							return err
						}
					case <-ctx.Done():
						return nil
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVarP(&count, "count", "n", 0, "exit after this many messages (0: run until interrupted)")
	return cmd
}

// printMessage prints one received message: a JSON line with --json, else
// "time  topic|recipient  from sender  p=priority  payload".
func (g *globals) printMessage(m *agentbus.Message) error {
	if g.json {
		return g.printJSON(m)
	}
	where := m.Topic
	if where == "" {
		where = "@" + m.Recipient
	}
	from := m.Sender
	if from == "" {
		from = "-"
	}
	_, err := fmt.Fprintf(g.stdout, "%s  %-20s  from %-12s  p=%-3d  %s\n", m.Timestamp.Local().Format("15:04:05.000"),
		where, from, m.Priority, m.Payload)
	return err
}

func newReq(g *globals) *cobra.Command {
	var mf msgFlags
	var to string
	cmd := &cobra.Command{
		Use:   "req --to AGENT PAYLOAD",
		Short: "Send a request and print the response",
		Long: `Send PAYLOAD as a request to the agent named by --to, wait for its response (up to
--timeout) and print the response's payload (the whole message with --json).`,
		Example: `  agentbus req --to worker '{"task":"lint"}'`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			if to == "" {
				return usagef("--to is required")
			}
			msg, err := mf.message(g, agentbus.TypeRequest, a[0])
			if err != nil {
				return err
			}
			msg.Recipient = to
			return g.session(cmd, false, nil, func(ctx context.Context, c *client.Client, agent string) error {
				msg.Sender = agent
				ctx, cancel := context.WithTimeout(ctx, g.timeout)
				defer cancel()
				resp, err := c.Request(ctx, msg)
				if err != nil {
					return err
				}
				if g.json {
					return g.printJSON(resp)
				}
				fmt.Fprintf(g.stdout, "%s\n", resp.Payload)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the agent to ask (required)")
	mf.add(cmd)
	return cmd
}

func newDLQ(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect and replay dead letters",
		Args:  args(cobra.NoArgs),
	}
	var filter client.LetterFilter
	list := &cobra.Command{
		Use:     "list",
		Short:   "List dead letters, oldest first",
		Example: `  agentbus dlq list --reason mailbox_full --limit 20`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if filter.Limit < 0 {
				return usagef("--limit: negative")
			}
			return g.session(cmd, false, nil, func(ctx context.Context, c *client.Client, _ string) error {
				ctx, cancel := context.WithTimeout(ctx, g.timeout)
				defer cancel()
				letters, err := c.DeadLetters(ctx, filter)
				if err != nil {
					return err
				}
				if g.json {
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
						dash(l.Agent), dash(id), dash(l.Error))
				}
				if err := w.Flush(); err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "%d dead letter(s)\n", len(letters))
				return nil
			})
		},
	}
	lf := list.Flags()
	lf.StringVar(&filter.Reason, "reason", "", "only this reason (e.g. mailbox_full, expired, transport_closed)")
	lf.StringVar(&filter.Agent, "agent", "", "only letters for this agent")
	lf.StringVar(&filter.Topic, "topic", "", "only messages on this topic")
	lf.IntVar(&filter.Limit, "limit", 100, "at most this many, newest kept")
	var to string
	replay := &cobra.Command{
		Use:     "replay SEQ",
		Short:   "Send a dead letter again",
		Long:    `Send dead letter SEQ again, to where it was going or to --to, and print the new message id.`,
		Example: `  agentbus dlq replay 42 --to backup-worker`,
		Args:    args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			seq, err := strconv.ParseUint(a[0], 10, 64)
			if err != nil || seq == 0 {
				return usagef("SEQ: %q is not a dead letter number", a[0])
			}
			return g.session(cmd, false, nil, func(ctx context.Context, c *client.Client, _ string) error {
				ctx, cancel := context.WithTimeout(ctx, g.timeout)
				defer cancel()
				id, err := c.Replay(ctx, seq, to)
				if err != nil {
					return err
				}
				return g.printID(id)
			})
		},
	}
	replay.Flags().StringVar(&to, "to", "", "send to this agent instead")
	cmd.AddCommand(list, replay)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
				return usagef("--limit: negative")
			}
			if q.Type != "" {
				if _, err := actors.ParseMessageType(q.Type); err != nil {
					return usagef("--type: %v", err)
				}
			}
			return g.session(cmd, false, nil, func(ctx context.Context, c *client.Client, _ string) error {
				ctx, cancel := context.WithTimeout(ctx, g.timeout)
				defer cancel()
				msgs, err := c.History(ctx, q)
				if err != nil {
					return err
				}
				if g.json {
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
	return cmd
}
