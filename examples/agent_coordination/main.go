// Command agent_coordination runs a multi-agent workflow and then reports
// what happened: a coordinator hands tasks to workers (direct messages) and
// asks each for its status (request/response); workers publish their progress
// on progress.<worker>; a monitor subscribed to progress.* follows along; one
// worker panics on a poisoned task and is restarted by its supervisor. At the
// end it prints the bus's statistics (Bus.Stats) and its dead letters.
//
//	go run ./examples/agent_coordination
//
// The output is deterministic, so a test checks it; -timings adds the
// delivery latency, which is not.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/supervisor"
)

func main() {
	timings := flag.Bool("timings", false, "also print the delivery latency")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, *timings); err != nil {
		fmt.Fprintln(os.Stderr, "agent_coordination:", err)
		os.Exit(1)
	}
}

// task is what the coordinator hands a worker.
type task struct {
	ID       int    `json:"id"`
	Worker   string `json:"worker"`
	Work     string `json:"work"`
	Poisoned bool   `json:"poisoned,omitempty"` // the worker crashes on it
}

// status is a worker's answer to the coordinator's status request.
type status struct {
	Worker string `json:"worker"`
	Done   int    `json:"done"`
}

// progress is what a worker publishes on progress.<worker>.
type progress struct {
	Task  int    `json:"task"`
	State string `json:"state"`
}

func run(ctx context.Context, w io.Writer, timings bool) error {
	workers := []string{"alice", "bob", "carol"}
	bus, err := agentbus.New(agentbus.Config{})
	if err != nil {
		return err
	}
	defer bus.Shutdown(ctx)

	// Supervision events, watched as they happen.
	events, err := bus.Events(64)
	if err != nil {
		return err
	}
	var watched []string
	restarted := make(chan struct{})
	var watching sync.WaitGroup
	watching.Go(func() {
		for e := range events.C() {
			switch e.Kind {
			case agentbus.EventSupervised:
				s := e.Supervision
				watched = append(watched, fmt.Sprintf("%s: %s (failure %d) after: %v", e.Agent, s.Directive, s.Restarts, s.Failure))
			case agentbus.EventRestarted:
				watched = append(watched, fmt.Sprintf("%s restarted", e.Agent))
				close(restarted)
			}
		}
	})

	// The monitor follows every worker's progress through one wildcard
	// subscription.
	const wantReports = 10 // started and done for each of the 5 healthy tasks
	mon := &monitor{byTopic: map[string][]string{}, done: make(chan struct{}), want: wantReports}
	if _, err := bus.Spawn("monitor", agentbus.HandlerFunc(mon.handle)); err != nil {
		return err
	}
	if err := bus.Subscribe("progress.*", "monitor"); err != nil {
		return err
	}

	// The workers, each restarted by its supervisor when it crashes.
	for _, name := range workers {
		if _, err := bus.Spawn(name, worker(bus, name),
			agentbus.WithSupervisor(supervisor.Restarting(3, time.Minute))); err != nil {
			return err
		}
	}

	// The coordinator: hands out a plan's tasks, then asks every worker
	// for its status and answers with all of them.
	var notSent []string
	if _, err := bus.Spawn("coordinator", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		var plan []task
		if err := m.DecodePayload(&plan); err != nil {
			return err
		}
		for _, t := range plan {
			body, _ := json.Marshal(t)
			msg := agentbus.NewMessage(agentbus.TypeDirect, "", body).WithRecipient(t.Worker)
			if _, err := bus.Send(ctx, msg); err != nil {
				notSent = append(notSent, fmt.Sprintf("task %d for %s not sent: %v", t.ID, t.Worker, err))
			}
		}
		var statuses []status
		for _, name := range workers { // each request queues behind that worker's tasks
			resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", []byte(`"status?"`)).WithRecipient(name))
			if err != nil {
				return err
			}
			var s status
			if err := resp.DecodePayload(&s); err != nil {
				return err
			}
			statuses = append(statuses, s)
		}
		body, _ := json.Marshal(statuses)
		_, err := bus.Reply(ctx, m, body)
		return err
	})); err != nil {
		return err
	}

	plan := []task{
		{1, "alice", "draft the outline", false},
		{2, "bob", "write the parser", false},
		{3, "carol", "review the API", false},
		{4, "alice", "write the docs", false},
		{5, "bob", "parse /dev/random", true},
		{6, "carol", "run the tests", false},
		{7, "dave", "deploy", false}, // nobody is called dave
	}
	fmt.Fprintf(w, "plan: %d tasks for alice, bob, carol and dave (task 5 is poisoned)\n", len(plan))
	body, _ := json.Marshal(plan)
	resp, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "main", body).WithRecipient("coordinator"))
	if err != nil {
		return err
	}
	for _, line := range notSent { // written by the coordinator before it replied
		fmt.Fprintln(w, "coordinator:", line)
	}
	var statuses []status
	if err := resp.DecodePayload(&statuses); err != nil {
		return err
	}
	for _, s := range statuses {
		fmt.Fprintf(w, "status: %s has done %d\n", s.Worker, s.Done)
	}

	// Wait for the monitor's last report and the restart event, then for
	// the bus to settle, so that the statistics are final.
	for _, c := range []chan struct{}{mon.done, restarted} {
		select {
		case <-c:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := settle(ctx, bus); err != nil {
		return err
	}
	events.Close()
	watching.Wait()

	fmt.Fprintf(w, "monitor saw %d progress reports:\n", wantReports)
	for _, topic := range slices.Sorted(maps.Keys(mon.byTopic)) {
		fmt.Fprintf(w, "  %-15s %s\n", topic, strings.Join(mon.byTopic[topic], ", "))
	}
	fmt.Fprintln(w, "supervision:")
	for _, line := range watched {
		fmt.Fprintln(w, " ", line)
	}
	printStats(w, bus.Stats(), timings)
	fmt.Fprintln(w, "dead letters:")
	for _, l := range bus.DeadLetters().List(deadletter.Filter{}) {
		fmt.Fprintf(w, "  %s for %s: %s\n", l.Reason, l.Agent, l.Err)
	}
	return nil
}

// worker returns the handler of the worker named name: a task is worked on
// between two progress reports (a poisoned one crashes it); a status request
// is answered with the number of tasks done. Its count survives a restart:
// the supervisor restarts the actor, not the handler.
func worker(bus *agentbus.Bus, name string) agentbus.HandlerFunc {
	done := 0
	report := func(ctx context.Context, id int, state string) error {
		body, _ := json.Marshal(progress{Task: id, State: state})
		_, err := bus.Publish(ctx, "progress."+name, name, body)
		return err
	}
	return func(ctx context.Context, m *agentbus.Message) error {
		if m.Type == agentbus.TypeRequest {
			body, _ := json.Marshal(status{Worker: name, Done: done})
			_, err := bus.Reply(ctx, m, body)
			return err
		}
		var t task
		if err := m.DecodePayload(&t); err != nil {
			return err
		}
		if t.Poisoned {
			panic(fmt.Sprintf("poisoned task %d", t.ID))
		}
		if err := report(ctx, t.ID, "started"); err != nil {
			return err
		}
		done++ // the work itself
		return report(ctx, t.ID, "done")
	}
}

// monitor records the progress reports it receives, per topic, in order.
type monitor struct {
	mu      sync.Mutex
	byTopic map[string][]string
	n, want int
	done    chan struct{}
}

func (m *monitor) handle(_ context.Context, msg *agentbus.Message) error {
	var p progress
	if err := msg.DecodePayload(&p); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byTopic[msg.Topic] = append(m.byTopic[msg.Topic], fmt.Sprintf("task %d %s", p.Task, p.State))
	if m.n++; m.n == m.want {
		close(m.done)
	}
	return nil
}

// settle waits until every delivery the bus accepted has been handled or
// dead-lettered (see Bus.Accounting), checking every millisecond.
func settle(ctx context.Context, bus *agentbus.Bus) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if a := bus.Accounting(); a.Idle() && a.Balanced() {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return fmt.Errorf("the bus did not settle: %w", ctx.Err())
		}
	}
}

