package cluster

import (
	"sync/atomic"
	"time"
)

// counters are the node's own counts.
type counters struct {
	sent          atomic.Uint64 // messages handed to links
	confirmed     atomic.Uint64 // of those, confirmed by their member
	undelivered   atomic.Uint64 // of those, handed back (member gone, node closed)
	retransmitted atomic.Uint64
	received      atomic.Uint64 // messages taken from peers
	duplicates    atomic.Uint64 // retransmitted copies dropped
	parked        atomic.Uint64 // messages that waited behind a full destination
	malformed     atomic.Uint64 // frames or envelopes dropped as malformed
	refused       atomic.Uint64 // peers or frames of another wire version or cluster
	strays        atomic.Uint64 // frames from non-members, dropped
	conflicts     atomic.Uint64 // agent names lost to another node
	fences        atomic.Uint64 // times the node fenced itself
}

// Counters is a snapshot of a node's link and membership counts. Sent ==
// Confirmed + Undelivered + InFlight.
type Counters struct {
	Sent          uint64 `json:"sent"`
	Confirmed     uint64 `json:"confirmed"`
	Undelivered   uint64 `json:"undelivered"`
	InFlight      int    `json:"in_flight"`
	Retransmitted uint64 `json:"retransmitted"`
	Received      uint64 `json:"received"`
	Duplicates    uint64 `json:"duplicates"`
	Parked        uint64 `json:"parked"`
	Malformed     uint64 `json:"malformed"`
	Refused       uint64 `json:"refused"`
	Strays        uint64 `json:"strays"`
	Conflicts     uint64 `json:"conflicts"`
	Fences        uint64 `json:"fences"`
}

// Counters returns the node's counts. It does not block.
func (n *Node) Counters() Counters {
	c := Counters{
		Confirmed:     n.stats.confirmed.Load(),
		Undelivered:   n.stats.undelivered.Load(),
		Retransmitted: n.stats.retransmitted.Load(),
		Received:      n.stats.received.Load(),
		Duplicates:    n.stats.duplicates.Load(),
		Parked:        n.stats.parked.Load(),
		Malformed:     n.stats.malformed.Load() + n.hub.malformed.Load(),
		Refused:       n.stats.refused.Load(),
		Strays:        n.stats.strays.Load(),
		Conflicts:     n.stats.conflicts.Load(),
		Fences:        n.stats.fences.Load(),
	}
	c.Sent = n.stats.sent.Load() // after the others: in flight never goes negative
	c.InFlight = int(c.Sent - c.Confirmed - c.Undelivered)
	return c
}

// maintain retransmits unconfirmed frames, rejoins lost members and seeds,
// and forgets old tombstones.
func (n *Node) maintain() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastJoin := time.Now()
	lost := map[string]time.Time{} // membership addresses of members gone, with when
	for {
		select {
		case <-n.ctx.Done():
			return
		case now := <-tick.C:
			n.mu.Lock()
			var links []*link
			alive := map[string]bool{}
			for id, m := range n.members {
				switch {
				case m.state == StateAlive:
					links = append(links, m.link)
					alive[m.node.Address()] = true
				case m.node != nil:
					if _, ok := lost[m.node.Address()]; !ok && now.Sub(m.since) < tombAge {
						lost[m.node.Address()] = m.since
					}
				case m.state == 0 && now.Sub(m.since) > time.Minute:
					delete(n.members, id) // a STATE whose member never joined
				}
			}
			for id, t := range n.tombs {
				if now.Sub(t.at) > tombAge {
					delete(n.tombs, id)
				}
			}
			n.mu.Unlock()
			for _, l := range links {
				l.retransmit(now)
			}
			if now.Sub(lastJoin) < time.Second {
				continue
			}
			lastJoin = now
			var try []string
			for addr, since := range lost {
				if alive[addr] || now.Sub(since) > tombAge {
					delete(lost, addr)
					continue
				}
				try = append(try, addr)
			}
			for _, s := range n.cfg.Seeds {
				if !alive[s] && s != n.addr {
					try = append(try, s)
				}
			}
			if len(try) > 0 && len(try) <= 64 {
				// Partitions heal, and a node declared dead may be alive:
				// memberlist stops probing the dead, so ask again.
				_, _ = n.ml.Join(try)
			}
		}
	}
}
