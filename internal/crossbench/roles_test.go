package crossbench_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/internal/testutil"
	"github.com/descartes/agentbus/transport"
)

// roleEnv names the role a re-executed test binary plays (see TestMain):
// one of the servers or client processes of the benchmark. Its argument
// (the socket path or the NATS URL) is in argEnv.
const (
	roleEnv = "AGENTBUS_CROSSBENCH_ROLE"
	argEnv  = "AGENTBUS_CROSSBENCH_ARG"
	// profileEnv, when set to a directory, makes every role process write
	// its CPU profile there as ROLE-PID.prof, to profile the servers and
	// clients of the benchmark (the benchmark process itself takes
	// -test.cpuprofile).
	profileEnv = "AGENTBUS_CROSSBENCH_CPUPROFILE_DIR"
)

// runRole runs the role the environment names and exits; it returns if
// there is none.
//
// Each role prints "ready [address]" on stdout once it serves, then reads
// commands from stdin, one a line, and answers each on one line:
//
//	expect N   answered "got" once N more messages arrived (receivers)
//	cpu        answered with the process's CPU time so far, in ns
//
// and exits when stdin closes (so that a benchmark that dies takes its
// processes with it).
func runRole() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	signal.Ignore(syscall.SIGINT) // a ^C goes to the benchmark, which ends us
	arg := os.Getenv(argEnv)
	stop, err := startProfile(role)
	if err != nil {
		fmt.Fprintln(os.Stderr, role+":", err)
		os.Exit(1)
	}
	switch role {
	case "bus-server":
		err = busServer(arg)
	case "nats-server":
		err = natsServer()
	case "bus-recv", "bus-echo":
		err = busClient(arg, role == "bus-echo")
	case "nats-recv", "nats-echo":
		err = natsClient(arg, role == "nats-echo")
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, role+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// startProfile starts the CPU profile of this role's process if profileEnv
// names a directory, and returns what stops it and writes it out.
func startProfile(role string) (stop func(), err error) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}, nil
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.prof", role, os.Getpid())))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// counter counts received messages and tells when a count is reached.
type counter struct {
	n, want atomic.Int64
	hit     chan struct{} // capacity 1
}

func newCounter() *counter { return &counter{hit: make(chan struct{}, 1)} }

func (c *counter) add() {
	if c.n.Add(1) == c.want.Load() {
		select {
		case c.hit <- struct{}{}:
		default:
		}
	}
}

// wait blocks until n messages in all have arrived.
func (c *counter) wait(n int64) {
	c.want.Store(n)
	for c.n.Load() < n {
		<-c.hit
	}
}

// commands answers the benchmark's commands until stdin closes; got counts
// the messages received.
func commands(got *counter) {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	var seen int64
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "expect":
			n, _ := strconv.ParseInt(arg, 10, 64)
			seen += n
			got.wait(seen)
			fmt.Fprintln(out, "got")
		case "cpu":
			fmt.Fprintln(out, int64(testutil.CPUTime()))
		default:
			fmt.Fprintln(out, "unknown command", cmd)
		}
		_ = out.Flush()
	}
}

// busServer runs the daemon as `agentbus serve` does with its defaults: a
// bus with the default Config, the protocol server with the default
// limits, a Unix socket of mode 0600, logs at Info.
func busServer(path string) error {
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	bus, err := agentbus.New(agentbus.Config{Logger: log})
	if err != nil {
		return err
	}
	l, err := transport.ListenUnix(path, transport.UnixOptions{})
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Bus: bus, Logger: log, Name: "agentbus/crossbench"})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	fmt.Println("ready", path)
	commands(newCounter())
	cancel()
	<-done
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = bus.Shutdown(sctx)
	_ = srv.Close(sctx)
	return l.Close()
}

// natsServer runs nats-server as its own main does with no flags, but on
// a random loopback port.
func natsServer() error {
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoSigs: true,
		NoLog: true})
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats-server not ready")
	}
	fmt.Println("ready", s.ClientURL())
	commands(newCounter())
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// busClient registers "consumer" (counting what it gets) or, with echo,
// "echo" (answering each request with its payload), with the Go client.
func busClient(path string, echo bool) error {
	ctx := context.Background()
	c, err := client.Dial(ctx, path, client.Options{Name: "crossbench"})
	if err != nil {
		return err
	}
	defer c.Close()
	got := newCounter()
	var h agentbus.HandlerFunc
	name := "consumer"
	if echo {
		name = "echo"
		h = func(ctx context.Context, m *agentbus.Message) error {
			_, err := c.ReplyAsync(ctx, m, m.Payload)
			return err
		}
	} else {
		h = func(_ context.Context, m *agentbus.Message) error {
			if len(m.Payload) != len(payload) || m.ID == "" {
				return fmt.Errorf("bad message %s", m.ID)
			}
			got.add()
			return nil
		}
	}
	if err := c.Register(ctx, name, h); err != nil {
		return err
	}
	fmt.Println("ready")
	commands(got)
	return nil
}

// natsClient subscribes to "consumer" (decoding and checking each message,
// as a user of NATS must) or, with echo, answers requests on "echo".
func natsClient(url string, echo bool) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	got := newCounter()
	var sub *nats.Subscription
	if echo {
		sub, err = nc.Subscribe("echo", func(m *nats.Msg) {
			var in wireMsg
			if json.Unmarshal(m.Data, &in) != nil {
				return
			}
			out := in
			out.ID, out.Type, out.Sender, out.Recipient = newID(), "response", in.Recipient, in.Sender
			b, _ := json.Marshal(&out)
			_ = m.Respond(b)
		})
	} else {
		sub, err = nc.Subscribe("consumer", func(m *nats.Msg) {
			var in wireMsg
			if json.Unmarshal(m.Data, &in) != nil || len(in.Payload) != len(payload) || in.ID == "" {
				return
			}
			got.add()
		})
	}
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return err
	}
	if err := nc.Flush(); err != nil {
		return err
	}
	fmt.Println("ready")
	commands(got)
	return nil
}
