package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/internal/testutil"
	"github.com/descartes/agentbus/mailbox"
)

// exported returns a copy of m's exported fields only, so that messages can
// be compared without their caches and reply address.
func exported(m *actors.Message) actors.Message { return testutil.Exported(m) }

var allTypes = []struct {
	t    actors.MessageType
	name string
}{
	{actors.TypeDirect, "direct"},
	{actors.TypePublish, "publish"},
	{actors.TypeBroadcast, "broadcast"},
	{actors.TypeSubscribe, "subscribe"},
	{actors.TypeUnsubscribe, "unsubscribe"},
	{actors.TypeRequest, "request"},
	{actors.TypeResponse, "response"},
	{actors.TypeAck, "ack"},
	{actors.TypeError, "error"},
	{actors.TypeHeartbeat, "heartbeat"},
	{actors.TypeControl, "control"},
}

func TestNewMessage(t *testing.T) {
	before := time.Now()
	payload := json.RawMessage(`{"q":1}`)
	m := actors.NewMessage(actors.TypeDirect, "alice", payload)
	after := time.Now()

	assert.Equal(t, actors.TypeDirect, m.Type)
	assert.Equal(t, "alice", m.Sender)
	assert.Equal(t, payload, m.Payload)
	assert.EqualValues(t, actors.DefaultPriority, m.Priority)
	assert.Equal(t, 50, actors.DefaultPriority)
	assert.Equal(t, 100, actors.MaxPriority)
	assert.Equal(t, time.UTC, m.Timestamp.Location())
	assert.False(t, m.Timestamp.Before(before.Truncate(0)) || m.Timestamp.After(after), "timestamp %v not in [%v, %v]", m.Timestamp, before, after)
	assert.Zero(t, m.TTL)
	assert.Zero(t, m.Attempts)
	assert.Nil(t, m.Metadata)
	assert.False(t, m.RequiresAck)
	assert.Nil(t, m.ReplyTo())

	id, err := uuid.Parse(m.ID)
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), id.Version())
	assert.Equal(t, uuid.RFC4122, id.Variant())
	sec, nsec := id.Time().UnixTime()
	assert.WithinDuration(t, before, time.Unix(sec, nsec), time.Second, "the ID carries the creation time")
}

func TestBuilder(t *testing.T) {
	m := actors.NewMessage(actors.TypeRequest, "a", nil)
	same := m.WithRecipient("b").
		WithTopic("t.x").
		WithPriority(99).
		WithRequestID("req-1").
		WithCorrelationID("conv-1").
		WithTTL(3*time.Second).
		WithMetadata("k1", "v1").
		WithMetadata("k2", "v2").
		WithMetadata("k1", "v1b").
		RequireAck()
	require.Same(t, m, same, "builders return their receiver")
	assert.Equal(t, "b", m.Recipient)
	assert.Equal(t, "t.x", m.Topic)
	assert.EqualValues(t, 99, m.Priority)
	assert.Equal(t, "req-1", m.RequestID)
	assert.Equal(t, "conv-1", m.CorrelationID)
	assert.Equal(t, 3*time.Second, m.TTL)
	assert.Equal(t, map[string]string{"k1": "v1b", "k2": "v2"}, m.Metadata)
	assert.True(t, m.RequiresAck)

	pid := actor.NewPID("local", "x")
	m.SetReplyTo(pid)
	assert.Same(t, pid, m.ReplyTo())
	m.SetReplyTo(nil)
	assert.Nil(t, m.ReplyTo())
}

func TestMessageIsMailboxItem(t *testing.T) {
	m := actors.NewMessage(actors.TypeBroadcast, "a", nil).WithPriority(7)
	var it mailbox.Item = m
	prio, deadline := it.MailboxKey()
	assert.Equal(t, 7, prio)
	assert.Zero(t, deadline, "no ttl, no deadline")

	m.TTL = time.Minute
	prio, deadline = it.MailboxKey()
	assert.Equal(t, 7, prio)
	assert.Equal(t, m.Timestamp.Add(time.Minute).UnixNano(), deadline)
	assert.Equal(t, m.Deadline().UnixNano(), deadline)
}

