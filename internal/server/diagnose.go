package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/mailbox"
)

// diagnose turns the decoder's error for a frame whose message did not
// decode into one that names the bad field, with code invalid_message: a
// value of the wrong range or kind (a priority of 1000, an unknown type) is
// a bad message, not a bad frame. It runs only on that error path. Any other
// error is returned as it is.
func diagnose(data []byte, err error) error {
	if !errors.Is(err, protocol.ErrInvalidFrame) || !strings.Contains(err.Error(), "invalid frame: message: ") {
		return err // the frame around the message is what is wrong
	}
	var frame struct {
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(data, &frame) != nil || len(frame.Message) == 0 {
		return err // not JSON, or no message: the frame is what is wrong
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(frame.Message, &fields) != nil {
		return err // not an object: a field of the frame of the wrong type
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: message: "+format, append([]any{agentbus.ErrInvalidMessage}, args...)...)
	}
	if raw, ok := fields["priority"]; ok {
		var p json.Number
		if json.Unmarshal(raw, &p) != nil || bytes.HasPrefix(raw, []byte(`"`)) || strings.ContainsAny(p.String(), ".eE") {
			return bad("priority must be an integer from 0 to %d, not %s", mailbox.MaxPriority, raw)
		}
		if n, e := p.Int64(); e != nil || n < 0 || n > mailbox.MaxPriority {
			return bad("priority %s is not in 0..%d", raw, mailbox.MaxPriority)
		}
	}
	if raw, ok := fields["type"]; ok {
		var name string
		var t agentbus.MessageType
		if json.Unmarshal(raw, &name) != nil || t.UnmarshalText([]byte(name)) != nil {
			return bad("type must be one of direct, publish, broadcast, subscribe, unsubscribe, request, "+
				"response, ack, error, heartbeat, control; not %s", raw)
		}
	}
	for _, name := range []string{"id", "sender", "recipient", "topic", "request_id", "correlation_id"} {
		if raw, ok := fields[name]; ok {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return bad("%s must be a string, not %s", name, raw)
			}
		}
	}
	if raw, ok := fields["attempts"]; ok {
		var n uint32
		if json.Unmarshal(raw, &n) != nil {
			return bad("attempts must be a non-negative integer, not %s", raw)
		}
	}
	if raw, ok := fields["requires_ack"]; ok {
		var v bool
		if json.Unmarshal(raw, &v) != nil {
			return bad("requires_ack must be true or false, not %s", raw)
		}
	}
	if raw, ok := fields["payload"]; ok && !json.Valid(raw) {
		return bad("payload is not JSON")
	}
	// What the message decoder said, once, without the frame's prefix.
	msg := err.Error()
	if i := strings.LastIndex(msg, agentbus.ErrInvalidMessage.Error()+": "); i >= 0 {
		return fmt.Errorf("%w: message: %s", agentbus.ErrInvalidMessage, msg[i+len(agentbus.ErrInvalidMessage.Error())+2:])
	}
	return err
}
