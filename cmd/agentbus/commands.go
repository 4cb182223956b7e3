package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/topics"
)

// session checks --timeout, dials the daemon for a one-shot command,
// registers --as when given, runs fn, and closes. SIGINT and SIGTERM end
// ctx.
func (g *globals) session(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client, agent string) error) error {
	if err := g.checkTimeout(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	agent := ""
	if g.name != "" {
		agent = g.name
		if err := g.register(ctx, c, agent, agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error {
			return nil
		})); err != nil {
			return err
		}
	}
	return fn(ctx, c, agent)
}

// register registers agent with handler h, within --timeout.
func (g *globals) register(ctx context.Context, c *client.Client, agent string, h agentbus.Handler) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	err := c.Register(ctx, agent, h)
	switch {
	case errors.Is(err, agentbus.ErrAgentExists):
		return explainf(err, "register %q: another client has an agent of that name; pick another with --as", agent)
	case errors.Is(err, agentbus.ErrInvalidAgent):
		return usageError{explainf(err, "--as: %q is not a valid agent name (%s)", agent, plain(err))}
	}
	return g.daemonErr(err, fmt.Sprintf("register %q", agent))
}

// call runs one operation on the daemon within --timeout.
func call[T any](ctx context.Context, g *globals, op func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	return op(ctx)
}

// printID prints a message ID: a line, or {"message_id": …} with --json.
func (g *globals) printID(id string) error {
	if g.json {
		return g.printJSON(map[string]string{"message_id": id})
	}
	_, err := fmt.Fprintln(g.stdout, id)
	return err
}

func (g *globals) printJSON(v any) error {
	return json.NewEncoder(g.stdout).Encode(v)
}

// target returns the agent and the payload of send and req: --to AGENT
// PAYLOAD, or AGENT PAYLOAD.
func target(to string, a []string) (agent, payload string, err error) {
	switch {
	case to != "" && len(a) == 1:
		return to, a[0], nil
	case to == "" && len(a) == 2:
		return a[0], a[1], nil
	case to != "":
		return "", "", usagef("with --to, give only the PAYLOAD (got %d arguments)", len(a))
	default:
		return "", "", usagef("give AGENT and PAYLOAD (or --to AGENT and PAYLOAD); got %d argument(s)", len(a))
	}
}

// sendTypes are the types send may give a message: the others have their
// own command (pub, req) or are the bus's own.
var sendTypes = []string{"direct", "heartbeat", "control", "error", "broadcast"}

