package agentbus

import (
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxMessageSize = 10 << 20 // 10 MiB
	DefaultRequestTimeout = 30 * time.Second
	DefaultMailboxSize    = 1024
	DefaultMaxPending     = 10_000
	DefaultWaitDuration   = 100 * time.Millisecond
	DefaultSendTimeout    = 30 * time.Second
	DefaultDLQMaxSize     = 1000
	DefaultDLQMaxBytes    = 64 << 20 // 64 MiB
	DefaultMaxHistorySize = 10_000
	DefaultMaxTopics      = 10_000
	DefaultMaxSubs        = 100_000
	DefaultStatsMaxKeys   = 1000

	maxHistoryLimit   = 1 << 24 // MaxHistorySize: 128 MiB of references
	maxStatsKeysLimit = 1 << 20 // StatsMaxKeys: 16 MiB of table per dimension
)

// Config configures a Bus. The zero value is valid: every zero field takes
// its default. Negative values, and values above a field's documented bound,
// are rejected by New with ErrInvalidConfig.
type Config struct {
	// MaxMessageSize caps Message.Size (payload plus header fields), in
	// bytes. Default 10 MiB.
	MaxMessageSize int
	// RequestTimeout bounds Request when ctx has no earlier deadline.
	// Default 30 s.
	RequestTimeout time.Duration
	// MailboxSize is each agent's mailbox capacity unless Spawn's
	// WithMailboxSize says otherwise. Default 1024.
	MailboxSize int
	// Backpressure bounds all queued messages together and says how
	// senders wait for room.
	Backpressure BackpressureConfig
	// DLQMaxSize caps the dead-letter queue's entries; the oldest are
	// evicted (and counted). Default 1000.
	DLQMaxSize int
	// DLQMaxBytes caps the message bytes the dead-letter queue holds.
	// Default 64 MiB.
	DLQMaxBytes int
	// Retry says how messages that require acknowledgement are redelivered.
	Retry RetryConfig
	// MaxTopics caps the topic actors running at once (one per subject
	// published to). At the cap, the least recently used idle one is
	// stopped; a topic actor also stops when it finds no subscriber.
	// Default 10,000.
	MaxTopics int
	// MaxSubscriptions caps (topic, agent) subscriptions. Default 100,000.
	MaxSubscriptions int
	// EnableHistory records every accepted message in a bounded ring that
	// History reads. Default off.
	EnableHistory bool
	// MaxHistorySize caps the history ring, which is allocated at New.
	// Default 10,000; at most 16,777,216.
	MaxHistorySize int
	// StatsMaxKeys caps the distinct topics, and separately the distinct
	// senders, that Stats counts by name; the others are counted together
	// under OtherKey, so that hostile names cannot grow memory. Each name
	// costs about 100 bytes, 16 of them reserved up front. Default 1000; at
	// most 1,048,576.
	StatsMaxKeys int
	// Logger receives the bus's logs and protoactor's. Nil discards them.
	Logger *slog.Logger
	// Observers are told the outcome of every message and delivery (see
	// Observer and OutcomeKind), after the bus's own observers, in order.
	// Integrations (tracing, durability, metrics of your own) plug in
	// here. A nil entry makes New fail with ErrInvalidConfig. With none,
	// the bus does not report each queued delivery's Handled outcome.
	Observers []Observer
	// Stampers prepare every message before the bus accepts it (see
	// Stamper), in order. A nil entry makes New fail with
	// ErrInvalidConfig.
	Stampers []Stamper
	// Durability says where durable agents (WithDurable) keep their
	// messages; see DurabilityConfig.
	Durability DurabilityConfig
	// Cluster, when set, makes the bus one node of a cluster of buses on
	// several processes or hosts (see ClusterConfig and docs/cluster.md):
	// agent names, requests, topics and broadcasts then span the cluster.
	// Nil: one process, exactly as without it.
	Cluster *ClusterConfig
}

// BackpressureConfig says how much may be queued and how senders wait.
type BackpressureConfig struct {
	// MaxPending caps the messages queued in all mailboxes together.
	// Default 10,000.
	MaxPending int
	// WaitDuration is the first re-check interval of a sender waiting for
	// room (it doubles, up to 1 s), and the longest a handler waits before
	// its message is dead-lettered as mailbox_full. Default 100 ms.
	WaitDuration time.Duration
	// Timeout is the longest a sender outside any handler waits for room
	// before Send returns ErrBackpressureTimeout. Default 30 s.
	Timeout time.Duration
}

// withDefaults returns c with zero fields defaulted, or an error wrapping
// ErrInvalidConfig for a negative field or one above its bound.
func (c Config) withDefaults() (Config, error) {
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxMessageSize", &c.MaxMessageSize, DefaultMaxMessageSize},
		{"MailboxSize", &c.MailboxSize, DefaultMailboxSize},
		{"Backpressure.MaxPending", &c.Backpressure.MaxPending, DefaultMaxPending},
		{"DLQMaxSize", &c.DLQMaxSize, DefaultDLQMaxSize},
		{"DLQMaxBytes", &c.DLQMaxBytes, DefaultDLQMaxBytes},
		{"MaxHistorySize", &c.MaxHistorySize, DefaultMaxHistorySize},
		{"MaxTopics", &c.MaxTopics, DefaultMaxTopics},
		{"MaxSubscriptions", &c.MaxSubscriptions, DefaultMaxSubs},
		{"Retry.MaxAttempts", &c.Retry.MaxAttempts, DefaultMaxAttempts},
		{"StatsMaxKeys", &c.StatsMaxKeys, DefaultStatsMaxKeys},
	}
	for _, f := range ints {
		switch {
		case *f.v < 0:
			return c, fmt.Errorf("%w: %s is %d, must not be negative", ErrInvalidConfig, f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	// Sizes reserved up front, which an absurd value would turn into a
	// crash instead of an error.
	for _, f := range []struct {
		name     string
		v, limit int
	}{
		{"MaxHistorySize", c.MaxHistorySize, maxHistoryLimit},
		{"StatsMaxKeys", c.StatsMaxKeys, maxStatsKeysLimit},
	} {
		if f.v > f.limit {
			return c, fmt.Errorf("%w: %s is %d, at most %d", ErrInvalidConfig, f.name, f.v, f.limit)
		}
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"RequestTimeout", &c.RequestTimeout, DefaultRequestTimeout},
		{"Backpressure.WaitDuration", &c.Backpressure.WaitDuration, DefaultWaitDuration},
		{"Backpressure.Timeout", &c.Backpressure.Timeout, DefaultSendTimeout},
		{"Retry.Backoff", &c.Retry.Backoff, DefaultRetryBackoff},
		{"Retry.MaxBackoff", &c.Retry.MaxBackoff, DefaultMaxBackoff},
	}
	for _, f := range durations {
		switch {
		case *f.v < 0:
			return c, fmt.Errorf("%w: %s is %v, must not be negative", ErrInvalidConfig, f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for i, o := range c.Observers {
		if f, isFunc := o.(ObserverFunc); o == nil || isFunc && f == nil {
			return c, fmt.Errorf("%w: Observers[%d] is nil", ErrInvalidConfig, i)
		}
	}
	for i, s := range c.Stampers {
		if f, isFunc := s.(StamperFunc); s == nil || isFunc && f == nil {
			return c, fmt.Errorf("%w: Stampers[%d] is nil", ErrInvalidConfig, i)
		}
	}
	// The caller's slices may change later.
	c.Observers, c.Stampers = slices.Clone(c.Observers), slices.Clone(c.Stampers)
	return c, nil
}
