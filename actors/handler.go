package actors

import (
	"context"
	"reflect"
)

// Handler handles the messages delivered to an agent. An agent runs one
// message at a time, so Handle is never called concurrently for one agent; it
// may be called concurrently for different agents sharing a Handler value.
//
// ctx belongs to the agent: it is canceled when the agent stops, and passing it
// to the bus (Send, Request, Publish, Reply) from inside Handle identifies the
// agent as the sender. Returning an error marks the message as failed: it is
// dead-lettered with reason handler_error. A panic is recovered by the
// agent's supervisor; the message that caused it is dead-lettered with reason
// handler_panic.
type Handler interface {
	Handle(ctx context.Context, msg *Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, msg *Message) error

// Handle calls f(ctx, msg).
func (f HandlerFunc) Handle(ctx context.Context, msg *Message) error { return f(ctx, msg) }

var _ Handler = HandlerFunc(nil)

// NilHandler reports whether h is nil or holds a nil function or pointer, such
// as HandlerFunc(nil), which would panic on its first message.
func NilHandler(h Handler) bool {
	if h == nil {
		return true
	}
	switch v := reflect.ValueOf(h); v.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Map, reflect.Chan, reflect.Slice, reflect.Interface:
		return v.IsNil()
	}
	return false
}
