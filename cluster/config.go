package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultListen        = "127.0.0.1:0"
	DefaultProbeInterval = 200 * time.Millisecond
	DefaultProbeTimeout  = 150 * time.Millisecond
	DefaultSuspicionMult = 4
	DefaultClaimTimeout  = time.Second
	DefaultWindow        = 1024
	DefaultJoinTimeout   = 5 * time.Second
)

// Config configures a node. The zero value, with a Name, is a valid
// single-machine node: it listens on 127.0.0.1 on free ports.
type Config struct {
	// Name is the cluster's name; nodes of another name never join (their
	// packets are dropped). Required.
	Name string
	// NodeName names this node to people (Member.Name). Default: the
	// advertised membership address. Each run of a node also gets a boot
	// id, so a restarted node is a new member.
	NodeName string
	// Listen is the membership address (UDP and TCP, hashicorp/memberlist),
	// host:port, which seeds name. The host must be an IP address (or
	// localhost); every port the node opens binds to it, never to all
	// interfaces, and it is also the address peers are given. Port 0: a
	// free port. Default 127.0.0.1:0.
	Listen string
	// RemotePort is the port of the data link (protoactor remote, gRPC) on
	// Listen's host. Default 0: a free port, announced to peers.
	RemotePort int
	// Seeds are membership addresses (host:port) of nodes to join. Any one
	// reachable seed suffices; the node keeps retrying the others (and
	// members it lost) in the background. Empty: a new cluster.
	Seeds []string
	// ProbeInterval is how often a member probes another (SWIM). Together
	// with ProbeTimeout and SuspicionMult it sets how long a failed node
	// takes to be declared dead; see docs/cluster.md. Default 200 ms.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for its ack. Default 150 ms.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspected member has to refute the
	// suspicion (SuspicionMult × ProbeInterval, up to three times that).
	// Default 4.
	SuspicionMult int
	// FenceAfter is how long this node may hear nothing from any peer
	// before it fences itself: its agents stop handling messages until it
	// has checked with the others that nobody took their names (see
	// docs/cluster.md). It must be shorter than the time a silent node
	// takes to be declared dead. Default: ProbeTimeout + SuspicionMult ×
	// ProbeInterval / 2.
	FenceAfter time.Duration
	// ClaimTimeout bounds how long Spawn waits for the other nodes to agree
	// that a name is free. A node that does not answer in time is not
	// waited for. Default 1 s.
	ClaimTimeout time.Duration
	// Window caps the messages in flight on a link to one peer (sent, not
	// yet confirmed by it). A sender that finds the window full waits as it
	// waits for a full mailbox. Default 1024.
	Window int
	// JoinTimeout bounds the first join to the seeds. Default 5 s.
	JoinTimeout time.Duration
	// Logger receives the node's logs (memberlist's at Debug). Nil: the
	// bus's logger.
	Logger *slog.Logger
	// Partition, if set, simulates network partitions between the
	// in-process nodes that share it (see Partition); for tests.
	Partition *Partition
}

// withDefaults returns c with zero fields defaulted and its address
// resolved, or an error wrapping ErrInvalidConfig.
func (c Config) withDefaults() (Config, string, int, error) {
	if c.Name == "" {
		return c, "", 0, fmt.Errorf("%w: empty cluster name", ErrInvalidConfig)
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c, "", 0, fmt.Errorf("%w: listen address %q: %w", ErrInvalidConfig, c.Listen, err)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return c, "", 0, fmt.Errorf("%w: listen host %q is not one IP address (all interfaces are never bound)", ErrInvalidConfig, host)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return c, "", 0, fmt.Errorf("%w: listen port %q", ErrInvalidConfig, portStr)
	}
	if c.RemotePort < 0 || c.RemotePort > 65535 {
		return c, "", 0, fmt.Errorf("%w: remote port %d", ErrInvalidConfig, c.RemotePort)
	}
	for _, s := range c.Seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return c, "", 0, fmt.Errorf("%w: seed %q: %w", ErrInvalidConfig, s, err)
		}
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ProbeInterval", &c.ProbeInterval, DefaultProbeInterval},
		{"ProbeTimeout", &c.ProbeTimeout, DefaultProbeTimeout},
		{"ClaimTimeout", &c.ClaimTimeout, DefaultClaimTimeout},
		{"JoinTimeout", &c.JoinTimeout, DefaultJoinTimeout},
		{"FenceAfter", &c.FenceAfter, 0},
	}
	for _, f := range durations {
		if *f.v < 0 {
			return c, "", 0, fmt.Errorf("%w: %s is %v, must not be negative", ErrInvalidConfig, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if c.SuspicionMult < 0 || c.Window < 0 {
		return c, "", 0, fmt.Errorf("%w: SuspicionMult %d, Window %d: must not be negative", ErrInvalidConfig, c.SuspicionMult, c.Window)
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = DefaultSuspicionMult
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.FenceAfter == 0 {
		c.FenceAfter = c.ProbeTimeout + time.Duration(c.SuspicionMult)*c.ProbeInterval/2
	}
	if min := c.ProbeTimeout + time.Duration(c.SuspicionMult)*c.ProbeInterval; c.FenceAfter >= min {
		return c, "", 0, fmt.Errorf("%w: FenceAfter %v must be shorter than the soonest a silent node is declared dead (%v)",
			ErrInvalidConfig, c.FenceAfter, min)
	}
	if c.ProbeTimeout >= c.ProbeInterval*4 {
		return c, "", 0, fmt.Errorf("%w: ProbeTimeout %v is too long for ProbeInterval %v", ErrInvalidConfig, c.ProbeTimeout, c.ProbeInterval)
	}
	return c, ip.String(), port, nil
}

// DetectionBound returns the longest a node that stopped answering (killed,
// stalled, cut off) stays listed as alive under c: a failed probe within two
// probe rounds, then the suspicion timeout at its longest
// (3 × SuspicionMult × ProbeInterval). With the defaults: 2.95 s.
func (c Config) DetectionBound() time.Duration {
	if c.Name == "" {
		c.Name = "-" // only the timing fields matter here
	}
	c, _, _, _ = c.withDefaults()
	return 2*c.ProbeInterval + c.ProbeTimeout + 3*time.Duration(c.SuspicionMult)*c.ProbeInterval
}
