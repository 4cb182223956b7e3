package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/descartes/agentbus/cluster/wire"
)

// control handles a control frame from a peer.
func (n *Node) control(f *wire.Frame) {
	switch f.GetKind() {
	case wire.Kind_STATE:
		n.applyState(f)
		if f.GetWantState() && !n.isFenced() {
			n.goSend(f.GetFrom(), n.stateFrame(false))
		}
	case wire.Kind_DELTA:
		n.applyDelta(f)
	case wire.Kind_LEAVING:
		n.mu.Lock()
		if m := n.members[f.GetFrom()]; m != nil {
			m.leaving = true
		}
		n.mu.Unlock()
	case wire.Kind_CLAIM:
		n.answerClaim(f)
	case wire.Kind_CLAIM_REPLY, wire.Kind_STATS_REPLY:
		n.mu.RLock()
		ch := n.queries[f.GetQueryId()]
		n.mu.RUnlock()
		if ch != nil {
			select {
			case ch <- f:
			default: // more replies than asked: a peer answered twice
			}
		}
	case wire.Kind_STATS_QUERY:
		n.spawn(func() {
			body, err := n.host.Stats()
			if err != nil {
				n.log.Warn("cluster: statistics", "error", err)
				return
			}
			if err := n.send(f.GetFrom(), &wire.Frame{Kind: wire.Kind_STATS_REPLY, QueryId: f.GetQueryId(), Body: body}); err != nil {
				n.log.Debug("cluster: statistics not sent", "member", f.GetFrom(), "error", err)
			}
		})
	default:
		n.stats.malformed.Add(1)
	}
}

// newer reports whether (epoch, version) comes after (e, v).
func newer(epoch, version, e, v uint64) bool {
	return epoch > e || epoch == e && version > v
}

// applyState replaces a member's directory entry with a newer one.
func (n *Node) applyState(f *wire.Frame) {
	id := f.GetFrom()
	if id == n.self {
		return
	}
	n.mu.Lock()
	if t, ok := n.tombs[id]; ok && !newer(f.GetEpoch(), f.GetDirVersion(), t.epoch, t.version) {
		n.mu.Unlock()
		return // from before it was declared gone
	}
	m := n.members[id]
	if m == nil {
		if len(n.members) >= maxMembers {
			n.mu.Unlock()
			return
		}
		m = &member{} // its join is on the way
		n.members[id] = m
	}
	if m.entry.known && !newer(f.GetEpoch(), f.GetDirVersion(), m.entry.epoch, m.entry.version) {
		n.mu.Unlock()
		return
	}
	delete(n.tombs, id)
	e := entry{epoch: f.GetEpoch(), version: f.GetDirVersion(), names: make(map[string]int64, len(f.GetClaims())),
		subs: make(map[string]struct{}, len(f.GetSubs())), known: true}
	for _, c := range f.GetClaims() {
		e.names[c.GetName()] = c.GetTime()
	}
	for _, s := range f.GetSubs() {
		e.subs[s] = struct{}{}
	}
	n.unindex(id, m.entry.names)
	m.entry = e
	n.indexNames(id, e.names)
	lost := n.conflictsLocked(id, e.names)
	n.mu.Unlock()
	n.lose(lost)
}

