// Command custom_handlers shows routing: named domain handlers (an audit log,
// a metrics counter, an alerter for urgent errors) receive copies of the
// messages that match prioritized rules, alongside normal delivery.
//
//	go run ./examples/custom_handlers
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/routing"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "custom_handlers:", err)
		os.Exit(1)
	}
}

// journal records what each handler saw. Handlers run on their own agents,
// concurrently with each other, so it is locked.
type journal struct {
	mu   sync.Mutex
	seen map[string][]string
	n    int
	done chan struct{}
	want int
}

func (j *journal) note(handler, line string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seen[handler] = append(j.seen[handler], line)
	if j.n++; j.n == j.want {
		close(j.done)
	}
}

func describe(m *agentbus.Message) string {
	to := m.Recipient
	if m.Topic != "" {
		to = "#" + m.Topic
	}
	line := fmt.Sprintf("%s %s->%s p%d", m.Type, m.Sender, to, m.Priority)
	if len(m.Payload) > 0 {
		line += " " + string(m.Payload)
	}
	return line
}

func run(ctx context.Context, w io.Writer) error {
	bus, err := agentbus.New(agentbus.Config{})
	if err != nil {
		return err
	}
	defer bus.Shutdown(ctx)

	// The agents: each just takes its messages.
	for _, name := range []string{"planner", "coder", "reviewer"} {
		if _, err := bus.Spawn(name, agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil })); err != nil {
			return err
		}
	}
	if err := bus.Subscribe("agents.coder.*", "reviewer"); err != nil {
		return err
	}

	// The domain handlers.
	j := &journal{seen: map[string][]string{}, done: make(chan struct{}), want: 8}
	r := bus.Router()
	handlers := map[string]agentbus.HandlerFunc{
		"audit-log": func(_ context.Context, m *agentbus.Message) error {
			j.note("audit-log", describe(m))
			return nil
		},
		"metrics": func(_ context.Context, m *agentbus.Message) error {
			j.note("metrics", "count "+m.Type.String())
			return nil
		},
		"alerts": func(_ context.Context, m *agentbus.Message) error {
			if m.Priority >= 80 { // the rule picks errors; the handler pages only urgent ones
				j.note("alerts", "PAGE on-call: "+string(m.Payload))
			} else {
				j.note("alerts", "ticket: "+string(m.Payload))
			}
			return nil
		},
	}
	for _, name := range []string{"audit-log", "metrics", "alerts"} {
		if err := r.RegisterHandler(name, handlers[name]); err != nil {
			return err
		}
	}

	// The rules: higher priority is evaluated first; a message may match
	// several, and each handler sees it once.
	for _, rule := range []routing.Rule{
		{ID: "errors-to-alerts", Type: agentbus.TypeError, Handler: "alerts", Priority: 100, Enabled: true},
		{ID: "coder-events", Topic: "agents.coder.*", Handler: "audit-log", Priority: 50, Enabled: true},
		{ID: "count-publishes", Type: agentbus.TypePublish, Handler: "metrics", Priority: 10, Enabled: true},
		{ID: "count-direct", Type: agentbus.TypeDirect, Handler: "metrics", Priority: 10, Enabled: true},
		{ID: "audit-planner", Sender: "planner", Handler: "audit-log", Priority: 1, Enabled: true},
		{ID: "audit-debug", Handler: "audit-log", Priority: 0, Enabled: false},
	} {
		if err := r.AddRule(rule); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "rules, in evaluation order:")
	for _, rule := range r.Rules() {
		fmt.Fprintf(w, "  %-17s -> %-9s priority %3d enabled %v\n", rule.ID, rule.Handler, rule.Priority, rule.Enabled)
	}

	// The traffic.
	msgs := []*agentbus.Message{
		agentbus.NewMessage(agentbus.TypeDirect, "planner", []byte(`"write the parser"`)).WithRecipient("coder"),
		agentbus.NewMessage(agentbus.TypePublish, "coder", []byte(`"parser done"`)).WithTopic("agents.coder.done"),
		agentbus.NewMessage(agentbus.TypeError, "coder", []byte(`"tests fail on CI"`)).WithRecipient("planner").WithPriority(90),
		agentbus.NewMessage(agentbus.TypeError, "reviewer", []byte(`"style nit"`)).WithRecipient("coder").WithPriority(20),
		agentbus.NewMessage(agentbus.TypeDirect, "reviewer", []byte(`"looks good"`)).WithRecipient("planner"),
		agentbus.NewMessage(agentbus.TypeHeartbeat, "planner", nil).WithRecipient("coder"),
	}
	for _, m := range msgs {
		if _, err := bus.Send(ctx, m); err != nil {
			return err
		}
	}
	select {
	case <-j.done:
	case <-ctx.Done():
		return ctx.Err()
	}

	fmt.Fprintln(w, "what each handler saw:")
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, name := range []string{"alerts", "audit-log", "metrics"} {
		lines := j.seen[name]
		slices.Sort(lines) // handlers run concurrently; sort for a stable report
		for _, l := range lines {
			fmt.Fprintf(w, "  %-9s %s\n", name, l)
		}
	}
	// Shutdown waits for the handlers, so their counters are final.
	if err := bus.Shutdown(ctx); err != nil {
		return err
	}
	fmt.Fprintln(w, "handler stats:")
	for _, s := range r.Stats() {
		fmt.Fprintf(w, "  %-9s handled %d failed %d\n", s.Name, s.Handled, s.Failed)
	}
	return nil
}
