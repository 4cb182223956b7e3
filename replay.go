package agentbus

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Replay sends dead letter seq again and returns the message ID. With to
// empty it goes where it failed: to the agent it was meant for, or, when
// that agent is gone or was never known (no_subscribers), back to its
// recipient or topic. With to set it goes to that agent as a direct message
// (a publish or broadcast becomes direct). The replay is a new delivery of
// the same message: same ID, Attempts incremented, Timestamp reset so that a
// TTL counts from the replay. It is recorded on the letter (Replays,
// ReplayedTo, ReplayedAt), which stays in the queue. Send's rules and errors
// apply; besides, it returns ErrUnknownLetter for a letter that is not held,
// and ErrInvalidMessage for one that holds no agentbus message (a foreign
// protoactor value).
func (b *Bus) Replay(ctx context.Context, seq uint64, to string) (string, error) {
	l, ok := b.dlq.Get(seq)
	if !ok {
		return "", fmt.Errorf("%w: %d", ErrUnknownLetter, seq)
	}
	if l.Message == nil {
		return "", fmt.Errorf("%w: dead letter %d holds a %T, not a message", ErrInvalidMessage, seq, l.Value)
	}
	m := l.Message.Clone()
	m.Attempts = max(m.Attempts, 1) + 1
	m.Timestamp = time.Now().UTC()
	if to == "" && l.Agent != "" && !strings.HasPrefix(l.Agent, "$") && b.agent(l.Agent) != nil {
		to = l.Agent
	}
	dest := to
	switch {
	case to != "":
		m.Recipient = to
		switch m.Type {
		case TypePublish, TypeBroadcast, TypeSubscribe, TypeUnsubscribe:
			m.Type = TypeDirect
		}
	case m.Type == TypePublish:
		dest = "#" + m.Topic
	default:
		dest = m.Recipient
	}
	id, err := b.Send(withoutDedup(ctx), m) // the same ID again, on purpose
	if err != nil {
		return "", err
	}
	if b.dlq.MarkReplayed(seq, dest, time.Now()) == nil { // evicted meanwhile: nothing to mark
		b.replayed(seq)
	}
	b.log.Info("dead letter replayed", "msg_id", m.ID, "seq", seq, "agent", dest, "attempts", m.Attempts)
	return id, nil
}
