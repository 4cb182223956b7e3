package agentbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/internal/backoff"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/topics"
)

// errTopicRetired closes the mailbox of a topic actor that stopped itself;
// what it still held is published again through a new topic actor.
var errTopicRetired = errors.New("agentbus: topic retired")

// topicRef is one running topic actor.
type topicRef struct {
	subject string
	pid     *actor.PID
	mb      *mailbox.Mailbox
	done    chan struct{} // closed once the actor has stopped and is retired
	lastUse time.Time     // guarded by Bus.topicsMu
}

// Subscribe subscribes the agent named agent to topic, an exact subject
// ("agents.coder.done") or a pattern with NATS wildcards ("agents.*.done",
// "events.>"). Subscribing twice is a no-op. A stopped agent leaves all its
// topics. It does not block. Errors: ErrInvalidSubject, ErrNoRecipient (no
// such agent), ErrTooManySubscriptions, ErrClosed.
func (b *Bus) Subscribe(topic, agent string) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if b.agent(agent) == nil {
		return fmt.Errorf("%w: %q cannot subscribe", ErrNoRecipient, agent)
	}
	if _, err := b.subs.Subscribe(topic, agent); err != nil {
		return err
	}
	a := b.agent(agent)
	if a == nil { // stopped meanwhile: do not leave it behind
		b.subs.Leave(agent)
		return fmt.Errorf("%w: %q stopped", ErrNoRecipient, agent)
	}
	if a.Durable() {
		if err := b.subscribed(topic, agent); err != nil {
			_ = b.subs.Unsubscribe(topic, agent)
			return err
		}
	}
	return nil
}

// Unsubscribe removes agent's subscription to topic (exactly as subscribed).
// It does not block. Errors: ErrNotSubscribed, ErrInvalidSubject.
func (b *Bus) Unsubscribe(topic, agent string) error {
	if err := b.subs.Unsubscribe(topic, agent); err != nil {
		return err
	}
	b.unsubscribed(topic, agent)
	return nil
}

// Subscribers returns, sorted, the agents a publish on topic reaches when
// topic is a subject, or the agents subscribed with exactly topic when it is
// a wildcard pattern. It does not block.
func (b *Bus) Subscribers(topic string) []string { return b.subs.Subscribers(topic) }

// Topics returns every subscribed topic (subjects and patterns), sorted. It
// does not block.
func (b *Bus) Topics() []string { return b.subs.Topics() }

// Publish publishes payload on topic from sender and returns the message ID.
// It is Send of a TypePublish message; use Send to set more fields.
func (b *Bus) Publish(ctx context.Context, topic, sender string, payload []byte) (string, error) {
	return b.Send(ctx, NewMessage(TypePublish, sender, payload).WithTopic(topic))
}

// subscription applies a TypeSubscribe or TypeUnsubscribe message for its
// sender. The message is handled at once; it is not queued.
func (b *Bus) subscription(msg *Message) (string, error) {
	if msg.Sender == "" {
		return "", fmt.Errorf("%w: %s message without sender", ErrInvalidMessage, msg.Type)
	}
	var err error
	if msg.Type == TypeSubscribe {
		err = b.Subscribe(msg.Topic, msg.Sender)
	} else {
		err = b.Unsubscribe(msg.Topic, msg.Sender)
	}
	if err != nil {
		return "", err
	}
	b.completed(msg, "topic "+msg.Topic)
	return msg.ID, nil
}

// publish queues msg in the actor of its topic, starting one if needed, under
// the backpressure rules of Send. Its copies for durable subscribers are
// committed first.
func (b *Bus) publish(ctx context.Context, msg *Message, self *actors.Agent) (string, error) {
	if b.durable.nsubs.Load() > 0 && ctx != republishing {
		return b.publishDurable(ctx, msg, self)
	}
	return b.publishQueue(ctx, msg, self)
}

// publishQueue is publish without the durable copies.
func (b *Bus) publishQueue(ctx context.Context, msg *Message, self *actors.Agent) (string, error) {
	if err := topics.ValidateSubject(msg.Topic); err != nil {
		return "", err
	}
	bp := b.cfg.Backpressure
	patience := bp.Timeout
	if self != nil {
		patience = bp.WaitDuration
	}
	var timer *time.Timer
	wait := backoff.Policy{Initial: min(time.Millisecond, bp.WaitDuration), Max: bp.WaitDuration}
	until, delay := time.Now().Add(patience), wait.Initial
	for retired := 0; retired < 8; { // a topic actor may retire between lookup and post
		t, err := b.topicActor(msg.Topic)
		if errors.Is(err, errTopicsBusy) {
			// Every topic actor has work queued: wait for one to drain,
			// re-checking with exponential backoff, within the sender's
			// patience.
			left := time.Until(until)
			if left <= 0 {
				return "", fmt.Errorf("%w after %v: %w", ErrBackpressureTimeout, patience, err)
			}
			if timer == nil {
				timer = time.NewTimer(min(delay, left))
				defer timer.Stop()
			} else {
				timer.Reset(min(delay, left))
			}
			select {
			case <-timer.C:
			case <-ctx.Done():
				return "", fmt.Errorf("%w: %w", ErrBackpressureTimeout, context.Cause(ctx))
			}
			delay = wait.Next(delay)
			continue
		}
		if err != nil {
			return "", err
		}
		id, err := b.postTo(ctx, t.mb, "topic "+msg.Topic, msg, self)
		if errors.Is(err, errTopicRetired) {
			// It is retiring right now (its mailbox is closed; its own
			// goroutine is about to forget it, and may be this one,
			// publishing again what raced in): forget it here, so the next
			// lookup starts a fresh actor instead of finding it again.
			retired++
			b.topicsMu.Lock()
			if b.topicRefs[t.subject] == t {
				delete(b.topicRefs, t.subject)
			}
			b.topicsMu.Unlock()
			continue
		}
		return id, err
	}
	return "", fmt.Errorf("%w: topic %q keeps retiring", ErrMailboxFull, msg.Topic)
}