func TestSize(t *testing.T) {
	m := &actors.Message{
		ID: "123", Sender: "ab", Recipient: "c", Topic: "dddd", RequestID: "e", CorrelationID: "ff",
		Payload:  json.RawMessage(`[1]`),
		Metadata: map[string]string{"k": "vv", "kk": ""},
	}
	assert.Equal(t, 3+2+1+4+1+2+3+(1+2)+(2+0), m.Size())
	assert.Zero(t, (&actors.Message{Type: actors.TypeDirect, Priority: 100, TTL: time.Hour}).Size())
}

func TestValidate(t *testing.T) {
	ok := func(t actors.MessageType) *actors.Message {
		return &actors.Message{ID: "id", Type: t, Sender: "s", Recipient: "r", Topic: "top", RequestID: "rq", Priority: 50}
	}
	with := func(m *actors.Message, f func(*actors.Message)) *actors.Message { f(m); return m }
	tests := []struct {
		name    string
		give    *actors.Message
		maxSize int
		wantErr error
	}{
		{name: "nil", give: nil, wantErr: actors.ErrInvalidMessage},
		{name: "zero type", give: &actors.Message{Recipient: "r"}, wantErr: actors.ErrInvalidMessage},
		{name: "type past the last", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Type = actors.TypeControl + 1 }), wantErr: actors.ErrInvalidMessage},
		{name: "type 255", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Type = 255 }), wantErr: actors.ErrInvalidMessage},
		{name: "priority 101", give: ok(actors.TypeDirect).WithPriority(101), wantErr: actors.ErrInvalidMessage},
		{name: "priority 255", give: ok(actors.TypeDirect).WithPriority(255), wantErr: actors.ErrInvalidMessage},
		{name: "negative ttl", give: ok(actors.TypeDirect).WithTTL(-time.Nanosecond), wantErr: actors.ErrInvalidMessage},
		{name: "negative attempts", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Attempts = -1 }), wantErr: actors.ErrInvalidMessage},
		{name: "direct without recipient", give: ok(actors.TypeDirect).WithRecipient(""), wantErr: actors.ErrInvalidMessage},
		{name: "request without recipient", give: ok(actors.TypeRequest).WithRecipient(""), wantErr: actors.ErrInvalidMessage},
		{name: "error without recipient", give: ok(actors.TypeError).WithRecipient(""), wantErr: actors.ErrInvalidMessage},
		{name: "heartbeat without recipient", give: ok(actors.TypeHeartbeat).WithRecipient(""), wantErr: actors.ErrInvalidMessage},
		{name: "control without recipient", give: ok(actors.TypeControl).WithRecipient(""), wantErr: actors.ErrInvalidMessage},
		{name: "publish without topic", give: ok(actors.TypePublish).WithTopic(""), wantErr: actors.ErrInvalidMessage},
		{name: "subscribe without topic", give: ok(actors.TypeSubscribe).WithTopic(""), wantErr: actors.ErrInvalidMessage},
		{name: "unsubscribe without topic", give: ok(actors.TypeUnsubscribe).WithTopic(""), wantErr: actors.ErrInvalidMessage},
		{name: "response without request id", give: ok(actors.TypeResponse).WithRequestID(""), wantErr: actors.ErrInvalidMessage},
		{name: "ack without request id", give: ok(actors.TypeAck).WithRequestID(""), wantErr: actors.ErrInvalidMessage},
		{name: "payload not JSON", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(`{"a":`) }), wantErr: actors.ErrInvalidMessage},
		{name: "payload bare word", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(`hello`) }), wantErr: actors.ErrInvalidMessage},
		{name: "payload trailing garbage", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(`{}x`) }), wantErr: actors.ErrInvalidMessage},
		{name: "payload two values", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(`1 2`) }), wantErr: actors.ErrInvalidMessage},
		{name: "payload whitespace only", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(` `) }), wantErr: actors.ErrInvalidMessage},
		{
			name:    "oversize payload",
			give:    with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(`"` + strings.Repeat("x", 100) + `"`) }),
			maxSize: 100, wantErr: actors.ErrMessageTooLarge,
		},
		{
			name:    "oversize by metadata",
			give:    ok(actors.TypeDirect).WithMetadata("k", strings.Repeat("v", 100)),
			maxSize: 100, wantErr: actors.ErrMessageTooLarge,
		},
		{name: "one byte over", give: ok(actors.TypeDirect), maxSize: 2 + 1 + 1 + 3 + 2 - 1, wantErr: actors.ErrMessageTooLarge},

		{name: "at the size limit", give: ok(actors.TypeDirect), maxSize: 2 + 1 + 1 + 3 + 2},
		{name: "no size limit", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(`"` + strings.Repeat("x", 1<<20) + `"`) })},
		{name: "negative size limit means none", give: ok(actors.TypeDirect).WithMetadata("k", strings.Repeat("v", 100)), maxSize: -1},
		{name: "empty payload", give: ok(actors.TypeDirect)},
		{name: "empty non-nil payload", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage{} })},
		{name: "payload null", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(`null`) })},
		{name: "payload with whitespace", give: with(ok(actors.TypeDirect), func(m *actors.Message) { m.Payload = json.RawMessage(" {\"a\" : [1, 2]}\n") })},
		{name: "priority 0", give: ok(actors.TypeDirect).WithPriority(0)},
		{name: "priority 100", give: ok(actors.TypeDirect).WithPriority(100)},
		{name: "positive ttl and attempts", give: with(ok(actors.TypeDirect).WithTTL(time.Second), func(m *actors.Message) { m.Attempts = 3 })},
		{name: "broadcast needs no address", give: &actors.Message{Type: actors.TypeBroadcast}},
		{name: "from NewMessage", give: actors.NewMessage(actors.TypeDirect, "a", json.RawMessage(`{}`)).WithRecipient("b")},
	}
	for _, typ := range allTypes {
		tests = append(tests, struct {
			name    string
			give    *actors.Message
			maxSize int
			wantErr error
		}{name: "valid " + typ.name, give: ok(typ.t)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.give.Validate(tt.maxSize)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			assert.True(t, strings.HasPrefix(err.Error(), "agentbus: "), "error %q is not package-prefixed", err)
		})
	}
}

