package cluster

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"

	"github.com/descartes/agentbus/internal/protosys"
)

// processName prefixes the registered names of the nodes' frame receivers
// in the hub's actor system: peers send every data frame to
// processName + "/" + member id.
const processName = "$cluster"

// writerQueue is the initial size of protoactor remote's queue of frames
// for one peer (its endpoint writer's mailbox); the queue doubles when full.
// Deliveries in it are bounded by the link's window.
const writerQueue = 1024

// hub is the process's data link: one protoactor actor system with remote
// (gRPC streams), which every cluster node of the process sends and
// receives its data frames through.
//
// There is one per process, started by the first node and kept until the
// process exits, because protoactor's Remote.Start sets gRPC's global logger
// (grpclog.SetLoggerV2): calling it again while any gRPC goroutine runs is a
// data race, and gRPC's goroutines outlive a remote's Shutdown. So the
// process starts it exactly once; nodes of one process reach each other
// through it without a network hop, and nodes of other processes through
// gRPC. Its listener stays bound after the last node stops.
type hub struct {
	sys  *actor.ActorSystem
	rem  *remote.Remote
	addr string
	host string

	malformed atomic.Uint64 // envelopes dropped by sanitize, for every node
	log       *slog.Logger
}

// processHub is the process's hub, guarded by its mutex. It is the
// package's one variable besides sentinel errors, for the reason given at
// hub.
var processHub struct {
	sync.Mutex
	h *hub
}

// acquireHub returns the process's hub, starting it on host:port (0: a
// free port) if there is none yet. A hub started on another host is an
// error: its port is bound to that host only.
func acquireHub(host string, port int, logger *slog.Logger) (*hub, error) {
	processHub.Lock()
	defer processHub.Unlock()
	if h := processHub.h; h != nil {
		if h.host != host {
			return nil, fmt.Errorf("%w: this process's data link is bound to %s, not %s", ErrInvalidConfig, h.host, host)
		}
		return h, nil
	}
	h := &hub{host: host, log: logger}
	h.sys = protosys.New(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger.With("component", "protoactor-remote") }),
		actor.WithDeadLetterRequestLogging(false),
	)
	h.rem = remote.NewRemote(h.sys, remote.Configure(host, port,
		// protoactor's default allocates a queue of a million interface
		// slots (16 MB of pointers the collector scans every cycle) per
		// peer; it doubles when full, and a link's window bounds what it
		// holds, so it starts small.
		remote.WithEndpointWriterQueueSize(writerQueue),
		remote.WithServerOptions(grpc.StreamInterceptor(h.intercept))))
	if err := startRemote(h.rem); err != nil {
		return nil, err
	}
	h.addr = h.sys.Address()
	processHub.h = h
	return h, nil
}

// startRemote starts r, turning its panic (a port that cannot be bound)
// into an error.
func startRemote(r *remote.Remote) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("agentbus: cluster: start the data link: %v", v)
		}
	}()
	r.Start()
	return nil
}

// register makes n reachable at processName/id; it reports false if the
// name is taken.
func (h *hub) register(n *Node) bool {
	_, ok := h.sys.ProcessRegistry.Add(inbox{n}, processName+"/"+n.self)
	return ok
}

func (h *hub) unregister(n *Node) {
	h.sys.ProcessRegistry.Remove(actor.NewPID(h.addr, processName+"/"+n.self))
}

// pid is where member id, whose hub is at addr, receives data frames.
func pidOf(addr, id string) *actor.PID { return actor.NewPID(addr, processName+"/"+id) }
