package watermillbus

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/descartes/agentbus"
)

// PayloadEncodingKey is the metadata key that marks a payload which is not
// JSON: the envelope carries it as a JSON string of its base64 form, with
// this key set to "base64". Subscribers decode it and remove the key, so
// Watermill sees the bytes it published; a JSON payload travels as it is,
// readable by any agent.
const PayloadEncodingKey = "watermill_payload_encoding"

// Publisher publishes Watermill messages on the bus's topics. It implements
// message.Publisher; its methods are safe for concurrent use.
type Publisher struct {
	b      *Broker
	closed atomic.Bool
}

var _ message.Publisher = (*Publisher)(nil)

// Publisher returns a Publisher on the Broker's bus. It does not block.
func (b *Broker) Publisher() *Publisher { return &Publisher{b: b} }

// Publish publishes msgs on topic, one after the other, each as a
// TypePublish message that requires acknowledgement: its UUID is the
// message ID, its metadata the envelope's metadata, its payload the
// envelope's payload (see PayloadEncodingKey), and its Context bounds the
// wait when the bus pushes back. It returns once the bus has accepted each;
// a topic no queue or agent subscribes to dead-letters the message
// (no_subscribers). It stops at the first error: agentbus.ErrInvalidSubject,
// ErrMessageTooLarge, ErrBackpressureTimeout, the connection's, or
// ErrClosed.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	for _, wm := range msgs {
		if p.closed.Load() {
			return ErrClosed
		}
		select {
		case <-p.b.done:
			return ErrClosed
		default:
		}
		m := toEnvelope(topic, p.b.cfg.Sender, wm)
		if err := p.b.be.publish(wm.Context(), m); err != nil {
			return fmt.Errorf("watermillbus: publish %s on %q: %w", wm.UUID, topic, err)
		}
	}
	return nil
}

// Close makes the Publisher refuse further messages with ErrClosed.
// Publishing is synchronous, so there is nothing to flush. It returns nil.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}

// toEnvelope maps wm to the bus's envelope.
func toEnvelope(topic, sender string, wm *message.Message) *agentbus.Message {
	m := agentbus.NewMessage(agentbus.TypePublish, sender, nil)
	m.ID, m.Topic, m.RequiresAck = wm.UUID, topic, true
	if len(wm.Metadata) > 0 {
		m.Metadata = make(map[string]string, len(wm.Metadata)+1)
		for k, v := range wm.Metadata {
			m.Metadata[k] = v
		}
	}
	switch {
	case len(wm.Payload) == 0:
	case json.Valid(wm.Payload):
		m.Payload = json.RawMessage(wm.Payload)
	default:
		s, _ := json.Marshal(base64.StdEncoding.EncodeToString(wm.Payload)) // a string always encodes
		m.Payload = s
		if m.Metadata == nil {
			m.Metadata = make(map[string]string, 1)
		}
		m.Metadata[PayloadEncodingKey] = "base64"
	}
	return m
}

// fromEnvelope maps a delivered envelope to a Watermill message. It fails
// only for a payload marked base64 that is not.
func fromEnvelope(m *agentbus.Message) (*message.Message, error) {
	payload := []byte(m.Payload)
	wm := message.NewMessage(m.ID, nil)
	for k, v := range m.Metadata {
		wm.Metadata[k] = v
	}
	if wm.Metadata[PayloadEncodingKey] == "base64" {
		delete(wm.Metadata, PayloadEncodingKey)
		var s string
		if err := json.Unmarshal(payload, &s); err != nil {
			return nil, fmt.Errorf("%w: %s: payload marked base64 is not a JSON string", agentbus.ErrInvalidMessage, m.ID)
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: payload marked base64: %v", agentbus.ErrInvalidMessage, m.ID, err)
		}
		payload = b
	}
	wm.Payload = payload
	return wm, nil
}

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// ConsumerGroup names the queue the Subscriber reads: Subscribers of a
	// topic in the same group share one queue and take turns on its
	// messages; each group gets every message. Empty is a group of its
	// own (the default group). At most 64 bytes, no ':', and otherwise a
	// valid agent name.
	ConsumerGroup string
}