func TestValidatePayloadCache(t *testing.T) {
	t.Run("unchanged payload is not scanned again", func(t *testing.T) {
		buf := []byte(`{"a":1}`)
		m := actors.NewMessage(actors.TypeBroadcast, "s", buf)
		require.NoError(t, m.Validate(0))
		// Break the bytes in place, which the bus's ownership rules forbid:
		// a rescan would notice, a cached check does not.
		copy(buf, `{"a":!}`)
		assert.NoError(t, m.Validate(0), "the payload was scanned again")
		assert.NoError(t, m.Clone().Validate(0), "a clone shares the check")
	})
	t.Run("replaced payload is checked", func(t *testing.T) {
		m := actors.NewMessage(actors.TypeBroadcast, "s", json.RawMessage(`{"a":1}`))
		require.NoError(t, m.Validate(0))
		m.Payload = json.RawMessage(`{"a":!}`)
		require.ErrorIs(t, m.Validate(0), actors.ErrInvalidMessage)
		m.Payload = json.RawMessage(`[true]`)
		require.NoError(t, m.Validate(0))
	})
	t.Run("reslice of the checked payload is checked", func(t *testing.T) {
		buf := json.RawMessage(`{"a":1}`)
		m := actors.NewMessage(actors.TypeBroadcast, "s", buf)
		require.NoError(t, m.Validate(0))
		m.Payload = buf[:3] // same start, other length
		require.ErrorIs(t, m.Validate(0), actors.ErrInvalidMessage)
		m.Payload = buf
		require.NoError(t, m.Validate(0))
	})
	t.Run("a failed check is not cached", func(t *testing.T) {
		buf := []byte(`{"a":!}`)
		m := actors.NewMessage(actors.TypeBroadcast, "s", buf)
		require.ErrorIs(t, m.Validate(0), actors.ErrInvalidMessage)
		require.ErrorIs(t, m.Validate(0), actors.ErrInvalidMessage)
		copy(buf, `{"a":1}`)
		require.NoError(t, m.Validate(0))
	})
	t.Run("a size failure is reported before the payload check", func(t *testing.T) {
		m := actors.NewMessage(actors.TypeBroadcast, "s", json.RawMessage(`{"a":!}`))
		require.ErrorIs(t, m.Validate(3), actors.ErrMessageTooLarge)
	})
	t.Run("decoded payload is trusted", func(t *testing.T) {
		var m actors.Message
		require.NoError(t, json.Unmarshal([]byte(`{"type":"broadcast","payload":{"a":1}}`), &m))
		copy(m.Payload, `{"a":!}`)
		assert.NoError(t, m.Validate(0), "the decoder's check was not reused")
	})
}

