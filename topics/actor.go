package topics

import (
	"errors"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
)

var (
	// ErrNoSubscribers means a message was published on a subject nobody
	// is subscribed to.
	ErrNoSubscribers = errors.New("agentbus: no subscribers")
	// ErrSubscriberGone means a subscriber stopped between subscribing and
	// the delivery.
	ErrSubscriberGone = errors.New("agentbus: subscriber gone")
)

// Subscriber is a resolved subscriber that a topic can post to.
type Subscriber interface {
	Name() string
	// TryPost queues msg without waiting, or returns why it could not.
	TryPost(msg *actors.Message) error
}

// Directory resolves subscriber names for topic actors and takes what they
// cannot deliver. Its methods are called on topic actors' goroutines and must
// not block.
type Directory interface {
	// Subscriber returns the named subscriber, or nil if there is none.
	Subscriber(name string) Subscriber
	// Generation changes whenever Subscriber's answers may change.
	Generation() uint64
	// Undeliverable receives a message that could not be delivered to
	// subscriber ("" when there was none), with the reason: ErrNoSubscribers,
	// ErrSubscriberGone or the subscriber's TryPost error.
	Undeliverable(msg *actors.Message, subscriber string, err error)
}

// Actor returns the props of the actor for one topic, subject. It fans each
// message it receives out to the subscribers the registry gives for subject,
// without waiting on any of them: a full or slow subscriber gets its copy
// dead-lettered through dir and never holds up the others. Subscribers are
// resolved once and cached until the registry or the directory changes. The
// same *Message goes to every subscriber, so handlers must treat it as
// read-only.
//
// When a message finds no subscriber and nothing else is queued, the topic
// actor stops itself; retired is then called (on the actor's goroutine) so its
// owner can forget it. A later publish starts a new one.
func Actor(subject string, reg *Registry, dir Directory, queued func() int, retired func()) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &topicActor{subject: subject, reg: reg, dir: dir, queued: queued, retired: retired}
	})
}

type topicActor struct {
	subject  string
	reg      *Registry
	dir      Directory
	queued   func() int
	retired  func()
	resolved bool
	regGen   uint64
	dirGen   uint64
	names    []string
	subs     []Subscriber // parallel to names; nil where the agent is gone
}

func (t *topicActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actors.Message:
		t.fanout(m)
		if len(t.names) == 0 && t.queued() == 0 {
			c.Stop(c.Self())
		}
	case *actor.Stopped:
		t.retired()
	}
}

func (t *topicActor) refresh() {
	rg, dg := t.reg.Generation(), t.dir.Generation()
	if t.resolved && rg == t.regGen && dg == t.dirGen {
		return
	}
	t.names = t.reg.Match(t.subject, t.names[:0])
	t.subs = t.subs[:0]
	for _, n := range t.names {
		t.subs = append(t.subs, t.dir.Subscriber(n))
	}
	t.resolved, t.regGen, t.dirGen = true, rg, dg
}

func (t *topicActor) fanout(m *actors.Message) {
	t.refresh()
	if len(t.names) == 0 {
		t.dir.Undeliverable(m, "", ErrNoSubscribers)
		return
	}
	for i, s := range t.subs {
		if s == nil {
			t.dir.Undeliverable(m, t.names[i], ErrSubscriberGone)
			continue
		}
		d := m
		if m.RequiresAck {
			d = m.Clone() // each subscriber acknowledges, and counts attempts, on its own
		}
		if err := s.TryPost(d); err != nil {
			t.dir.Undeliverable(d, t.names[i], err)
		}
	}
}
