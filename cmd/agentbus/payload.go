package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
)

// maxPayload bounds what "-" reads from stdin: the daemon's default message
// limit (a daemon started with a larger one takes no larger payload from the
// CLI).
const maxPayload = agentbus.DefaultMaxMessageSize

// payloadArg turns a command-line payload into JSON. "-" reads it from
// stdin. With raw, the text is sent as a JSON string, whatever it holds.
// Otherwise text that is JSON is sent as it is; text that starts like JSON
// (with {, [ or ") but does not parse is refused, so that a typo does not go
// out as a string; any other text is sent as a JSON string.
func payloadArg(g *globals, arg string, raw bool) (json.RawMessage, error) {
	data := []byte(arg)
	if arg == "-" {
		var err error
		data, err = io.ReadAll(io.LimitReader(g.stdin, maxPayload+1))
		if err != nil {
			return nil, fmt.Errorf("read the payload from stdin: %w", err)
		}
		if len(data) > maxPayload {
			return nil, usagef("the payload on stdin is larger than %d bytes", maxPayload)
		}
		if !raw {
			data = bytes.TrimSpace(data)
		}
	}
	if raw {
		s, _ := json.Marshal(string(data)) // a string always encodes
		return s, nil
	}
	var v any
	err := json.Unmarshal(data, &v)
	if err == nil {
		return json.RawMessage(data), nil
	}
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && (t[0] == '{' || t[0] == '[' || t[0] == '"') {
		where := ""
		var se *json.SyntaxError
		if errors.As(err, &se) {
			where = fmt.Sprintf(" at byte %d", se.Offset)
		}
		return nil, usageError{explainf(err, "the payload starts like JSON but is not valid JSON%s (%v); "+
			"to send the text as a string, add --raw", where, err)}
	}
	s, _ := json.Marshal(string(data))
	return s, nil
}

// msgFlags are the message fields send, pub and req can set.
type msgFlags struct {
	priority int
	ttl      time.Duration
	ack      bool
	corr     string
	raw      bool
}

func (m *msgFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVarP(&m.priority, "priority", "p", 50, "priority 0-100, higher first")
	f.DurationVar(&m.ttl, "ttl", 0, "dead-letter the message (reason expired) if it is not delivered within this")
	f.BoolVar(&m.ack, "ack", false, "require an acknowledgement (redelivered until acked)")
	f.StringVar(&m.corr, "correlation-id", "", "correlation id")
	f.BoolVar(&m.raw, "raw", false, "send PAYLOAD as a JSON string, whatever it holds")
}

func (m *msgFlags) apply(msg *agentbus.Message) error {
	if m.priority < 0 || m.priority > actors.MaxPriority {
		return usagef("--priority: %d is not in 0..%d", m.priority, actors.MaxPriority)
	}
	if m.ttl < 0 {
		return usagef("--ttl: %v is negative", m.ttl)
	}
	msg.Priority = uint8(m.priority)
	msg.TTL = m.ttl
	msg.RequiresAck = m.ack
	msg.CorrelationID = m.corr
	return nil
}

// message builds a message of type t whose payload is the command-line
// argument arg (see payloadArg), with the flags' fields.
func (m *msgFlags) message(g *globals, t agentbus.MessageType, arg string) (*agentbus.Message, error) {
	payload, err := payloadArg(g, arg, m.raw)
	if err != nil {
		return nil, err
	}
	msg := agentbus.NewMessage(t, "", payload)
	if err := m.apply(msg); err != nil {
		return nil, err
	}
	return msg, nil
}