func TestDeadlineAndExpired(t *testing.T) {
	ts := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name         string
		ttl          time.Duration
		wantDeadline time.Time
		at           time.Duration // Expired is asked at ts+at
		wantExpired  bool
	}{
		{name: "no ttl", ttl: 0, at: 100 * 365 * 24 * time.Hour},
		{name: "negative ttl", ttl: -time.Second, at: time.Hour},
		{name: "before", ttl: time.Second, wantDeadline: ts.Add(time.Second), at: time.Second - time.Nanosecond},
		{name: "at the deadline", ttl: time.Second, wantDeadline: ts.Add(time.Second), at: time.Second, wantExpired: true},
		{name: "after", ttl: time.Second, wantDeadline: ts.Add(time.Second), at: time.Hour, wantExpired: true},
		{name: "before the timestamp", ttl: time.Second, wantDeadline: ts.Add(time.Second), at: -time.Hour},
		{name: "sub-millisecond", ttl: 1500001, wantDeadline: ts.Add(1500001), at: 1500001, wantExpired: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &actors.Message{Type: actors.TypeBroadcast, Timestamp: ts, TTL: tt.ttl}
			assert.Equal(t, tt.wantDeadline, m.Deadline())
			assert.Equal(t, tt.wantExpired, m.Expired(ts.Add(tt.at)))
		})
	}
}

func TestNewResponse(t *testing.T) {
	req := actors.NewMessage(actors.TypeRequest, "asker", json.RawMessage(`{"q":1}`)).
		WithRecipient("answerer").WithPriority(80).WithCorrelationID("conv").WithTopic("ignored").WithTTL(time.Second)
	req.SetReplyTo(actor.NewPID("local", "future"))

	tests := []struct {
		name          string
		requestID     string
		wantRequestID string
	}{
		{name: "pairs with the request's ID", wantRequestID: req.ID},
		{name: "keeps an explicit request ID", requestID: "explicit", wantRequestID: "explicit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req.RequestID = tt.requestID
			r := req.NewResponse("answerer", json.RawMessage(`{"a":2}`))
			assert.Equal(t, actors.TypeResponse, r.Type)
			assert.Equal(t, tt.wantRequestID, r.RequestID)
			assert.Equal(t, "answerer", r.Sender)
			assert.Equal(t, "asker", r.Recipient)
			assert.EqualValues(t, 80, r.Priority)
			assert.Equal(t, "conv", r.CorrelationID)
			assert.Equal(t, json.RawMessage(`{"a":2}`), r.Payload)
			assert.NotEqual(t, req.ID, r.ID)
			assert.Empty(t, r.Topic)
			assert.Zero(t, r.TTL)
			assert.Nil(t, r.ReplyTo())
			assert.False(t, r.Timestamp.IsZero())
			require.NoError(t, r.Validate(0))
		})
	}
}