func newSend(g *globals) *cobra.Command {
	var mf msgFlags
	var to, typ string
	cmd := &cobra.Command{
		Use:   "send AGENT PAYLOAD",
		Short: "Send a message to an agent",
		Long: `Send PAYLOAD to the agent AGENT (or --to AGENT) and print the message's id once the
bus has accepted it. When the agent's mailbox is full the command waits for room, with
backoff, up to the daemon's backpressure timeout or --timeout; on a terminal it shows
that it waits. With --as NAME the command registers NAME for the duration and sends as it.

PAYLOAD is JSON; text that does not start like JSON is sent as a JSON string, text that
starts like JSON but does not parse is refused (--raw sends any text as a string); "-"
reads stdin.`,
		Example: `  agentbus send coder '{"task":"lint","file":"main.go"}'
  agentbus send coder -p 90 --ttl 5s 'urgent'
  agentbus send --to coder --type control '{"cmd":"pause"}'
  jq -c . task.json | agentbus send coder -`,
		Args: args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			agent, payload, err := target(to, a)
			if err != nil {
				return err
			}
			if !slices.Contains(sendTypes, typ) {
				return usagef("--type: %q is not one of %v", typ, sendTypes)
			}
			t, _ := actors.ParseMessageType(typ)
			msg, err := mf.message(g, t, payload)
			if err != nil {
				return err
			}
			msg.Recipient = agent
			return g.session(cmd, func(ctx context.Context, c *client.Client, as string) error {
				msg.Sender = as
				stop := g.waiting(fmt.Sprintf("room in the mailbox of %q", agent))
				id, err := call(ctx, g, func(ctx context.Context) (string, error) { return c.Send(ctx, msg) })
				stop()
				if err != nil {
					return g.sendErr(err, agent)
				}
				return g.printID(id)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "the recipient agent (instead of the AGENT argument)")
	f.StringVar(&typ, "type", "direct", "message type: direct, heartbeat, control, error or broadcast")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(sendTypes, cobra.ShellCompDirectiveNoFileComp))
	mf.add(cmd)
	g.addAs(cmd, "register this agent name for the duration and send as it")
	g.addJSON(cmd, `print {"message_id": …} instead of the id`)
	g.addTimeout(cmd, "give up after this long (waiting for room in a full mailbox included)")
	return cmd
}

// sendErr explains an error of sending to agent.
func (g *globals) sendErr(err error, agent string) error {
	what := fmt.Sprintf("send to %q", agent)
	switch {
	case errors.Is(err, agentbus.ErrNoRecipient):
		return explainf(err, "%s: no agent of that name is registered with the daemon (see agentbus agents)", what)
	case errors.Is(err, agentbus.ErrBackpressureTimeout):
		return explainf(err, "%s: its mailbox stayed full for the daemon's backpressure timeout; the message was "+
			"not accepted (send it again later)", what)
	case errors.Is(err, agentbus.ErrMailboxFull):
		return explainf(err, "%s: the bus is full; the message was not accepted (send it again later)", what)
	case errors.Is(err, context.DeadlineExceeded):
		return explainf(err, "%s: no room in its mailbox within %v (--timeout); the message was not accepted", what, g.timeout)
	case errors.Is(err, agentbus.ErrMessageTooLarge):
		return explainf(err, "%s: the message is larger than the daemon accepts (%s)", what, plain(err))
	case errors.Is(err, agentbus.ErrInvalidMessage):
		return explainf(err, "%s: the daemon refused the message: %s", what, plain(err))
	}
	return g.daemonErr(err, what)
}

func newPub(g *globals) *cobra.Command {
	var mf msgFlags
	cmd := &cobra.Command{
		Use:   "pub TOPIC PAYLOAD",
		Short: "Publish a message on a topic",
		Long: `Publish PAYLOAD on TOPIC (a dot-separated subject such as progress.build) and print
the message's id once the bus has accepted it. Every agent subscribed to a pattern that
matches TOPIC gets a copy.

If no agent is subscribed, the bus dead-letters the message (reason no_subscribers): pub
says so on stderr and still exits 0, since the bus accepted the message; the letter is in
"agentbus dlq list --reason no_subscribers".

PAYLOAD is read as for send.`,
		Example: `  agentbus pub progress.build '{"done":50}'
  agentbus pub --as builder progress.build '{"done":100}'`,
		Args: args(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			topic := a[0]
			if err := topics.ValidateSubject(topic); err != nil {
				return usageError{explainf(err, "TOPIC: %s", plain(err))}
			}
			msg, err := mf.message(g, agentbus.TypePublish, a[1])
			if err != nil {
				return err
			}
			msg.Topic = topic
			return g.session(cmd, func(ctx context.Context, c *client.Client, as string) error {
				msg.Sender = as
				stop := g.waiting(fmt.Sprintf("room on topic %q", topic))
				id, err := call(ctx, g, func(ctx context.Context) (string, error) { return c.PublishMessage(ctx, msg) })
				stop()
				if err != nil {
					if errors.Is(err, agentbus.ErrBackpressureTimeout) || errors.Is(err, context.DeadlineExceeded) {
						return explainf(err, "publish on %q: the bus had no room for the message in time; it was "+
							"not accepted (publish it again later)", topic)
					}
					return g.daemonErr(err, fmt.Sprintf("publish on %q", topic))
				}
				if err := g.printID(id); err != nil {
					return err
				}
				g.noticeUnheard(ctx, c, topic, id)
				return nil
			})
		},
	}
	mf.add(cmd)
	g.addAs(cmd, "register this agent name for the duration and publish as it")
	g.addJSON(cmd, `print {"message_id": …} instead of the id`)
	g.addTimeout(cmd, "give up after this long")
	return cmd
}

// unheardWait bounds how long pub looks for the dead letter of a message
// that no agent was subscribed to: the bus's topic actor records it a
// moment after it accepted the message.
const unheardWait = time.Second

// noticeUnheard says on stderr that message id, published on topic, was
// dead-lettered for want of subscribers, once the dead-letter queue shows
// it. It says nothing if an agent is subscribed, and nothing if it cannot
// tell.
func (g *globals) noticeUnheard(ctx context.Context, c *client.Client, topic, id string) {
	n, err := call(ctx, g, func(ctx context.Context) (int, error) { return c.CountSubscribers(ctx, topic) })
	if err != nil || n > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, unheardWait)
	defer cancel()
	backoff := time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		letters, err := c.DeadLetters(ctx, client.LetterFilter{Reason: "no_subscribers", Topic: topic, Limit: 100})
		if err != nil {
			return
		}
		for _, l := range letters {
			if l.Message != nil && l.Message.ID == id {
				fmt.Fprintf(g.stderr, "agentbus: no agent is subscribed to %q: the message was dead-lettered "+
					"(no_subscribers, dead letter %d)\n", topic, l.Seq)
				return
			}
		}
		backoff = min(2*backoff, 100*time.Millisecond)
		t.Reset(backoff)
	}
}

func newReq(g *globals) *cobra.Command {
	var mf msgFlags
	var to string
	cmd := &cobra.Command{
		Use:   "req AGENT PAYLOAD",
		Short: "Send a request to an agent and print its response",
		Long: `Send PAYLOAD as a request to the agent AGENT (or --to AGENT), wait for its response
(up to --timeout) and print the response's payload (the whole response message with
--json). On a terminal it shows that it waits after a second.

PAYLOAD is read as for send.`,
		Example: `  agentbus req worker '{"task":"lint"}'
  agentbus req --timeout 5s --to worker '{"task":"lint"}'`,
		Args: args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, a []string) error {
			agent, payload, err := target(to, a)
			if err != nil {
				return err
			}
			msg, err := mf.message(g, agentbus.TypeRequest, payload)
			if err != nil {
				return err
			}
			msg.Recipient = agent
			return g.session(cmd, func(ctx context.Context, c *client.Client, as string) error {
				msg.Sender = as
				stop := g.waiting(fmt.Sprintf("a response from %q", agent))
				resp, err := call(ctx, g, func(ctx context.Context) (*agentbus.Message, error) { return c.Request(ctx, msg) })
				stop()
				if err != nil {
					if errors.Is(err, agentbus.ErrRequestTimeout) || errors.Is(err, context.DeadlineExceeded) {
						return explainf(err, "no response from agent %q within %v", agent, g.timeout)
					}
					return g.sendErr(err, agent)
				}
				if g.json {
					return g.printJSON(resp)
				}
				_, err = fmt.Fprintf(g.stdout, "%s\n", resp.Payload)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the agent to ask (instead of the AGENT argument)")
	mf.add(cmd)
	g.addAs(cmd, "register this agent name for the duration and ask as it")
	g.addJSON(cmd, "print the whole response message as JSON")
	g.addTimeout(cmd, "how long to wait for the response")
	return cmd
}
