package routing_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/routing"
	"github.com/descartes/agentbus/topics"
)

func TestRuleValidate(t *testing.T) {
	base := routing.Rule{ID: "r1", Handler: "log"}
	with := func(f func(r *routing.Rule)) routing.Rule {
		r := base
		f(&r)
		return r
	}
	tests := []struct {
		name     string
		give     routing.Rule
		wantText string // part of the error; "" means valid
		wantErr  error  // another error the result must wrap
	}{
		{name: "minimal", give: base},
		{name: "every filter", give: with(func(r *routing.Rule) {
			r.Type, r.Sender, r.Recipient, r.Topic = actors.TypePublish, "planner", "coder", "agents.*.done"
			r.Priority, r.Enabled = -5, true
		})},
		{name: "literal topic", give: with(func(r *routing.Rule) { r.Topic = "agents.coder.done" })},
		{name: "gt topic", give: with(func(r *routing.Rule) { r.Topic = ">" })},
		{name: "last type", give: with(func(r *routing.Rule) { r.Type = actors.TypeControl })},
		{name: "unicode names", give: with(func(r *routing.Rule) { r.ID, r.Sender = "règle-1", "agent/日本" })},
		{name: "longest id", give: with(func(r *routing.Rule) { r.ID = strings.Repeat("x", routing.MaxNameLen) })},

		{name: "empty id", give: with(func(r *routing.Rule) { r.ID = "" }), wantText: "agentbus: invalid rule: empty id"},
		{name: "long id", give: with(func(r *routing.Rule) { r.ID = strings.Repeat("x", routing.MaxNameLen+1) }), wantText: "id of 257 bytes, limit 256"},
		{name: "space in id", give: with(func(r *routing.Rule) { r.ID = "r 1" }), wantText: "id has whitespace"},
		{name: "tab in id", give: with(func(r *routing.Rule) { r.ID = "r\t1" }), wantText: "id has whitespace"},
		{name: "newline in id", give: with(func(r *routing.Rule) { r.ID = "r1\n" }), wantText: "id has whitespace"},
		{name: "control in id", give: with(func(r *routing.Rule) { r.ID = "r\x001" }), wantText: "id has whitespace or control"},
		{name: "invalid UTF-8 id", give: with(func(r *routing.Rule) { r.ID = "r\xff" }), wantText: "id is not valid UTF-8"},
		{name: "empty handler", give: with(func(r *routing.Rule) { r.Handler = "" }), wantText: `agentbus: invalid rule "r1": empty handler`},
		{name: "space in handler", give: with(func(r *routing.Rule) { r.Handler = "my handler" }), wantText: "handler has whitespace"},
		{name: "long handler", give: with(func(r *routing.Rule) { r.Handler = strings.Repeat("h", 300) }), wantText: "handler of 300 bytes"},
		{name: "space in sender", give: with(func(r *routing.Rule) { r.Sender = "a b" }), wantText: "sender has whitespace"},
		{name: "long sender", give: with(func(r *routing.Rule) { r.Sender = strings.Repeat("s", 257) }), wantText: "sender of 257 bytes"},
		{name: "no-break space in recipient", give: with(func(r *routing.Rule) { r.Recipient = "a\u00a0b" }), wantText: "recipient has whitespace"},
		{name: "invalid UTF-8 recipient", give: with(func(r *routing.Rule) { r.Recipient = "\xc3" }), wantText: "recipient is not valid UTF-8"},
		{name: "unknown type", give: with(func(r *routing.Rule) { r.Type = 12 }), wantText: "unknown message type 12"},
		{name: "type 255", give: with(func(r *routing.Rule) { r.Type = 255 }), wantText: "unknown message type 255"},
		{name: "empty topic token", give: with(func(r *routing.Rule) { r.Topic = "a..b" }), wantText: "topic: ", wantErr: topics.ErrInvalidSubject},
		{name: "gt not last", give: with(func(r *routing.Rule) { r.Topic = "a.>.b" }), wantText: "must be the last token", wantErr: topics.ErrInvalidSubject},
		{name: "star in token", give: with(func(r *routing.Rule) { r.Topic = "a*" }), wantText: "reserved character", wantErr: topics.ErrInvalidSubject},
		{name: "space topic", give: with(func(r *routing.Rule) { r.Topic = " " }), wantText: "whitespace", wantErr: topics.ErrInvalidSubject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.give.Validate()
			if tt.wantText == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, routing.ErrInvalidRule)
			assert.Contains(t, err.Error(), tt.wantText)
			if tt.wantErr != nil {
				assert.ErrorIs(t, err, tt.wantErr)
			}
		})
	}
}

