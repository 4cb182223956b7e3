package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/cluster"
)

// nodeEnv, when set, makes the test binary run as a cluster node process
// (see runNode) instead of running tests.
const nodeEnv = "AGENTBUS_TEST_NODE"

// command is one line the test sends a node process.
type command struct {
	Op      string `json:"op"`
	Name    string `json:"name,omitempty"`
	Kind    string `json:"kind,omitempty"` // spawn: sink (counts), echo (replies), block (waits for release)
	To      string `json:"to,omitempty"`
	Payload string `json:"payload,omitempty"`
}

// reply is a node process's answer to a command.
type reply struct {
	Err     string                 `json:"err,omitempty"`
	ID      string                 `json:"id,omitempty"`
	Addr    string                 `json:"addr,omitempty"`
	Remote  string                 `json:"remote,omitempty"`
	Members []agentbus.Member      `json:"members,omitempty"`
	Where   string                 `json:"where,omitempty"` // member id holding Name
	Live    bool                   `json:"live,omitempty"`  // Name runs here and this node vouches for it
	Ledger  agentbus.Accounting    `json:"ledger"`
	Links   cluster.Counters       `json:"links"`
	Dead    map[string]uint64      `json:"dead,omitempty"` // dead letters by reason
	Handled map[string]uint64      `json:"handled,omitempty"`
	Sent    uint64                 `json:"sent,omitempty"` // stream: sends accepted
	Refused map[string]uint64      `json:"refused,omitempty"`
	Payload string                 `json:"payload,omitempty"`
	Stats   *agentbus.ClusterStats `json:"stats,omitempty"`
	// Timeline: intervals (start, end; Unix ns, this machine's clock) in which the watched name
	// was seen live here, from "watch".
	Timeline []int64 `json:"timeline,omitempty"`
}

// runNode is a cluster node process: a bus joined to the seeds in
// AGENTBUS_TEST_SEEDS, answering commands on stdin (one JSON line each)
// with one JSON line on stdout, until stdin closes.
func runNode() int {
	if path := os.Getenv("AGENTBUS_TEST_CPUPROFILE"); path != "" { // to profile the peer of a benchmark
		if f, err := os.Create(path); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if path := os.Getenv("AGENTBUS_TEST_BLOCKPROFILE"); path != "" {
		runtime.SetBlockProfileRate(1)
		defer func() {
			if f, err := os.Create(path); err == nil {
				_ = pprof.Lookup("block").WriteTo(f, 0)
				_ = f.Close()
			}
		}()
	}
	var seeds []string
	if s := os.Getenv("AGENTBUS_TEST_SEEDS"); s != "" {
		seeds = []string{s}
	}
	bus, err := agentbus.New(agentbus.Config{
		Backpressure: agentbus.BackpressureConfig{Timeout: 2 * time.Second},
		Cluster: &agentbus.ClusterConfig{Name: os.Getenv("AGENTBUS_TEST_CLUSTER"),
			NodeName: os.Getenv(nodeEnv), Seeds: seeds},
	})
	out := json.NewEncoder(os.Stdout)
	if err != nil {
		_ = out.Encode(reply{Err: err.Error()})
		return 1
	}
	self := bus.Cluster().Self()
	_ = out.Encode(reply{ID: self.ID, Addr: self.Addr, Remote: self.RemoteAddr})
	nd := &node{bus: bus, handled: map[string]*atomic.Uint64{}, release: make(chan struct{})}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var c command
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			_ = out.Encode(reply{Err: err.Error()})
			continue
		}
		_ = out.Encode(nd.do(c))
	}
	nd.stopStream()
	if nd.watchStop != nil {
		nd.watchStop()
		nd.wg.Wait()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = bus.Shutdown(ctx)
	return 0
}

type node struct {
	bus     *agentbus.Bus
	mu      sync.Mutex
	handled map[string]*atomic.Uint64
	release chan struct{}
	stream  context.CancelFunc
	wg      sync.WaitGroup
	sent    atomic.Uint64
	refused sync.Map // error text → *atomic.Uint64

	watchStop context.CancelFunc
	timeline  []int64 // guarded by mu: interval starts and ends
	lastLive  int64   // guarded by mu
}