// applyDelta applies a change to a member's entry; one out of sequence asks
// the member for its whole entry.
func (n *Node) applyDelta(f *wire.Frame) {
	id := f.GetFrom()
	n.mu.Lock()
	m := n.members[id]
	if m == nil || !m.entry.known || f.GetEpoch() != m.entry.epoch || f.GetDirVersion() != m.entry.version+1 {
		stale := m != nil && m.entry.known && !newer(f.GetEpoch(), f.GetDirVersion(), m.entry.epoch, m.entry.version)
		_, buried := n.tombs[id]
		n.mu.Unlock()
		if !stale && !buried {
			n.goSend(id, n.stateFrame(true))
		}
		return
	}
	m.entry.version++
	added := make(map[string]int64, len(f.GetClaims()))
	for _, c := range f.GetClaims() {
		added[c.GetName()] = c.GetTime()
		m.entry.names[c.GetName()] = c.GetTime()
	}
	removed := make(map[string]int64, len(f.GetReleased()))
	for _, name := range f.GetReleased() {
		removed[name] = 0
		delete(m.entry.names, name)
	}
	for _, s := range f.GetSubs() {
		m.entry.subs[s] = struct{}{}
	}
	for _, s := range f.GetUnsubs() {
		delete(m.entry.subs, s)
	}
	n.unindex(id, removed)
	n.unindex(id, added)
	n.indexNames(id, added)
	lost := n.conflictsLocked(id, added)
	n.mu.Unlock()
	n.lose(lost)
}

// conflictsLocked returns the names of this node's that member id also
// claims and whose claim beats this node's; n.mu held.
func (n *Node) conflictsLocked(id string, names map[string]int64) []string {
	var lost []string
	for name, t := range names {
		mine, ok := n.own.names[name]
		if !ok {
			mine, ok = n.claimed[name]
		}
		if ok && (claim{member: id, time: t}).wins(claim{member: n.self, time: mine}) {
			lost = append(lost, name)
		}
	}
	return lost
}

// lose gives up names another node won: they leave this node's entry and
// their agents are stopped, their queues dead-lettered with ErrNameConflict.
func (n *Node) lose(names []string) {
	if len(names) == 0 {
		return
	}
	n.mu.Lock()
	for _, name := range names {
		delete(n.own.names, name)
		delete(n.claimed, name)
		n.lost[name] = struct{}{}
	}
	n.mu.Unlock()
	for _, name := range names {
		n.log.Warn("cluster: agent name lost to another node", "agent", name)
		n.stats.conflicts.Add(1)
		n.host.StopAgent(name, fmt.Errorf("%w: %q is kept by another node", ErrNameConflict, name))
	}
}

// Lost reports whether the local agent name lost its name to another node
// and is being stopped.
func (n *Node) Lost(name string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	_, ok := n.lost[name]
	return ok
}

// indexNames and unindex keep the name index; n.mu held.
func (n *Node) indexNames(id string, names map[string]int64) {
	for name, t := range names {
		n.index[name] = append(n.index[name], claim{member: id, time: t})
	}
}

func (n *Node) unindex(id string, names map[string]int64) {
	for name := range names {
		cs := slices.DeleteFunc(n.index[name], func(c claim) bool { return c.member == id })
		if len(cs) == 0 {
			delete(n.index, name)
		} else {
			n.index[name] = cs
		}
	}
}

// reindex indexes a member's names again; n.mu held.
func (n *Node) reindex(id string, m *member) {
	n.unindex(id, m.entry.names)
	n.indexNames(id, m.entry.names)
}

// buryLocked takes a gone member's entry out of the directory, remembering
// its version; n.mu held.
func (n *Node) buryLocked(id string, m *member) {
	if len(n.tombs) >= maxTombs {
		oldest := ""
		for k, t := range n.tombs {
			if oldest == "" || t.at.Before(n.tombs[oldest].at) {
				oldest = k
			}
		}
		delete(n.tombs, oldest)
	}
	n.tombs[id] = tomb{epoch: m.entry.epoch, version: m.entry.version, at: time.Now()}
	n.unindex(id, m.entry.names)
	m.entry = entry{}
}

// stateFrame is this node's whole entry.
func (n *Node) stateFrame(want bool) *wire.Frame {
	n.mu.RLock()
	defer n.mu.RUnlock()
	f := &wire.Frame{Kind: wire.Kind_STATE, From: n.self, Epoch: n.own.epoch, DirVersion: n.own.version, WantState: want}
	for name, t := range n.own.names {
		f.Claims = append(f.Claims, &wire.Claim{Name: name, Time: t})
	}
	for s := range n.own.subs {
		f.Subs = append(f.Subs, s)
	}
	return f
}

