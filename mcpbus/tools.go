package mcpbus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/client"
)

// msgArgs are the message fields the sending tools share.
type msgArgs struct {
	Payload       json.RawMessage   `json:"payload,omitempty" jsonschema:"the content: any JSON value"`
	Priority      *int              `json:"priority,omitempty" jsonschema:"0 (lowest) to 100 (highest), default 50; higher is delivered first"`
	TTLMS         int64             `json:"ttl_ms,omitempty" jsonschema:"milliseconds the message may wait for delivery before it is dead-lettered as expired; 0: forever"`
	CorrelationID string            `json:"correlation_id,omitempty" jsonschema:"groups the messages of one conversation"`
	Metadata      map[string]string `json:"metadata,omitempty" jsonschema:"free-form string headers (a W3C traceparent is propagated)"`
}

// tuneMsg sets the bounds of msgArgs' fields in a schema inferred from a
// struct that embeds it.
func tuneMsg(s *jsonschema.Schema) {
	bound(s, "priority", 0, actors.MaxPriority, actors.DefaultPriority)
	bound(s, "ttl_ms", 0, 1<<40, -1)
}

// message builds a message of type t from a's fields. It returns an error
// wrapping agentbus.ErrInvalidMessage for out-of-range fields.
func (a msgArgs) message(t agentbus.MessageType) (*agentbus.Message, error) {
	m := agentbus.NewMessage(t, "", a.Payload)
	if a.Priority != nil {
		if *a.Priority < 0 || *a.Priority > actors.MaxPriority {
			return nil, fmt.Errorf("%w: priority %d is not in 0..%d", agentbus.ErrInvalidMessage, *a.Priority, actors.MaxPriority)
		}
		m.Priority = uint8(*a.Priority)
	}
	if a.TTLMS < 0 {
		return nil, fmt.Errorf("%w: negative ttl_ms", agentbus.ErrInvalidMessage)
	}
	m.TTL = time.Duration(a.TTLMS) * time.Millisecond
	m.CorrelationID = a.CorrelationID
	m.Metadata = a.Metadata
	return m, nil
}

type sendArgs struct {
	To   string `json:"to,omitempty" jsonschema:"the recipient agent (not for a broadcast)"`
	Type string `json:"type,omitempty" jsonschema:"direct (default), broadcast (to every agent but you), error, heartbeat or control"`
	msgArgs
	RequiresAck bool `json:"requires_ack,omitempty" jsonschema:"redeliver until the recipient acknowledges it"`
}

type requestArgs struct {
	To string `json:"to" jsonschema:"the agent to ask"`
	msgArgs
	TimeoutMS int64 `json:"timeout_ms,omitempty" jsonschema:"milliseconds to wait for the response, default 30000"`
}

type replyArgs struct {
	RequestID string          `json:"request_id" jsonschema:"the request_id of a request you took from the inbox"`
	Payload   json.RawMessage `json:"payload,omitempty" jsonschema:"the answer: any JSON value"`
}

type publishArgs struct {
	Topic string `json:"topic" jsonschema:"a dot-separated subject, such as builds.api.done"`
	msgArgs
	RequiresAck bool `json:"requires_ack,omitempty" jsonschema:"each subscriber redelivers until it acknowledges it"`
}

type topicArgs struct {
	Topic string `json:"topic" jsonschema:"a subject, or a pattern: * matches one token, > the rest (builds.*.done, alerts.>)"`
}

type inboxArgs struct {
	Max    int   `json:"max,omitempty" jsonschema:"the most messages to take, default 10"`
	WaitMS int64 `json:"wait_ms,omitempty" jsonschema:"milliseconds to wait for a first message when none is waiting; default 0"`
}

type deadLetterArgs struct {
	Reason string `json:"reason,omitempty" jsonschema:"only this reason, such as no_recipient, mailbox_full, expired"`
	Agent  string `json:"agent,omitempty" jsonschema:"only letters for this agent"`
	Topic  string `json:"topic,omitempty" jsonschema:"only letters on this topic"`
	Limit  int    `json:"limit,omitempty" jsonschema:"the most letters, newest kept; default 100"`
}

type noArgs struct{}

type sentResult struct {
	MessageID string `json:"message_id" jsonschema:"the message's id"`
}

type responseResult struct {
	Response wireMessage `json:"response" jsonschema:"the response"`
}

type subscription struct {
	Topic      string `json:"topic"`
	Subscribed bool   `json:"subscribed"`
}

type inboxResult struct {
	Messages []wireMessage `json:"messages" jsonschema:"the messages taken, in delivery order (higher priority first)"`
}

type agentsResult struct {
	Agents []agentbus.AgentStats `json:"agents"`
}

type topicsResult struct {
	Topics []client.TopicInfo `json:"topics"`
}

type lettersResult struct {
	Letters []wireLetter `json:"letters" jsonschema:"oldest first"`
}

