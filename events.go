package agentbus

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/supervisor"
)

// EventKind says what an Event reports.
type EventKind uint8

// The event kinds.
const (
	EventStarted    EventKind = iota + 1 // an agent started
	EventRestarted                       // an agent was restarted by its supervisor
	EventStopped                         // an agent stopped; Err says why
	EventSupervised                      // a supervision decision; Supervision says which
	EventDeadLetter                      // a message was dead-lettered; Letter has it
	EventNodeJoined                      // a cluster node joined (or rejoined); Node has it
	EventNodeLeft                        // a cluster node left or failed; Node has it, Err says which
)

// String returns the kind's name, such as "dead_letter".
func (k EventKind) String() string {
	switch k {
	case EventStarted:
		return "started"
	case EventRestarted:
		return "restarted"
	case EventStopped:
		return "stopped"
	case EventSupervised:
		return "supervised"
	case EventDeadLetter:
		return "dead_letter"
	case EventNodeJoined:
		return "node_joined"
	case EventNodeLeft:
		return "node_left"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something that happened to an agent or a message.
type Event struct {
	Kind  EventKind
	Agent string
	Time  time.Time
	// Restarts counts the agent's restarts so far (Started, Restarted).
	Restarts int
	// Err is why an agent stopped (Stopped): ErrAgentStopped for Stop,
	// supervisor.ErrRestartLimit, supervisor.ErrStoppedBySupervisor,
	// ErrShutdown, or ErrNameConflict; or why a node left (NodeLeft).
	Err error
	// Supervision is the decision, for EventSupervised.
	Supervision *supervisor.Event
	// Letter is the dead letter, for EventDeadLetter.
	Letter *deadletter.Letter
	// Node is the cluster node, for EventNodeJoined and EventNodeLeft (Err
	// is ErrNodeLeft or ErrNodeUnreachable for the latter).
	Node *Member
}

// DefaultEventBuffer is the buffer of a subscription made with a buffer < 1.
const DefaultEventBuffer = 256

// MaxEventSubscriptions bounds the open event subscriptions of a bus.
const MaxEventSubscriptions = 1024

// Subscription delivers events. Each has a bounded buffer: when it is full,
// further events are counted in Missed instead of waiting, so a subscriber
// that does not read never slows the bus or grows its memory.
type Subscription struct {
	c      chan Event
	missed atomic.Uint64
	agent  string // only this agent's events, if set
	hub    *eventHub
	once   sync.Once
}

// C returns the channel of events. It is closed by Close and by Shutdown.
func (s *Subscription) C() <-chan Event { return s.c }

// Missed returns how many events were dropped because the buffer was full.
func (s *Subscription) Missed() uint64 { return s.missed.Load() }

// Close ends the subscription and closes C. It is idempotent.
func (s *Subscription) Close() { s.hub.remove(s) }

// eventHub fans events out to subscriptions without blocking.
type eventHub struct {
	mu     sync.RWMutex
	subs   map[*Subscription]struct{}
	closed bool
	n      atomic.Int32 // len(subs), read without the lock on every emit
}

func (h *eventHub) add(buffer int, agent string) (*Subscription, error) {
	if buffer < 1 {
		buffer = DefaultEventBuffer
	}
	s := &Subscription{c: make(chan Event, buffer), agent: agent, hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if len(h.subs) >= MaxEventSubscriptions {
		return nil, fmt.Errorf("%w: %d event subscriptions are open", ErrInvalidConfig, MaxEventSubscriptions)
	}
	if h.subs == nil {
		h.subs = make(map[*Subscription]struct{})
	}
	h.subs[s] = struct{}{}
	h.n.Add(1)
	return s, nil
}

func (h *eventHub) remove(s *Subscription) {
	s.once.Do(func() {
		h.mu.Lock()
		if _, ok := h.subs[s]; ok {
			delete(h.subs, s)
			h.n.Add(-1)
		}
		close(s.c)
		h.mu.Unlock()
	})
}

// emit delivers e to every matching subscription without blocking.
func (h *eventHub) emit(e Event) {
	if h.n.Load() == 0 {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if s.agent != "" && s.agent != e.Agent {
			continue
		}
		select {
		case s.c <- e:
		default:
			s.missed.Add(1)
		}
	}
}

// Observe announces a dead letter as an EventDeadLetter.
func (h *eventHub) Observe(o Outcome) {
	l := o.Letter
	h.emit(Event{Kind: EventDeadLetter, Agent: l.Agent, Time: l.Time, Letter: l})
}

// close ends every subscription.
func (h *eventHub) close() {
	h.mu.Lock()
	h.closed = true
	subs := h.subs
	h.subs = nil
	h.n.Store(0)
	h.mu.Unlock()
	for s := range subs {
		s.once.Do(func() { close(s.c) })
	}
}

// Events subscribes to every event of the bus: agents starting, restarting
// and stopping, supervision decisions, and dead letters. buffer (< 1: 256)
// bounds what waits unread; beyond it events are counted as missed. It does
// not block. It returns ErrClosed after Shutdown, or ErrInvalidConfig when
// MaxEventSubscriptions are open.
func (b *Bus) Events(buffer int) (*Subscription, error) { return b.events.add(buffer, "") }

// Watch subscribes to the events of the agent named agent, as Events does.
// It returns ErrNoRecipient if there is no such agent.
func (b *Bus) Watch(agent string, buffer int) (*Subscription, error) {
	if b.agent(agent) == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoRecipient, agent)
	}
	return b.events.add(buffer, agent)
}