// sendState sends this node's entry to member id.
func (n *Node) sendState(id string, want bool) { n.goSend(id, n.stateFrame(want)) }

// announcer keeps this node's entry in step with the bus's agents and
// subscriptions, and tells the alive members each change.
func (n *Node) announcer() {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var agentsGen, topicsGen uint64
	first := true
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		case <-n.wake:
		}
		if n.isFenced() {
			continue
		}
		ag, tg := n.host.Generation()
		n.mu.RLock()
		idle := !first && ag == agentsGen && tg == topicsGen && len(n.claimed) == 0
		n.mu.RUnlock()
		if idle {
			continue
		}
		first, agentsGen, topicsGen = false, ag, tg
		names, subs := n.host.Agents(), n.host.Topics()
		n.mu.Lock()
		f := &wire.Frame{Kind: wire.Kind_DELTA, From: n.self}
		have := make(map[string]struct{}, len(names))
		for _, name := range names {
			have[name] = struct{}{}
			if _, ok := n.own.names[name]; ok {
				continue
			}
			if _, ok := n.lost[name]; ok {
				continue // being stopped
			}
			t, ok := n.claimed[name]
			if !ok {
				t = time.Now().UnixNano()
			}
			delete(n.claimed, name)
			n.own.names[name] = t
			f.Claims = append(f.Claims, &wire.Claim{Name: name, Time: t})
		}
		for name := range n.own.names {
			if _, ok := have[name]; !ok {
				delete(n.own.names, name)
				f.Released = append(f.Released, name)
			}
		}
		for name := range n.lost {
			if _, ok := have[name]; !ok {
				delete(n.lost, name)
			}
		}
		for name := range n.claimed {
			if _, ok := have[name]; !ok {
				if _, claiming := n.claiming[name]; !claiming {
					delete(n.claimed, name) // its Spawn failed after all
				}
			}
		}
		haveSubs := make(map[string]struct{}, len(subs))
		for _, s := range subs {
			haveSubs[s] = struct{}{}
			if _, ok := n.own.subs[s]; !ok {
				n.own.subs[s] = struct{}{}
				f.Subs = append(f.Subs, s)
			}
		}
		for s := range n.own.subs {
			if _, ok := haveSubs[s]; !ok {
				delete(n.own.subs, s)
				f.Unsubs = append(f.Unsubs, s)
			}
		}
		if len(f.Claims)+len(f.Released)+len(f.Subs)+len(f.Unsubs) == 0 {
			n.mu.Unlock()
			continue
		}
		n.own.version++
		f.Epoch, f.DirVersion = n.own.epoch, n.own.version
		n.mu.Unlock()
		for _, id := range n.Alive() {
			n.goSend(id, f)
		}
	}
}

// Claim asks every alive member whether this node may take the agent name:
// it may unless one holds it (or its directory says a third does) or one is
// taking it with a claim that wins. It blocks up to Config.ClaimTimeout; a
// member that does not answer in time is not waited for. It returns an error
// wrapping ErrNameTaken if the name is taken, and otherwise a function that
// the caller must call once it has spawned the agent (true) or given up
// (false).
func (n *Node) Claim(name string) (done func(spawned bool), err error) {
	n.mu.Lock()
	if w, ok := n.winner(name); ok {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %q is on %s", ErrNameTaken, name, w.member)
	}
	if _, ok := n.claiming[name]; ok {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %q is being taken", ErrNameTaken, name)
	}
	t := time.Now().UnixNano()
	n.claiming[name] = t
	n.mu.Unlock()
	holder, err := n.ask(name, t)
	if err == nil && holder != "" {
		err = fmt.Errorf("%w: %q is on %s", ErrNameTaken, name, holder)
	}
	if err != nil {
		n.mu.Lock()
		delete(n.claiming, name)
		n.mu.Unlock()
		return nil, err
	}
	return func(spawned bool) {
		n.mu.Lock()
		delete(n.claiming, name)
		if spawned {
			n.claimed[name] = t
		}
		n.mu.Unlock()
		n.signal(n.wake)
	}, nil
}

