package client

import (
	"context"
	"fmt"

	"github.com/descartes/agentbus/internal/protocol"
)

// DeadLetter returns the daemon's dead letter seq. It blocks for the
// daemon's answer. Errors: agentbus.ErrUnknownLetter if the queue no longer
// holds it (evicted, purged, or never there), ErrDisconnected, ErrClosed,
// or ctx's.
func (c *Client) DeadLetter(ctx context.Context, seq uint64) (Letter, error) {
	r, err := c.do(ctx, &protocol.Frame{Op: protocol.OpDeadLetter, Seq: seq})
	if err != nil {
		return Letter{}, err
	}
	if len(r.Letters) != 1 {
		return Letter{}, fmt.Errorf("%w: dead_letter answered with %d letters", protocol.ErrInvalidFrame, len(r.Letters))
	}
	return r.Letters[0], nil
}

// PurgeDeadLetters empties the daemon's dead-letter queue and returns how
// many letters it removed (the counts by reason in its statistics are
// kept). It blocks for the daemon's answer. Errors: ErrDisconnected,
// ErrClosed, or ctx's.
func (c *Client) PurgeDeadLetters(ctx context.Context) (int, error) {
	r, err := c.do(ctx, &protocol.Frame{Op: protocol.OpPurgeDeadLetters})
	if err != nil {
		return 0, err
	}
	return r.N, nil
}

// CountSubscribers returns how many agents a publish on topic would reach
// now (for a pattern: how many subscribed with exactly that pattern). It
// blocks for the daemon's answer. Errors: ErrDisconnected, ErrClosed, or
// ctx's.
func (c *Client) CountSubscribers(ctx context.Context, topic string) (int, error) {
	r, err := c.do(ctx, &protocol.Frame{Op: protocol.OpSubscribers, Topic: topic})
	if err != nil {
		return 0, err
	}
	return r.N, nil
}
