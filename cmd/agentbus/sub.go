package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/topics"
	"github.com/descartes/agentbus/transport"
)

// Reconnection backoff of long-running commands: the first wait, doubled
// (with jitter) up to the last.
const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 2 * time.Second
)

func newSub(g *globals) *cobra.Command {
	var count int
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "sub PATTERN...",
		Short: "Subscribe and print messages as they arrive",
		Long: `Register an agent (--as, default cli-<pid>), subscribe it to each PATTERN (a subject,
or a pattern with * for one token and > for the rest), and print every message it
receives until interrupted or --count messages arrived. Messages sent directly to the
agent are printed too.

If the connection to the daemon drops (the daemon stopped or restarted), sub says so on
stderr and reconnects with backoff; once connected it registers the agent and its
subscriptions again and says so. If no daemon answers for --reconnect-wait, it gives up
with exit status 3. --reconnect-wait 0 gives up at once.`,
		Example: `  agentbus sub 'progress.>'
  agentbus sub --json --count 1 tasks.done
  agentbus sub --as auditor --reconnect-wait 10m 'agents.*.done' 'alerts.>'`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, patterns []string) error {
			if count < 0 {
				return usagef("--count: %d is negative", count)
			}
			if wait < 0 {
				return usagef("--reconnect-wait: %v is negative", wait)
			}
			if err := g.checkTimeout(); err != nil {
				return err
			}
			for _, p := range patterns {
				if err := topics.ValidatePattern(p); err != nil {
					return usageError{explainf(err, "PATTERN %q: %s", p, plain(err))}
				}
			}
			return g.subscribe(cmd, patterns, count, wait)
		},
	}
	f := cmd.Flags()
	f.IntVarP(&count, "count", "n", 0, "exit after this many messages (0: run until interrupted)")
	f.DurationVar(&wait, "reconnect-wait", time.Minute, "when the daemon goes away, keep trying to reconnect for this long")
	g.addAs(cmd, "the agent name to register (default cli-<pid>)")
	g.addJSON(cmd, "print each message as a JSON line")
	g.addTimeout(cmd, "give up on each of the daemon's answers (register, subscribe) after this long")
	return cmd
}

// linkEvent is a change of a long-running command's connection: lost
// (with why), or regained (with what could not be restored).
type linkEvent struct {
	up  bool
	err error
}

// maxLinkEvents bounds the changes queued for the command; past it the
// oldest are forgotten (reconnects are seconds apart, and the command
// takes them at once).
const maxLinkEvents = 64

// link queues the client's reports on its connection for the command's
// loop, in order. Safe for concurrent use; it never blocks the client.
type link struct {
	mu      sync.Mutex
	events  []linkEvent
	changed chan struct{} // one token: events has news
}

func newLink() *link { return &link{changed: make(chan struct{}, 1)} }

func (l *link) add(e linkEvent) {
	l.mu.Lock()
	if len(l.events) >= maxLinkEvents {
		l.events = l.events[1:]
	}
	l.events = append(l.events, e)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *link) lost(err error)     { l.add(linkEvent{err: err}) }
func (l *link) regained(err error) { l.add(linkEvent{up: true, err: err}) }
func (l *link) take() (ev []linkEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev, l.events = l.events, nil
	return ev
}

// subscribe runs sub: see its help.
func (g *globals) subscribe(cmd *cobra.Command, patterns []string, count int, wait time.Duration) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l := newLink()
	c, err := g.dialWith(ctx, client.Options{NoReconnect: wait == 0, MinBackoff: reconnectMin,
		MaxBackoff: reconnectMax, OnDisconnect: l.lost, OnReconnect: l.regained})
	if err != nil {
		return err
	}
	defer c.Close()
	agent := g.agentName()
	// Unbuffered: a message counts as handled only once sub takes it to
	// print it; one still in the handler when sub ends fails (the daemon
	// dead-letters it), and those the client holds behind it are
	// dead-lettered by the daemon as never credited.
	got := make(chan *agentbus.Message)
	h := agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		select {
		case got <- m:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err := g.register(ctx, c, agent, h); err != nil {
		return err
	}
	for _, p := range patterns {
		_, err := call(ctx, g, func(ctx context.Context) (struct{}, error) { return struct{}{}, c.Subscribe(ctx, agent, p) })
		if err != nil {
			return g.daemonErr(err, fmt.Sprintf("subscribe %q to %q", agent, p))
		}
	}
	subs := strings.Join(patterns, ", ")
	fmt.Fprintf(g.stderr, "agentbus: %s subscribed to %s; ^C to stop\n", agent, subs)

	var giveUp <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for n := 0; count == 0 || n < count; {
		select {
		case m := <-got:
			if err := g.printMessage(m); err != nil {
				return err
			}
			n++
		case <-l.changed:
			for _, e := range l.take() {
				switch {
				case !e.up && wait == 0:
					return unreachableError{explainf(e.err, "lost the connection to the daemon at %s (%s)",
						g.socket, lostCause(e.err))}
				case !e.up:
					fmt.Fprintf(g.stderr, "agentbus: lost the connection to the daemon at %s (%s); "+
						"reconnecting for up to %v\n", g.socket, lostCause(e.err), wait)
					if timer == nil {
						timer = time.NewTimer(wait)
					} else {
						timer.Reset(wait)
					}
					giveUp = timer.C
				case e.err != nil:
					return explainf(e.err, "reconnected to the daemon at %s, but could not register %s and "+
						"subscribe it again: %s", g.socket, agent, plain(e.err))
				default:
					fmt.Fprintf(g.stderr, "agentbus: reconnected to %s; %s is registered and subscribed to %s again\n",
						g.socket, agent, subs)
					if timer != nil {
						timer.Stop()
					}
					giveUp = nil
				}
			}
		case <-giveUp:
			return unreachableError{fmt.Errorf("no daemon at %s for %v (--reconnect-wait); gave up", g.socket, wait)}
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// lostCause says in words why a connection to the daemon ended.
func lostCause(err error) string {
	if errors.Is(err, transport.ErrPeerClosed) {
		return "the daemon closed it"
	}
	return plain(err)
}

// printMessage prints one received message: a JSON line with --json, else
// "time  topic|@recipient  from sender  p=priority  payload".
func (g *globals) printMessage(m *agentbus.Message) error {
	if g.json {
		return g.printJSON(m)
	}
	where := m.Topic
	if where == "" {
		where = "@" + m.Recipient
	}
	_, err := fmt.Fprintf(g.stdout, "%s  %-20s  from %-12s  p=%-3d  %s\n", m.Timestamp.Local().Format("15:04:05.000"),
		where, dash(m.Sender), m.Priority, m.Payload)
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