// printStats prints a readable summary of s: counts that are not zero, in a
// stable order.
func printStats(w io.Writer, s agentbus.Stats, timings bool) {
	fmt.Fprintln(w, "statistics:")
	var types []string
	for t := agentbus.TypeDirect; t.Valid(); t++ {
		if n := s.Types[t]; n > 0 {
			types = append(types, fmt.Sprintf("%s %d", t, n))
		}
	}
	fmt.Fprintf(w, "  sent %d messages: %s\n", s.Totals.Sent, strings.Join(types, ", "))
	fmt.Fprintf(w, "  delivered %d, failed %d, expired %d, rejected %d%s\n", s.Totals.Delivered, s.Totals.Failed,
		s.Totals.Expired, s.Totals.Rejected, nonZero(s.Rejected))
	reasons := map[string]uint64{}
	for r, n := range s.DeadLetters.ByReason {
		reasons[string(r)] = n
	}
	fmt.Fprintf(w, "  dead letters %d%s\n", s.Totals.DeadLettered, nonZero(reasons))
	l := s.Ledger
	fmt.Fprintf(w, "  deliveries: accepted %d = handled %d + dead-lettered %d + retried %d + in flight %d: %v\n",
		l.Accepted, l.Handled, l.DeadLettered, l.Retried, l.InFlight, map[bool]string{true: "balanced", false: "NOT balanced"}[l.Balanced()])
	fmt.Fprintf(w, "  per topic:  %s\n", named(s.Topics))
	fmt.Fprintf(w, "  per sender: %s\n", named(s.Senders))
	fmt.Fprintf(w, "  %-12s %6s %8s %7s %8s\n", "agent", "queued", "handled", "failed", "restarts")
	for _, a := range s.Agents {
		fmt.Fprintf(w, "  %-12s %6d %8d %7d %8d\n", a.Name, a.Queued, a.Handled, a.Failed, a.Restarts)
	}
	fmt.Fprintf(w, "  backpressure %d of %d, pending requests %d, pending retries %d\n",
		s.Backpressure.Pending, s.Backpressure.MaxPending, s.PendingRequests, s.PendingRetries)
	if timings {
		h := s.Latency
		fmt.Fprintf(w, "  delivery latency: p50 %v, p99 %v over %d deliveries\n", h.P50, h.P99, h.Count)
	}
}

// named formats counts, which are sorted by name, as "name n, name n".
func named(counts agentbus.Counts) string {
	var parts []string
	for _, c := range counts {
		parts = append(parts, fmt.Sprintf("%s %d", c.Name, c.Count))
	}
	return strings.Join(parts, ", ")
}

// nonZero formats the non-zero counts as " (name n, …)", or "".
func nonZero(counts map[string]uint64) string {
	some := map[string]uint64{}
	for k, n := range counts {
		if n > 0 {
			some[k] = n
		}
	}
	if len(some) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(some)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, some[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