// wireMessage is a message as the tools show it: the envelope's JSON form
// (see PROTOCOL.md).
type wireMessage struct {
	ID            string            `json:"id"`
	Type          string            `json:"type"`
	Sender        string            `json:"sender,omitempty"`
	Recipient     string            `json:"recipient,omitempty"`
	Topic         string            `json:"topic,omitempty"`
	RequestID     string            `json:"request_id,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Payload       json.RawMessage   `json:"payload,omitempty"`
	Priority      int               `json:"priority"`
	Timestamp     time.Time         `json:"timestamp"`
	TTLMS         int64             `json:"ttl_ms,omitempty"`
	Attempts      int               `json:"attempts,omitempty"`
	RequiresAck   bool              `json:"requires_ack,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

func toWire(m *agentbus.Message) wireMessage {
	return wireMessage{ID: m.ID, Type: m.Type.String(), Sender: m.Sender, Recipient: m.Recipient, Topic: m.Topic,
		RequestID: m.RequestID, CorrelationID: m.CorrelationID, Payload: m.Payload, Priority: int(m.Priority),
		Timestamp: m.Timestamp, TTLMS: m.TTL.Milliseconds(), Attempts: m.Attempts, RequiresAck: m.RequiresAck,
		Metadata: m.Metadata}
}

// wireLetter is a dead letter as the dead_letters tool shows it.
type wireLetter struct {
	Seq      uint64       `json:"seq"`
	Reason   string       `json:"reason"`
	Error    string       `json:"error,omitempty"`
	Agent    string       `json:"agent,omitempty"`
	Time     time.Time    `json:"time"`
	Attempts int          `json:"attempts,omitempty"`
	Replays  int          `json:"replays,omitempty"`
	Message  *wireMessage `json:"message,omitempty"`
	Value    string       `json:"value,omitempty" jsonschema:"a value that was not a message"`
}

// addTools adds the server's tools.
func (s *Server) addTools() error {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true}
	for _, add := range []func() error{
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "send", Description: "Send a message to one agent (or a " +
				"broadcast to all). Returns once the bus has accepted it; the recipient reads it from its inbox."},
				func(sc *jsonschema.Schema) {
					tuneMsg(sc)
					oneOf(sc, "type", "direct", "broadcast", "error", "heartbeat", "control")
				}, s.send)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "request", Description: "Ask an agent and wait for its " +
				"answer (it replies with the reply tool, or its handler's response). Fails with " +
				"request_timeout if no answer comes within timeout_ms."},
				func(sc *jsonschema.Schema) {
					tuneMsg(sc)
					bound(sc, "timeout_ms", 1, MaxRequestTimeout.Milliseconds(), DefaultRequestTimeout.Milliseconds())
				}, s.request)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "reply", Description: "Answer a request you took from " +
				"the inbox (a message of type request), by its request_id."}, nil, s.reply)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "publish", Description: "Publish a message on a topic; " +
				"every agent subscribed to it (or to a matching pattern) gets a copy."}, tuneMsg, s.publish)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "subscribe", Description: "Subscribe to a topic or " +
				"pattern: what is published on it arrives in your inbox."}, nil, s.subscribe)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "unsubscribe", Description: "End a subscription " +
				"(name the topic exactly as subscribed)."}, nil, s.unsubscribe)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "inbox", Description: "Take up to max messages sent to " +
				"you, highest priority first, waiting up to wait_ms for the first. Messages you take are " +
				"acknowledged; answer requests among them with reply."},
				func(sc *jsonschema.Schema) {
					bound(sc, "max", 1, int64(s.max), min(10, int64(s.max)))
					bound(sc, "wait_ms", 0, MaxInboxWait.Milliseconds(), 0)
				}, s.inbox)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "agents", Description: "List the agents on the bus, with " +
				"their queue depth and counts.", Annotations: readOnly}, nil, s.agents)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "stats", Description: "The bus's statistics: totals, " +
				"dead letters by reason, per topic, sender, type and agent, backpressure, latency.",
				Annotations: readOnly}, nil, s.stats)
		},
		func() error {
			return addTool(s.mcp, &mcp.Tool{Name: "dead_letters", Description: "List dead letters: messages " +
				"the bus could not deliver, each with its reason.", Annotations: readOnly},
				func(sc *jsonschema.Schema) { bound(sc, "limit", 1, 1000, 100) }, s.deadLetters)
		},
	} {
		if err := add(); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) send(ctx context.Context, in sendArgs) (sentResult, error) {
	t := agentbus.TypeDirect
	if in.Type != "" {
		var err error
		if t, err = actors.ParseMessageType(in.Type); err != nil {
			return sentResult{}, err
		}
		switch t {
		case agentbus.TypeDirect, agentbus.TypeBroadcast, agentbus.TypeError, agentbus.TypeHeartbeat, agentbus.TypeControl:
		default:
			return sentResult{}, fmt.Errorf("%w: send does not send %s messages", agentbus.ErrInvalidMessage, t)
		}
	}
	m, err := in.message(t)
	if err != nil {
		return sentResult{}, err
	}
	m.Sender, m.Recipient, m.RequiresAck = s.agent, in.To, in.RequiresAck
	id, err := s.c.Send(ctx, m)
	return sentResult{MessageID: id}, err
}

