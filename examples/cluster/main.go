// Command cluster runs one bus on three nodes of one machine: this process
// is node a, and it starts nodes b and c as processes of its own binary. A
// request chain crosses all three (planner on a asks researcher on b, which
// asks writer on c); then c is stopped, sent two more messages it never
// confirms, and killed; and the statistics show where every message went.
//
//	go run ./examples/cluster
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// nodeEnv names the node a process of this binary runs as (b or c).
const nodeEnv = "AGENTBUS_EXAMPLE_NODE"

func main() {
	if name := os.Getenv(nodeEnv); name != "" {
		os.Exit(node(name))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// clusterName is the example's cluster; nodes of other clusters never join.
const clusterName = "example"

// node runs node b or c until its stdin closes: b has the researcher, c the
// writer and the archive.
func node(name string) int {
	bus, err := agentbus.New(agentbus.Config{Cluster: &agentbus.ClusterConfig{Name: clusterName, NodeName: name,
		Seeds: []string{os.Getenv("AGENTBUS_EXAMPLE_SEED")}}})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	switch name {
	case "b":
		_, err = bus.Spawn("researcher", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
			draft, err := bus.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", m.Payload).WithRecipient("writer"))
			if err != nil {
				return err
			}
			_, err = bus.Reply(ctx, m, draft.Payload)
			return err
		}))
	case "c":
		_, err = bus.Spawn("writer", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
			var topic string
			if err := json.Unmarshal(m.Payload, &topic); err != nil {
				return err
			}
			_, err := bus.Reply(ctx, m, fmt.Appendf(nil, "%q", "draft: "+topic))
			return err
		}))
		if err == nil {
			_, err = bus.Spawn("archive", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return nil }))
		}
	}
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it (or dies)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = bus.Shutdown(ctx)
	return 0
}

// child is a node process.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
}

// start runs node name joined to seed and waits until it is ready.
func start(name, seed string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), nodeEnv+"="+name, "AGENTBUS_EXAMPLE_SEED="+seed)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("node %s: %q %v", name, line, err)
	}
	return &child{cmd: cmd, in: in}, nil
}

// stop ends the node (closing its stdin) and waits for it.
func (c *child) stop() {
	_ = c.in.Close()
	_ = c.cmd.Wait()
}

func run(ctx context.Context, out io.Writer) error {
	a, err := agentbus.New(agentbus.Config{Cluster: &agentbus.ClusterConfig{Name: clusterName, NodeName: "a"}})
	if err != nil {
		return err
	}
	defer func() { _ = a.Shutdown(context.Background()) }()
	events, err := a.Events(64)
	if err != nil {
		return err
	}
	defer events.Close()
	seed := a.Cluster().Self().Addr
	b, err := start("b", seed)
	if err != nil {
		return err
	}
	defer b.stop()
	c, err := start("c", seed)
	if err != nil {
		return err
	}
	defer c.stop()
	_, err = a.Spawn("planner", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		notes, err := a.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "", m.Payload).WithRecipient("researcher"))
		if err != nil {
			return err
		}
		_, err = a.Reply(ctx, m, notes.Payload)
		return err
	}))
	if err != nil {
		return err
	}
	for _, name := range []string{"researcher", "writer", "archive"} {
		if err := until(ctx, func() bool { _, ok := a.Cluster().Where(name); return ok }); err != nil {
			return fmt.Errorf("%s never appeared: %w", name, err)
		}
	}
	fmt.Fprintln(out, "cluster:", members(a))

	resp, err := a.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "main", []byte(`"the history of agents"`)).
		WithRecipient("planner"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "chain: planner on a asked researcher on b, which asked writer on c: %s\n", resp.Payload)

	send := func(n int) error {
		for i := range n {
			if _, err := a.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "main", fmt.Appendf(nil, "%d", i)).
				WithRecipient("archive")); err != nil {
				return err
			}
		}
		return nil
	}
	if err := send(3); err != nil {
		return err
	}
	if err := until(ctx, func() bool { return a.Cluster().Counters().InFlight == 0 }); err != nil {
		return err
	}
	fmt.Fprintln(out, "archive on c: 3 messages confirmed by c")
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	if err := send(2); err != nil {
		return err
	}
	fmt.Fprintln(out, "c stopped (SIGSTOP): 2 more messages sent to archive, not confirmed")
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	for e := range events.C() {
		if e.Kind == agentbus.EventNodeLeft && e.Node.Name == "c" {
			fmt.Fprintf(out, "c killed (SIGKILL): a saw it go: %v\n", e.Err)
			break
		}
	}
	counts := a.DeadLetters().Counts()
	fmt.Fprintf(out, "a's dead letters: node_unreachable %d\n", counts[deadletter.NodeUnreachable])
	_, err = a.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "main", nil).WithRecipient("archive"))
	fmt.Fprintf(out, "a send to archive now: %v\n", err)
	if !errors.Is(err, agentbus.ErrNoRecipient) {
		return fmt.Errorf("want ErrNoRecipient, got %v", err)
	}

	st, err := a.Cluster().Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "where every message went, by node (c is gone: what it confirmed is counted as handled by its sender):")
	for _, n := range st.Nodes {
		l := n.Stats.Ledger
		fmt.Fprintf(out, "  %s: accepted %d = handled %d + dead-lettered %d + in flight %d; to other nodes %d = confirmed %d + undelivered %d\n",
			n.Member.Name, l.Accepted, l.Handled, l.DeadLettered, l.InFlight, n.Links.Sent, n.Links.Confirmed, n.Links.Undelivered)
	}
	fmt.Fprintf(out, "  cluster ledger balanced: %v\n", st.Ledger.Balanced())
	return nil
}

// members lists the nodes a sees alive.
func members(b *agentbus.Bus) string {
	var alive []string
	for _, m := range b.Cluster().Members() {
		if m.State == agentbus.StateAlive {
			alive = append(alive, m.Name)
		}
	}
	return strings.Join(alive, ", ") + " alive"
}

// until polls cond until it holds or ctx ends.
func until(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}
