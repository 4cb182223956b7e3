package cluster

import (
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Partition simulates network partitions between nodes of one process, for
// tests: nodes whose Config.Partition is the same *Partition drop every
// membership packet, membership connection and data frame between the pairs
// it cuts, in both directions, as a network that loses them would. It is
// safe for concurrent use.
type Partition struct {
	mu  sync.Mutex
	cut map[[2]string]struct{}
}

// NewPartition returns a Partition that cuts nothing.
func NewPartition() *Partition { return &Partition{cut: map[[2]string]struct{}{}} }

// Split cuts every node of side a from every node of side b (nodes named
// by their membership address, Member.Addr).
func (p *Partition) Split(a, b []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			p.cut[[2]string{x, y}] = struct{}{}
			p.cut[[2]string{y, x}] = struct{}{}
		}
	}
}

// Heal restores every connection.
func (p *Partition) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.cut)
}

func (p *Partition) blocked(from, to string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.cut[[2]string{from, to}]
	return ok
}

// wrap returns memberlist's transport for the node at self, cut where p
// says.
func (p *Partition) wrap(self string, t memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	return &cutTransport{NodeAwareTransport: t, p: p, self: self}
}

type cutTransport struct {
	memberlist.NodeAwareTransport
	p    *Partition
	self string
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.p.blocked(t.self, addr) {
		return time.Now(), nil // lost on the way
	}
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.p.blocked(t.self, a.Addr) {
		return time.Now(), nil
	}
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *cutTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.p.blocked(t.self, addr) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: partitionError{}}
	}
	return t.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.p.blocked(t.self, a.Addr) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: partitionError{}}
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// partitionError is the error of a dial a Partition cut.
type partitionError struct{}

func (partitionError) Error() string   { return "partitioned (simulated)" }
func (partitionError) Timeout() bool   { return true }
func (partitionError) Temporary() bool { return true }
