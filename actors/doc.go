// Package actors holds what every agent is made of: the message envelope,
// the handler an agent runs, and the protoactor actor that runs it.
//
// # Messages
//
// A Message is the envelope of everything the bus moves: an ID (a UUIDv7,
// strictly increasing within a process), a type (direct, publish, broadcast,
// subscribe, unsubscribe, request, response, ack, error, heartbeat, control),
// sender, recipient or topic, request and correlation IDs, a JSON payload, a
// priority from 0 to 100 (default 50), a timestamp, a TTL, whether it
// requires an acknowledgement and how often it was tried, and string metadata
// (which carries the W3C trace context). NewMessage and the With methods build
// one; Validate checks it against the bus's rules, each failure a clear
// sentinel (ErrInvalidMessage, ErrMessageTooLarge); its JSON form round-trips
// exactly.
//
// # JSON
//
// MarshalJSON and AppendJSON write a message; UnmarshalJSON, and for
// encoding/json/v2 UnmarshalJSONFrom, read one as encoding/json reads a
// struct (the differential fuzz tests hold them to it), with errors that
// name the field. Both sides go through github.com/go-json-experiment/json's
// jsontext and the project's one JSON policy (internal/codec): the syntax
// encoding/json accepts, and strings escaped only where JSON requires it.
//
// # Handlers and agents
//
// A Handler handles one message at a time, like an http.Handler; HandlerFunc
// adapts a function, and a handler that wraps another (as otelbus.Tracer's
// Handler does) adds behaviour around it. An Agent is the bus-side state of
// one agent: its name, PID, mailbox, handler and counters (handled, failed,
// restarts, the message being handled). Props makes the protoactor actor that
// runs the handler on the agent's mailbox: it reports every failure, panic,
// stop and restart to the Hooks of the bus that spawned it, and hands the
// handler a context that carries the agent (FromContext), so that what the
// handler sends is stamped with its name and trace.
//
// The root package agentbus re-exports what programs need, so most import only
// it.
package actors
