package actors_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/descartes/agentbus/actors"
)

func TestInheritTraceInActors(t *testing.T) {
	from := (&actors.Message{}).WithMetadata(actors.TraceParent, "00-a-b-01").WithMetadata(actors.TraceState, "k=v")

	m := (&actors.Message{}).WithMetadata("x", "1")
	shared := m.Metadata
	assert.Same(t, m, m.InheritTrace(from))
	assert.Equal(t, map[string]string{"x": "1", actors.TraceParent: "00-a-b-01", actors.TraceState: "k=v"}, m.Metadata)
	assert.Equal(t, map[string]string{"x": "1"}, shared, "the old map is left alone")

	own := (&actors.Message{}).WithMetadata(actors.TraceParent, "mine")
	assert.Equal(t, "mine", own.InheritTrace(from).Metadata[actors.TraceParent], "its own trace parent stays")

	noState := (&actors.Message{}).WithMetadata(actors.TraceParent, "p")
	assert.Equal(t, map[string]string{actors.TraceParent: "p"}, new(actors.Message).InheritTrace(noState).Metadata)

	for _, src := range []*actors.Message{nil, {}, (&actors.Message{}).WithMetadata("y", "2")} {
		assert.Nil(t, new(actors.Message).InheritTrace(src).Metadata)
	}
}

func TestNilHandlerInActors(t *testing.T) {
	var nilFunc actors.HandlerFunc
	assert.True(t, actors.NilHandler(nil))
	assert.True(t, actors.NilHandler(nilFunc))
	assert.False(t, actors.NilHandler(actors.HandlerFunc(func(context.Context, *actors.Message) error { return nil })))
	assert.False(t, actors.NilHandler(valueHandler{}))
}

// valueHandler is a Handler that is not a pointer or a function.
type valueHandler struct{}

func (valueHandler) Handle(context.Context, *actors.Message) error { return nil }