func (s *Server) request(ctx context.Context, in requestArgs) (responseResult, error) {
	m, err := in.message(agentbus.TypeRequest)
	if err != nil {
		return responseResult{}, err
	}
	m.Sender, m.Recipient = s.agent, in.To
	timeout := DefaultRequestTimeout
	if in.TimeoutMS > 0 {
		timeout = min(time.Duration(in.TimeoutMS)*time.Millisecond, MaxRequestTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := s.c.Request(ctx, m)
	if err != nil {
		return responseResult{}, err
	}
	return responseResult{Response: toWire(r)}, nil
}

func (s *Server) reply(ctx context.Context, in replyArgs) (sentResult, error) {
	req, ok := s.awaited(in.RequestID)
	if !ok {
		return sentResult{}, fmt.Errorf("%w: no request %q taken from the inbox awaits a reply", agentbus.ErrNotPending, in.RequestID)
	}
	id, err := s.c.Reply(ctx, req, in.Payload)
	if err != nil {
		return sentResult{}, err
	}
	s.replied(in.RequestID)
	return sentResult{MessageID: id}, nil
}

func (s *Server) publish(ctx context.Context, in publishArgs) (sentResult, error) {
	m, err := in.message(agentbus.TypePublish)
	if err != nil {
		return sentResult{}, err
	}
	m.Sender, m.Topic, m.RequiresAck = s.agent, in.Topic, in.RequiresAck
	id, err := s.c.PublishMessage(ctx, m)
	return sentResult{MessageID: id}, err
}

func (s *Server) subscribe(ctx context.Context, in topicArgs) (subscription, error) {
	if err := s.c.Subscribe(ctx, s.agent, in.Topic); err != nil {
		return subscription{}, err
	}
	return subscription{Topic: in.Topic, Subscribed: true}, nil
}

func (s *Server) unsubscribe(ctx context.Context, in topicArgs) (subscription, error) {
	if err := s.c.Unsubscribe(ctx, s.agent, in.Topic); err != nil {
		return subscription{}, err
	}
	return subscription{Topic: in.Topic, Subscribed: false}, nil
}

func (s *Server) inbox(ctx context.Context, in inboxArgs) (inboxResult, error) {
	n := 10
	if in.Max > 0 {
		n = in.Max
	}
	n = min(n, s.max)
	wait := min(time.Duration(in.WaitMS)*time.Millisecond, MaxInboxWait)
	taken := s.take(ctx, n, wait)
	out := inboxResult{Messages: make([]wireMessage, len(taken))}
	for i, m := range taken {
		out.Messages[i] = toWire(m)
	}
	return out, nil
}

func (s *Server) agents(ctx context.Context, _ noArgs) (agentsResult, error) {
	st, err := s.c.Stats(ctx)
	if err != nil {
		return agentsResult{}, err
	}
	if st.Agents == nil {
		st.Agents = []agentbus.AgentStats{}
	}
	return agentsResult{Agents: st.Agents}, nil
}

func (s *Server) stats(ctx context.Context, _ noArgs) (map[string]any, error) {
	raw, err := s.c.StatsJSON(ctx)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("mcpbus: the daemon's stats: %w", err)
	}
	return out, nil
}

func (s *Server) deadLetters(ctx context.Context, in deadLetterArgs) (lettersResult, error) {
	limit := 100
	if in.Limit > 0 {
		limit = in.Limit
	}
	letters, err := s.c.DeadLetters(ctx, client.LetterFilter{Reason: in.Reason, Agent: in.Agent, Topic: in.Topic, Limit: limit})
	if err != nil {
		return lettersResult{}, err
	}
	out := lettersResult{Letters: make([]wireLetter, len(letters))}
	for i, l := range letters {
		w := wireLetter{Seq: l.Seq, Reason: l.Reason, Error: l.Error, Agent: l.Agent, Time: l.Time,
			Attempts: l.Attempts, Replays: l.Replays, Value: l.Value}
		if l.Message != nil {
			m := toWire(l.Message)
			w.Message = &m
		}
		out.Letters[i] = w
	}
	return out, nil
}

// Resource URIs.
const (
	AgentsURI = "agentbus://agents"
	TopicsURI = "agentbus://topics"
)

// addResources adds the agent list and the topics as resources.
func (s *Server) addResources() {
	s.mcp.AddResource(&mcp.Resource{URI: AgentsURI, Name: "agents", MIMEType: "application/json",
		Description: "The agents on the bus, with queue depth and counts (as the agents tool returns them)."},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			r, err := s.agents(ctx, noArgs{})
			if err != nil {
				return nil, err
			}
			return jsonResource(req.Params.URI, r)
		})
	s.mcp.AddResource(&mcp.Resource{URI: TopicsURI, Name: "topics", MIMEType: "application/json",
		Description: "The topics (subjects and patterns) agents are subscribed to, each with its subscribers."},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			t, err := s.c.Topics(ctx, 0)
			if err != nil {
				return nil, err
			}
			return jsonResource(req.Params.URI, topicsResult{Topics: t})
		})
}

func jsonResource(uri string, v any) (*mcp.ReadResourceResult, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("mcpbus: encode %s: %w", uri, err)
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(data)}}}, nil
}