func (nd *node) counter(name string) *atomic.Uint64 {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	c := nd.handled[name]
	if c == nil {
		c = &atomic.Uint64{}
		nd.handled[name] = c
	}
	return c
}

func (nd *node) do(c command) reply {
	b := nd.bus
	switch c.Op {
	case "spawn":
		count := nd.counter(c.Name)
		h := agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
			switch c.Kind {
			case "echo":
				_, err := b.Reply(ctx, m, m.Payload)
				count.Add(1)
				return err
			case "bench": // counts; answers requests
				count.Add(1)
				if m.Type == agentbus.TypeRequest {
					_, err := b.Reply(ctx, m, m.Payload)
					return err
				}
				return nil
			case "block":
				<-nd.release
			}
			count.Add(1)
			return nil
		})
		if _, err := b.Spawn(c.Name, h); err != nil {
			return reply{Err: err.Error()}
		}
		return reply{}
	case "where":
		r := reply{}
		if m, ok := b.Cluster().Where(c.Name); ok {
			r.Where = m.ID
		}
		m, ok := b.Cluster().Where(c.Name)
		r.Live = ok && m.Self
		return r
	case "members":
		return reply{Members: b.Cluster().Members()}
	case "send":
		_, err := b.Send(context.Background(), agentbus.NewMessage(agentbus.TypeDirect, "tester",
			[]byte(c.Payload)).WithRecipient(c.To))
		if err != nil {
			return reply{Err: err.Error()}
		}
		return reply{}
	case "request":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := b.Request(ctx, agentbus.NewMessage(agentbus.TypeRequest, "tester", []byte(c.Payload)).
			WithRecipient(c.To))
		if err != nil {
			return reply{Err: err.Error()}
		}
		return reply{Payload: string(resp.Payload)}
	case "stream": // send to c.To as fast as the link allows, until "stop"
		ctx, cancel := context.WithCancel(context.Background())
		nd.stream = cancel
		nd.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				_, err := b.Send(ctx, agentbus.NewMessage(agentbus.TypeDirect, "tester",
					fmt.Appendf(nil, "%d", i)).WithRecipient(c.To))
				if err == nil {
					nd.sent.Add(1)
					continue
				}
				key := "other"
				switch {
				case errors.Is(err, agentbus.ErrNoRecipient):
					key = "no_recipient"
				case errors.Is(err, agentbus.ErrBackpressureTimeout):
					key = "backpressure"
				}
				v, _ := nd.refused.LoadOrStore(key, &atomic.Uint64{})
				v.(*atomic.Uint64).Add(1)
				if key == "no_recipient" { // the node is gone: stop, as a client would
					return
				}
			}
		})
		return reply{}
	case "stop":
		nd.stopStream()
		return nd.stats()
	case "watch": // sample whether Name is live here every 500 µs, until stdin closes
		ctx, cancel := context.WithCancel(context.Background())
		nd.watchStop = cancel
		// An interval runs from the first sample that saw the name live to
		// the last one that did: a process that is stopped takes no
		// sample, so nothing is said of it while it is stopped.
		sample := func(live bool) {
			now := time.Now().UnixNano()
			nd.mu.Lock()
			defer nd.mu.Unlock()
			open := len(nd.timeline)%2 == 1
			switch {
			case live && !open:
				nd.timeline = append(nd.timeline, now)
				nd.lastLive = now
			case live:
				nd.lastLive = now
			case open:
				nd.timeline = append(nd.timeline, nd.lastLive)
			}
		}
		m, ok := b.Cluster().Where(c.Name)
		sample(ok && m.Self) // before the reply
		nd.wg.Go(func() {
			tick := time.NewTicker(500 * time.Microsecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				m, ok := b.Cluster().Where(c.Name)
				sample(ok && m.Self)
			}
		})
		return reply{}
	case "timeline":
		nd.mu.Lock()
		defer nd.mu.Unlock()
		tl := append([]int64(nil), nd.timeline...)
		if len(tl)%2 == 1 {
			tl = append(tl, nd.lastLive)
		}
		return reply{Timeline: tl}
	case "raw": // a raw protoactor actor "raw" on a remote of its own, for benchmarks
		sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return slog.New(slog.DiscardHandler)
		}))
		remote.NewRemote(sys, remote.Configure("127.0.0.1", 0)).Start() // not under the race detector: benchmarks only
		count := int64(0)
		_, err := sys.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
			switch m := ctx.Message().(type) {
			case *wrapperspb.BytesValue:
				if ctx.Sender() != nil {
					ctx.Respond(m)
				} else {
					count++
				}
			case *wrapperspb.StringValue:
				ctx.Respond(&wrapperspb.Int64Value{Value: count})
			}
		}), "raw")
		if err != nil {
			return reply{Err: err.Error()}
		}
		return reply{Remote: sys.Address()}
	case "release":
		close(nd.release)
		return reply{}
	case "stats":
		return nd.stats()
	case "cluster-stats":
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := b.Cluster().Stats(ctx)
		if err != nil {
			return reply{Err: err.Error()}
		}
		return reply{Stats: &st}
	}
	return reply{Err: "unknown op " + c.Op}
}