// Subscriber reads Watermill messages from the Broker's queues. It
// implements message.Subscriber and message.SubscribeInitializer; its
// methods are safe for concurrent use.
//
// A queue hands out one message at a time, in the bus's order (higher
// priority first, first in first out within a priority), and the next only
// once the last is acked or nacked: so no message is received until the
// previous one is acknowledged, and order holds across the Subscribers of a
// group. A nacked message goes back to the bus, which redelivers it after
// its retry backoff (agentbus.RetryConfig; over the socket the daemon's),
// behind what is queued; after MaxAttempts deliveries it is dead-lettered
// as retries_exhausted. A message taken by a Subscriber that stops before
// acking it is offered again at once, without counting an attempt.
type Subscriber struct {
	b       *Broker
	group   string
	closing chan struct{}
	once    sync.Once
	wg      sync.WaitGroup // the consuming goroutines
	mu      sync.Mutex     // guards closed with wg.Add
	closed  bool
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// Subscriber returns a Subscriber of the Broker. It does not block. It
// returns an error wrapping agentbus.ErrInvalidAgent for a bad consumer
// group.
func (b *Broker) Subscriber(cfg SubscriberConfig) (*Subscriber, error) {
	if err := validGroup(cfg.ConsumerGroup); err != nil {
		return nil, err
	}
	return &Subscriber{b: b, group: cfg.ConsumerGroup, closing: make(chan struct{})}, nil
}

// SubscribeInitialize creates topic's queue for the Subscriber's group, so
// that messages published from now on wait in it for a Subscribe. It blocks
// while the queue agent is registered. Errors: agentbus.ErrInvalidSubject,
// ErrAgentExists (a non-Watermill agent has the queue's name),
// ErrTooManyQueues, the connection's, ErrClosed.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	_, err := s.b.queueFor(context.Background(), s.group, topic)
	return err
}

// Subscribe returns a channel of the messages of topic's queue for the
// Subscriber's group (creating it, as SubscribeInitialize does). Each
// message's Context is a child of ctx, canceled once it is acked or nacked.
// The channel is closed when ctx ends or the Subscriber (or Broker) closes;
// a message taken and not yet acked then goes back to the queue. Errors:
// those of SubscribeInitialize.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	q, err := s.b.queueFor(ctx, s.group, topic)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go s.consume(ctx, q, out)
	return out, nil
}

// Close closes every channel the Subscriber returned and waits until its
// goroutines have stopped; the messages they had taken and not seen acked
// go back to their queues. The queues stay (see Broker). It returns nil,
// also when called again.
func (s *Subscriber) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
	})
	s.wg.Wait()
	return nil
}

// consume takes q's offers, one at a time, and hands them to out until ctx
// ends or the Subscriber or Broker closes; then it closes out. Every offer
// it takes gets exactly one answer.
func (s *Subscriber) consume(ctx context.Context, q *queue, out chan<- *message.Message) {
	defer s.wg.Done()
	defer close(out)
	for {
		var o *offer
		select {
		case o = <-q.offers:
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-s.b.done:
			return
		}
		if !s.handOver(ctx, o, out) {
			return
		}
	}
}

// handOver gives o to out and answers it with its Ack or Nack. It reports
// false, having answered errAbandoned, when it stopped first.
func (s *Subscriber) handOver(ctx context.Context, o *offer, out chan<- *message.Message) bool {
	wm, err := fromEnvelope(o.m)
	if err != nil {
		o.result <- err // a poison message: the bus retries, then dead-letters it
		return true
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wm.SetContext(mctx)
	select {
	case out <- wm:
	case <-ctx.Done():
		o.result <- errAbandoned
		return false
	case <-s.closing:
		o.result <- errAbandoned
		return false
	case <-s.b.done:
		o.result <- errAbandoned
		return false
	}
	select {
	case <-wm.Acked():
		o.result <- nil
		return true
	case <-wm.Nacked():
		o.result <- fmt.Errorf("%w: %s", ErrNacked, wm.UUID)
		return true
	case <-ctx.Done():
	case <-s.closing:
	case <-s.b.done:
	}
	select { // an answer that raced the stop still counts
	case <-wm.Acked():
		o.result <- nil
	case <-wm.Nacked():
		o.result <- fmt.Errorf("%w: %s", ErrNacked, wm.UUID)
	default:
		o.result <- errAbandoned
	}
	return false
}