// ask sends a CLAIM of name at time t to every alive member and returns the
// holder named by the first refusal, or "" if none refused in time.
func (n *Node) ask(name string, t int64) (string, error) {
	peers := n.Alive()
	if len(peers) == 0 {
		return "", nil
	}
	id, ch := n.query(len(peers))
	defer n.endQuery(id)
	for _, p := range peers {
		n.goSend(p, &wire.Frame{Kind: wire.Kind_CLAIM, QueryId: id, Name: name, ClaimTime: t})
	}
	timer := time.NewTimer(n.cfg.ClaimTimeout)
	defer timer.Stop()
	for range peers {
		select {
		case r := <-ch:
			if !r.GetGranted() {
				return r.GetHolder(), nil
			}
		case <-timer.C:
			n.log.Debug("cluster: claim not answered by every member", "agent", name)
			return "", nil
		case <-n.ctx.Done():
			return "", ErrClosed
		}
	}
	return "", nil
}

// query opens a query expecting up to replies answers.
func (n *Node) query(replies int) (uint64, chan *wire.Frame) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nextQuery++
	ch := make(chan *wire.Frame, replies)
	n.queries[n.nextQuery] = ch
	return n.nextQuery, ch
}

func (n *Node) endQuery(id uint64) {
	n.mu.Lock()
	delete(n.queries, id)
	n.mu.Unlock()
}

// answerClaim answers a member taking a name.
func (n *Node) answerClaim(f *wire.Frame) {
	name := f.GetName()
	r := &wire.Frame{Kind: wire.Kind_CLAIM_REPLY, QueryId: f.GetQueryId(), Name: name, Granted: true}
	asker := claim{member: f.GetFrom(), time: f.GetClaimTime()}
	if n.host.HasAgent(name) && !n.Lost(name) {
		// Both hold it (each side of a partition took it, or this node
		// took it while the asker was thought dead): the earlier claim
		// keeps it. If it is the asker's, this node's agent is stopped
		// before the asker hears it may go on.
		n.mu.RLock()
		mine, ok := n.own.names[name]
		if !ok {
			mine, ok = n.claimed[name]
		}
		n.mu.RUnlock()
		if !ok || (claim{member: n.self, time: mine}).wins(asker) {
			r.Granted, r.Holder = false, n.self
		} else {
			n.lose([]string{name})
		}
	} else {
		n.mu.RLock()
		if t, ok := n.claiming[name]; ok && (claim{member: n.self, time: t}).wins(asker) {
			r.Granted, r.Holder = false, n.self
		} else if w, ok := n.winner(name); ok && w.member != f.GetFrom() && w.wins(asker) {
			r.Granted, r.Holder = false, w.member
		}
		n.mu.RUnlock()
	}
	n.goSend(f.GetFrom(), r)
}

// Stats asks every alive member for its statistics and returns the answers
// by member id (JSON, as Host.Stats encodes them), with the ids of the
// members that did not answer before ctx ended. It blocks until all answered
// or ctx ends.
func (n *Node) Stats(ctx context.Context) (map[string][]byte, []string) {
	peers := n.Alive()
	out := make(map[string][]byte, len(peers))
	if len(peers) == 0 {
		return out, nil
	}
	id, ch := n.query(len(peers))
	defer n.endQuery(id)
	for _, p := range peers {
		n.goSend(p, &wire.Frame{Kind: wire.Kind_STATS_QUERY, QueryId: id})
	}
	for len(out) < len(peers) {
		select {
		case r := <-ch:
			out[r.GetFrom()] = r.GetBody()
		case <-ctx.Done():
			var missing []string
			for _, p := range peers {
				if _, ok := out[p]; !ok {
					missing = append(missing, p)
				}
			}
			return out, missing
		}
	}
	return out, nil
}