func TestRuleMatches(t *testing.T) {
	msg := func(typ actors.MessageType, sender, recipient, topic string) *actors.Message {
		return &actors.Message{Type: typ, Sender: sender, Recipient: recipient, Topic: topic}
	}
	direct := msg(actors.TypeDirect, "planner", "coder", "")
	publish := msg(actors.TypePublish, "coder", "", "agents.coder.done")
	tests := []struct {
		name string
		rule routing.Rule
		give *actors.Message
		want bool
	}{
		{name: "no filter", rule: routing.Rule{}, give: direct, want: true},
		{name: "no filter, zero message", rule: routing.Rule{}, give: &actors.Message{}, want: true},
		{name: "nil message", rule: routing.Rule{}, give: nil, want: false},
		{name: "disabled still matches", rule: routing.Rule{Enabled: false, Type: actors.TypeDirect}, give: direct, want: true},

		{name: "type", rule: routing.Rule{Type: actors.TypeDirect}, give: direct, want: true},
		{name: "other type", rule: routing.Rule{Type: actors.TypeRequest}, give: direct, want: false},
		{name: "sender", rule: routing.Rule{Sender: "planner"}, give: direct, want: true},
		{name: "other sender", rule: routing.Rule{Sender: "coder"}, give: direct, want: false},
		{name: "sender prefix", rule: routing.Rule{Sender: "plan"}, give: direct, want: false},
		{name: "sender case", rule: routing.Rule{Sender: "Planner"}, give: direct, want: false},
		{name: "recipient", rule: routing.Rule{Recipient: "coder"}, give: direct, want: true},
		{name: "other recipient", rule: routing.Rule{Recipient: "planner"}, give: direct, want: false},
		{name: "recipient on message without", rule: routing.Rule{Recipient: "coder"}, give: publish, want: false},

		{name: "literal topic", rule: routing.Rule{Topic: "agents.coder.done"}, give: publish, want: true},
		{name: "other literal topic", rule: routing.Rule{Topic: "agents.coder.failed"}, give: publish, want: false},
		{name: "topic on message without", rule: routing.Rule{Topic: "agents.coder.done"}, give: direct, want: false},
		{name: "star topic", rule: routing.Rule{Topic: "agents.*.done"}, give: publish, want: true},
		{name: "star topic, other event", rule: routing.Rule{Topic: "agents.*.failed"}, give: publish, want: false},
		{name: "leading star", rule: routing.Rule{Topic: "*.coder.done"}, give: publish, want: true},
		{name: "gt topic", rule: routing.Rule{Topic: "agents.>"}, give: publish, want: true},
		{name: "gt needs a token", rule: routing.Rule{Topic: "agents.coder.done.>"}, give: publish, want: false},
		{name: "gt alone", rule: routing.Rule{Topic: ">"}, give: publish, want: true},
		{name: "gt alone, no topic", rule: routing.Rule{Topic: ">"}, give: direct, want: false},

		{name: "every filter", rule: routing.Rule{
			Type: actors.TypePublish, Sender: "coder", Topic: "agents.*.done",
		}, give: publish, want: true},
		{name: "every filter but type", rule: routing.Rule{
			Type: actors.TypeBroadcast, Sender: "coder", Topic: "agents.*.done",
		}, give: publish, want: false},
		{name: "every filter but sender", rule: routing.Rule{
			Type: actors.TypePublish, Sender: "planner", Topic: "agents.*.done",
		}, give: publish, want: false},
		{name: "every filter but topic", rule: routing.Rule{
			Type: actors.TypePublish, Sender: "coder", Topic: "agents.*.failed",
		}, give: publish, want: false},
		{name: "all four", rule: routing.Rule{
			Type: actors.TypeDirect, Sender: "planner", Recipient: "coder", Topic: "x.>",
		}, give: msg(actors.TypeDirect, "planner", "coder", "x.y"), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.rule.Matches(tt.give))
		})
	}
}

func TestRuleMatchesDoesNotAllocate(t *testing.T) {
	r := routing.Rule{Type: actors.TypePublish, Sender: "coder", Topic: "agents.*.done"}
	m := &actors.Message{Type: actors.TypePublish, Sender: "coder", Topic: "agents.coder.done"}
	assert.Zero(t, testing.AllocsPerRun(100, func() { r.Matches(m) }))
}