func (nd *node) stopStream() {
	if nd.stream != nil {
		nd.stream()
		nd.wg.Wait()
		nd.stream = nil
	}
}

func (nd *node) stats() reply {
	b := nd.bus
	r := reply{Ledger: b.Accounting(), Links: b.Cluster().Counters(), Dead: map[string]uint64{},
		Handled: map[string]uint64{}, Sent: nd.sent.Load(), Refused: map[string]uint64{}}
	for reason, n := range b.DeadLetters().Counts() {
		if n > 0 {
			r.Dead[string(reason)] = n
		}
	}
	nd.mu.Lock()
	for k, v := range nd.handled {
		r.Handled[k] = v.Load()
	}
	nd.mu.Unlock()
	nd.refused.Range(func(k, v any) bool {
		r.Refused[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return r
}

// proc is a node process started by a test.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *json.Decoder
	mu   sync.Mutex
	info reply
	done chan struct{}
}

// startNode starts a node process named name in cluster, joined to seed
// (empty: none), and waits until it is up. It is stopped when the test ends.
func startNode(t *testing.T, cluster, name, seed string) *proc {
	t.Helper()
	p, err := startProc(cluster, name, seed)
	if p != nil {
		t.Cleanup(p.stop)
	}
	require.NoError(t, err)
	p.t = t
	return p
}

// startProc starts a node process and waits until it is up.
func startProc(cluster, name, seed string) (*proc, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+name, "AGENTBUS_TEST_SEEDS="+seed, "AGENTBUS_TEST_CLUSTER="+cluster)
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
	p := &proc{name: name, cmd: cmd, in: in, out: json.NewDecoder(out), done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }() // reaped when it exits
	if err := p.out.Decode(&p.info); err != nil {
		return p, fmt.Errorf("node %s did not start: %w", name, err)
	}
	if p.info.Err != "" {
		return p, fmt.Errorf("node %s: %s", name, p.info.Err)
	}
	return p, nil
}

// do sends c and returns the node's reply; the test fails if the node does
// not answer.
func (p *proc) do(c command) reply {
	p.t.Helper()
	r, err := p.call(c)
	require.NoError(p.t, err)
	return r
}

// call sends c and returns the node's reply.
func (p *proc) call(c command) (reply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, _ := json.Marshal(c)
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return reply{}, fmt.Errorf("node %s: %w", p.name, err)
	}
	var r reply
	if err := p.out.Decode(&r); err != nil {
		return reply{}, fmt.Errorf("node %s: %s: %w", p.name, c.Op, err)
	}
	return r, nil
}

// stop closes the node's stdin (it shuts its bus down and exits) and waits,
// killing it if it does not exit in time.
func (p *proc) stop() {
	_ = p.in.Close()
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // in case it is stopped
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