// Fenced reports whether this node is fenced (see isFenced). It does not
// block.
func (n *Node) Fenced() bool { return n.isFenced() }

// isFenced reports whether this node does not vouch for its names: it is
// reconciling, or has heard from no peer for longer than FenceAfter while it
// has peers (it was stalled, or is cut off, and may have been declared dead).
func (n *Node) isFenced() bool {
	return n.fenced.Load() || n.clockFenced()
}

func (n *Node) clockFenced() bool {
	return n.alive.Load() > 0 && time.Duration(int64(time.Since(n.start))-n.lastContact.Load()) > n.cfg.FenceAfter
}

// Gate returns once this node vouches for its names, at once unless it is
// fenced; then it waits until the node has checked with the others (or ctx
// ends). It returns an error wrapping ErrNameConflict if agent lost its name
// meanwhile. Agents' handlers call it before each message.
func (n *Node) Gate(ctx context.Context, agent string) error {
	if !n.isFenced() {
		return nil
	}
	return n.gate(ctx, agent)
}

// gate is Gate's slow path, apart so that the fast path's frame stays small
// on the agents' (fresh, small) goroutines.
//
//go:noinline
func (n *Node) gate(ctx context.Context, agent string) error {
	n.fence()
	for n.isFenced() {
		n.mu.RLock()
		settled := n.settled
		n.mu.RUnlock()
		select {
		case <-settled:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(n.cfg.FenceAfter / 4):
		}
	}
	if n.Lost(agent) {
		return fmt.Errorf("%w: %q", ErrNameConflict, agent)
	}
	return nil
}

// watchdog fences the node when it has heard from no peer for FenceAfter
// (or memberlist refuted its death), and reconciles.
func (n *Node) watchdog() {
	tick := time.NewTicker(max(n.cfg.FenceAfter/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
			if n.clockFenced() {
				n.fence()
			}
		case <-n.recon:
		}
		if n.fenced.Load() {
			n.reconcile()
		}
	}
}

// fence stops the node vouching for its names until reconcile has run.
func (n *Node) fence() {
	n.mu.Lock()
	if !n.fenced.Load() {
		n.fenced.Store(true)
		n.settled = make(chan struct{})
		n.stats.fences.Add(1)
		n.log.Warn("cluster: fenced: heard from no peer for too long (or was declared dead); checking names before going on",
			"after", n.cfg.FenceAfter)
	}
	n.mu.Unlock()
	n.signal(n.recon)
}

// reconcile runs while the node is fenced: once it hears from peers again
// (or has none left), it asks them about every name it holds, gives up those
// another node holds now, and announces the rest under a new epoch.
func (n *Node) reconcile() {
	began := time.Now()
	defer func() {
		n.mu.Lock()
		n.own.epoch++
		n.fenced.Store(false)
		close(n.settled)
		n.mu.Unlock()
		for _, id := range n.Alive() {
			n.sendState(id, false)
		}
		n.log.Info("cluster: unfenced", "took", time.Since(began))
	}()
	tick := time.NewTicker(max(n.cfg.FenceAfter/4, 10*time.Millisecond))
	defer tick.Stop()
	until := time.Now().Add(2 * n.cfg.DetectionBound())
	for n.clockFenced() && time.Now().Before(until) {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
	}
	n.mu.RLock()
	mine := make(map[string]int64, len(n.own.names)+len(n.claimed))
	for name, t := range n.own.names {
		mine[name] = t
	}
	for name, t := range n.claimed {
		mine[name] = t
	}
	n.mu.RUnlock()
	var (
		mu   sync.Mutex
		lost []string
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 16)
	)
	for name, t := range mine {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if holder, err := n.ask(name, t); err == nil && holder != "" && holder != n.self {
				mu.Lock()
				lost = append(lost, name)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n.lose(lost)
}