// errTopicsBusy means Config.MaxTopics topic actors run and none is idle.
var errTopicsBusy = fmt.Errorf("%w: every topic actor is busy", ErrMailboxFull)

// topicActor returns the running actor of subject, starting it if needed.
// When MaxTopics actors run, the least recently used idle one is stopped to
// make room; if none is idle, it returns errTopicsBusy.
func (b *Bus) topicActor(subject string) (*topicRef, error) {
	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	now := time.Now()
	if t := b.topicRefs[subject]; t != nil {
		t.lastUse = now
		return t, nil
	}
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if len(b.topicRefs) >= b.cfg.MaxTopics {
		var victim *topicRef
		for _, t := range b.topicRefs {
			if t.mb.Len() == 0 && (victim == nil || t.lastUse.Before(victim.lastUse)) {
				victim = t
			}
		}
		if victim == nil {
			return nil, errTopicsBusy
		}
		delete(b.topicRefs, victim.subject)
		b.system.Root.Stop(victim.pid)
	}
	t := &topicRef{subject: subject, lastUse: now, done: make(chan struct{})}
	t.mb = mailbox.New(mailbox.Config{
		Capacity: b.cfg.MailboxSize,
		Shared:   b.shared,
		Drop:     func(v any, why error) { b.topicDropped(t, v, why) },
	})
	props := topics.Actor(subject, b.subs, topicDirectory{b}, t.mb.Len, func() { b.retireTopic(t) }).
		Configure(actor.WithMailbox(t.mb.Producer()))
	t.pid = b.system.Root.SpawnPrefix(props, "$topic:")
	b.topicRefs[subject] = t
	return t, nil
}

// retireTopic runs on a topic actor's goroutine when it has stopped: it
// closes its mailbox, publishing again the messages that raced in, and
// forgets the actor.
func (b *Bus) retireTopic(t *topicRef) {
	t.mb.CloseFromActor(errTopicRetired) // leftovers are published again (or dead-lettered)
	b.topicsMu.Lock()
	if b.topicRefs[t.subject] == t {
		delete(b.topicRefs, t.subject)
	}
	b.ledger.accepted.Add(t.mb.Posted())
	b.ledger.handled.Add(t.mb.Delivered())
	b.topicsMu.Unlock()
	close(t.done)
}

// topicDropped receives what a topic actor's mailbox did not deliver.
func (b *Bus) topicDropped(t *topicRef, v any, why error) {
	m, ok := actor.UnwrapEnvelopeMessage(v).(*actors.Message)
	if ok && errors.Is(why, errTopicRetired) && !b.closed.Load() {
		if _, err := b.publish(republishing, m, nil); err == nil {
			b.ledger.handled.Add(1) // moved to the new topic actor, which counts it anew
			return
		}
		why = mailbox.ErrStopped
	}
	b.dropped("topic "+t.subject, v, why, false)
}

// stopTopics stops every topic actor and waits until each has finished the
// fan-out it was doing and retired; used by Shutdown. With force, what they
// still hold is dead-lettered as shutdown instead.
func (b *Bus) stopTopics(ctx context.Context, force bool) error {
	b.topicsMu.Lock()
	refs := make([]*topicRef, 0, len(b.topicRefs))
	for _, t := range b.topicRefs {
		refs = append(refs, t)
	}
	b.topicsMu.Unlock()
	for _, t := range refs {
		if force {
			t.mb.Close(ErrShutdown)
		}
		b.system.Root.Stop(t.pid)
	}
	for _, t := range refs {
		select {
		case <-t.done:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// topicDirectory lets topic actors resolve agents and dead-letter what they
// cannot deliver, without putting those methods on Bus.
type topicDirectory struct{ b *Bus }

func (d topicDirectory) Subscriber(name string) topics.Subscriber {
	if a := d.b.agent(name); a != nil {
		return a
	}
	return nil // an untyped nil, so the topic actor sees "gone"
}

func (d topicDirectory) Generation() uint64 { return d.b.agentsGen.Load() }

func (d topicDirectory) Undeliverable(m *actors.Message, subscriber string, err error) {
	reason := reasonOf(err)
	switch {
	case errors.Is(err, topics.ErrNoSubscribers):
		reason = deadletter.NoSubscribers
	case errors.Is(err, topics.ErrSubscriberGone):
		reason = deadletter.NoRecipient
	}
	d.b.deadLetter(Outcome{Letter: &deadletter.Letter{Message: m, Reason: reason, Err: err.Error(), Agent: subscriber},
		Err: err})
}