func TestClone(t *testing.T) {
	m := actors.NewMessage(actors.TypeDirect, "a", json.RawMessage(`{"x":1}`)).
		WithRecipient("b").WithMetadata("k", "v")
	m.SetReplyTo(actor.NewPID("local", "p"))
	c := m.Clone()

	require.NotSame(t, m, c)
	assert.Equal(t, exported(m), exported(c))
	assert.Nil(t, c.ReplyTo(), "the reply address is not cloned")
	assert.NotNil(t, m.ReplyTo(), "the original keeps it")
	assert.Equal(t, unsafe.SliceData(m.Payload), unsafe.SliceData(c.Payload), "the payload is shared")
	assert.Equal(t, reflect.ValueOf(m.Metadata).Pointer(), reflect.ValueOf(c.Metadata).Pointer(), "the metadata is shared")

	c.Recipient = "other"
	c.Priority = 1
	c.Attempts = 9
	assert.Equal(t, "b", m.Recipient, "the struct is independent")
	assert.EqualValues(t, actors.DefaultPriority, m.Priority)
	assert.Zero(t, m.Attempts)
}

func TestDecodePayload(t *testing.T) {
	m := actors.NewMessage(actors.TypeBroadcast, "a", json.RawMessage(`{"n":3}`))
	var v struct{ N int }
	require.NoError(t, m.DecodePayload(&v))
	assert.Equal(t, 3, v.N)

	var s string
	err := m.DecodePayload(&s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), m.ID)
	var typeErr *json.UnmarshalTypeError
	assert.ErrorAs(t, err, &typeErr)
}

func TestMessageType(t *testing.T) {
	for _, tt := range allTypes {
		t.Run(tt.name, func(t *testing.T) {
			assert.True(t, tt.t.Valid())
			assert.Equal(t, tt.name, tt.t.String())
			got, err := actors.ParseMessageType(tt.name)
			require.NoError(t, err)
			assert.Equal(t, tt.t, got)

			text, err := tt.t.MarshalText()
			require.NoError(t, err)
			assert.Equal(t, tt.name, string(text))
			var u actors.MessageType
			require.NoError(t, u.UnmarshalText(text))
			assert.Equal(t, tt.t, u)

			js, err := json.Marshal(tt.t)
			require.NoError(t, err)
			assert.Equal(t, `"`+tt.name+`"`, string(js))
		})
	}
	assert.Len(t, allTypes, int(actors.TypeControl), "every type is in the table")
}

