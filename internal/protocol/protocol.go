// Package protocol is the wire protocol between the agentbus daemon and its
// clients, as PROTOCOL.md specifies it: newline-delimited JSON frames, each
// one flat object with an "op". This package holds the frame, its encoding
// and decoding, and the table of stable error codes that mirror the bus's
// sentinel errors. The daemon (internal/server) and the Go client (client)
// both speak it through it.
package protocol

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
)

// Version is the protocol version this package speaks. A client names the
// version it speaks in hello; the daemon accepts versions 1..Version.
//
// Version 2 differs from 1 in one point: a send, publish or respond without
// an id is confirmed by no ok (a refusal is still answered, by an error
// frame that names the message in message_id); a sync confirms them all at
// once. See PROTOCOL.md, "Pipelining".
const Version = 2

// QuietVersion is the first version in which a send, publish or respond
// without an id is not answered with an ok.
const QuietVersion = 2

// Operations. Requests go from client to daemon and are answered by a frame
// with the same id; deliver frames are pushed by the daemon.
const (
	OpHello        = "hello"         // client → daemon: version, client name
	OpRegister     = "register"      // agent name; deliveries for it are pushed
	OpUnregister   = "unregister"    // agent name
	OpSend         = "send"          // message (type direct unless set)
	OpPublish      = "publish"       // message with topic (type publish)
	OpSubscribe    = "subscribe"     // agent, topic (a subject or pattern)
	OpUnsubscribe  = "unsubscribe"   // agent, topic
	OpRequest      = "request"       // message; answered by a response frame
	OpRespond      = "respond"       // message with request_id (type response)
	OpAck          = "ack"           // message_id of a delivered requires_ack message
	OpNack         = "nack"          // message_id; error: why (redelivered if attempts remain)
	OpStats        = "stats"         // answered by a stats frame
	OpClusterStats = "cluster_stats" // answered by a stats frame with every cluster node's statistics
	OpDeadLetters  = "dead_letters"  // reason/agent/topic/limit filter; answered by letters
	OpReplay       = "replay"        // seq, to
	OpHistory      = "history"       // sender/recipient/topic/type/limit; answered by messages
	OpPing         = "ping"          // answered by pong
	OpCredit       = "credit"        // agent, n: n more deliveries may be in flight; not answered
	OpSync         = "sync"          // answered by ok once every earlier send, publish, respond and request is carried out
	OpTopics       = "topics"        // limit; answered by topics: the subscribed topics and their subscribers

	OpDeadLetter       = "dead_letter"        // seq; answered by dead_letters with that one letter
	OpPurgeDeadLetters = "purge_dead_letters" // answered by ok with n, the letters removed
	OpSubscribers      = "subscribers"        // topic; answered by ok with n, the agents a publish reaches

	OpWelcome  = "welcome"  // daemon → client: answer to hello
	OpOK       = "ok"       // daemon → client: the operation succeeded
	OpError    = "error"    // daemon → client: the operation failed; code, error
	OpPong     = "pong"     // daemon → client: answer to ping
	OpResponse = "response" // daemon → client: answer to request
	OpDeliver  = "deliver"  // daemon → client: a message for a registered agent
)

// Frame is one protocol frame. Only the fields an op uses are set; the
// others are left out of the JSON form. Unknown fields are ignored, so the
// protocol can grow without breaking clients.
type Frame struct {
	Op string `json:"op"`
	// ID correlates a client's operation with the daemon's answer (the
	// client picks it; the answer echoes it). Deliver frames have none.
	ID string `json:"id,omitempty"`

	Version  int    `json:"version,omitempty"`   // hello, welcome
	Client   string `json:"client,omitempty"`    // hello: the client's name, for logs
	Server   string `json:"server,omitempty"`    // welcome: the daemon's name and version
	MaxFrame int    `json:"max_frame,omitempty"` // welcome: the largest frame accepted, in bytes

	Agent     string            `json:"agent,omitempty"`      // register, unregister, subscribe, unsubscribe, deliver, ack, nack, credit
	Window    int               `json:"window,omitempty"`     // register: at most this many deliveries in flight (0: no limit)
	Durable   bool              `json:"durable,omitempty"`    // register: a durable agent (see PROTOCOL.md)
	N         int               `json:"n,omitempty"`          // credit: deliveries the client has finished with
	Topic     string            `json:"topic,omitempty"`      // subscribe, unsubscribe, dead_letters, history
	Message   *agentbus.Message `json:"message,omitempty"`    // send, publish, request, respond, response, deliver
	MessageID string            `json:"message_id,omitempty"` // ok (send, publish, respond, replay), ack, nack
	TimeoutMS int64             `json:"timeout_ms,omitempty"` // request: overrides the daemon's request timeout

	Reason    string `json:"reason,omitempty"`    // dead_letters filter
	Sender    string `json:"sender,omitempty"`    // history filter
	Recipient string `json:"recipient,omitempty"` // history filter
	Type      string `json:"type,omitempty"`      // history filter: a message type name
	Limit     int    `json:"limit,omitempty"`     // dead_letters, history
	Seq       uint64 `json:"seq,omitempty"`       // replay
	To        string `json:"to,omitempty"`        // replay: another agent

	Code  string `json:"code,omitempty"`  // error: a stable code (see Codes)
	Error string `json:"error,omitempty"` // error, nack: human-readable text

	Stats    json.RawMessage     `json:"stats,omitempty"`    // stats answer
	Letters  []Letter            `json:"letters,omitempty"`  // dead_letters answer
	Messages []*agentbus.Message `json:"messages,omitempty"` // history answer
	Topics   []TopicInfo         `json:"topics,omitempty"`   // topics answer
}

// TopicInfo is one subscribed topic (a subject or a pattern) in a topics
// answer, with the agents subscribed to exactly it, sorted.
type TopicInfo struct {
	Topic       string   `json:"topic"`
	Subscribers []string `json:"subscribers"`
}

// Letter is the wire form of a dead letter.
type Letter struct {
	Seq      uint64            `json:"seq"`
	Reason   string            `json:"reason"`
	Error    string            `json:"error,omitempty"`
	Agent    string            `json:"agent,omitempty"`
	Time     time.Time         `json:"time"`
	Attempts int               `json:"attempts,omitempty"`
	Replays  int               `json:"replays,omitempty"`
	Message  *agentbus.Message `json:"message,omitempty"`
	Value    string            `json:"value,omitempty"` // a foreign value, printed with %v
}

// FromLetter converts a dead letter to its wire form.
func FromLetter(l deadletter.Letter) Letter {
	w := Letter{Seq: l.Seq, Reason: string(l.Reason), Error: l.Err, Agent: l.Agent, Time: l.Time,
		Attempts: l.Attempts, Replays: l.Replays, Message: l.Message}
	if l.Message == nil && l.Value != nil {
		w.Value = fmt.Sprintf("%T %v", l.Value, l.Value)
	}
	return w
}