func TestMessageTypeInvalid(t *testing.T) {
	for _, typ := range []actors.MessageType{0, actors.TypeControl + 1, 255} {
		t.Run(fmt.Sprint(uint8(typ)), func(t *testing.T) {
			assert.False(t, typ.Valid())
			assert.Equal(t, fmt.Sprintf("MessageType(%d)", uint8(typ)), typ.String())
			_, err := typ.MarshalText()
			require.ErrorIs(t, err, actors.ErrInvalidMessage)
		})
	}
	for _, name := range []string{"", "Direct", "DIRECT", " direct", "direct ", "bogus", "MessageType(1)", "1"} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			_, err := actors.ParseMessageType(name)
			require.ErrorIs(t, err, actors.ErrInvalidMessage)
			u := actors.TypeAck
			require.ErrorIs(t, u.UnmarshalText([]byte(name)), actors.ErrInvalidMessage)
			assert.Equal(t, actors.TypeAck, u, "a failed UnmarshalText leaves the value alone")
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		wantErr bool
	}{
		{name: "simple", give: "planner"},
		{name: "one byte", give: "a"},
		{name: "punctuation", give: "agent-1.b_c:d"},
		{name: "dollar inside", give: "a$b"},
		{name: "unicode", give: "плановик-ü"},
		{name: "longest", give: strings.Repeat("a", actors.MaxNameLen)},
		{name: "longest multibyte", give: strings.Repeat("é", actors.MaxNameLen/2)},

		{name: "empty", give: "", wantErr: true},
		{name: "too long", give: strings.Repeat("a", actors.MaxNameLen+1), wantErr: true},
		{name: "too long in bytes", give: strings.Repeat("é", actors.MaxNameLen/2+1), wantErr: true},
		{name: "invalid UTF-8", give: "a\xffb", wantErr: true},
		{name: "truncated UTF-8", give: "a\xc3", wantErr: true},
		{name: "reserved prefix", give: "$bus", wantErr: true},
		{name: "just the prefix", give: "$", wantErr: true},
		{name: "space", give: "a b", wantErr: true},
		{name: "leading space", give: " a", wantErr: true},
		{name: "tab", give: "a\tb", wantErr: true},
		{name: "newline", give: "a\n", wantErr: true},
		{name: "no-break space", give: "a\u00a0b", wantErr: true},
		{name: "line separator", give: "a\u2028b", wantErr: true},
		{name: "slash", give: "a/b", wantErr: true},
		{name: "NUL", give: "a\x00", wantErr: true},
		{name: "DEL", give: "a\x7f", wantErr: true},
		{name: "C1 control", give: "a\u0085", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := actors.ValidateName(tt.give)
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, actors.ErrInvalidAgent)
		})
	}
}

func TestNewIDIncreasing(t *testing.T) {
	const n = 100_000 // far more than 4096 per millisecond: the counter carries
	prev := actors.NewID()
	for i := range n {
		id := actors.NewID()
		if id <= prev {
			t.Fatalf("id %d: %s not after %s", i, id, prev)
		}
		prev = id
	}
	u, err := uuid.Parse(prev)
	require.NoError(t, err)
	assert.Equal(t, uuid.Version(7), u.Version())
	assert.Equal(t, uuid.RFC4122, u.Variant())
}

func TestNewIDConcurrent(t *testing.T) {
	const workers, each = 8, 20_000
	results := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ids := make([]string, each)
			for i := range ids {
				ids[i] = actors.NewID()
			}
			results[w] = ids
		})
	}
	wg.Wait()
	seen := make(map[string]bool, workers*each)
	for w, ids := range results {
		for i, id := range ids {
			if seen[id] {
				t.Fatalf("duplicate id %s", id)
			}
			seen[id] = true
			if i > 0 && id <= ids[i-1] {
				t.Fatalf("worker %d id %d: %s not after %s", w, i, id, ids[i-1])
			}
		}
	}
	assert.Len(t, seen, workers*each)
}

func TestHandlerFunc(t *testing.T) {
	want := errors.New("handled")
	var got *actors.Message
	h := actors.HandlerFunc(func(_ context.Context, m *actors.Message) error {
		got = m
		return want
	})
	m := actors.NewMessage(actors.TypeBroadcast, "a", nil)
	require.ErrorIs(t, h.Handle(t.Context(), m), want)
	assert.Same(t, m, got)
}

func TestHandlerPanicError(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name       string
		value      any
		wantUnwrap []error
	}{
		{name: "error value", value: boom, wantUnwrap: []error{actors.ErrHandlerPanic, boom}},
		{name: "string value", value: "oops", wantUnwrap: []error{actors.ErrHandlerPanic}},
		{name: "nil value", value: nil, wantUnwrap: []error{actors.ErrHandlerPanic}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := &actors.HandlerPanicError{Agent: "worker", Value: tt.value, Stack: []byte("stack")}
			assert.Equal(t, tt.wantUnwrap, err.Unwrap())
			assert.ErrorIs(t, err, actors.ErrHandlerPanic)
			assert.Equal(t, fmt.Sprintf("agentbus: handler of %q panicked: %v", "worker", tt.value), err.Error())
		})
	}
}
