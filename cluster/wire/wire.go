// Package wire is the one stable, versioned form in which agentbus nodes
// exchange frames: the protobuf message Frame (wire.proto), which carries an
// agentbus message as an Envelope, field for field. Protoactor remote
// serializes it with protobuf (protoactor's custom serializers are never
// used); memberlist user messages carry it too. A node accepts only frames of
// its own Version, and only Frame: nothing else of ours ever crosses.
package wire

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/descartes/agentbus/actors"
)

// Version is the wire version this build speaks. Peers of another version
// are refused at join, and their frames are dropped.
const Version = 1

// ErrMalformed means a frame could not be decoded or failed validation.
var ErrMalformed = errors.New("agentbus: malformed cluster frame")

// ErrVersion means a frame or a peer speaks another wire version.
var ErrVersion = errors.New("agentbus: incompatible cluster wire version")

// FullName is the protobuf name of Frame, the one type nodes exchange.
const FullName = "agentbus.cluster.v1.Frame"

// Encode returns m as an Envelope. It does not validate m; the bus
// validated it when it accepted it.
func Encode(m *actors.Message) *Envelope {
	e := &Envelope{
		Id:            m.ID,
		Type:          uint32(m.Type),
		Sender:        m.Sender,
		Recipient:     m.Recipient,
		Topic:         m.Topic,
		RequestId:     m.RequestID,
		CorrelationId: m.CorrelationID,
		Payload:       m.Payload,
		TtlNs:         int64(m.TTL),
		Attempts:      int32(min(m.Attempts, math.MaxInt32)),
		Metadata:      m.Metadata,
		Priority:      uint32(m.Priority),
		RequiresAck:   m.RequiresAck,
	}
	if !m.Timestamp.IsZero() {
		e.TimestampUnixNano = m.Timestamp.UnixNano()
	}
	return e
}

// Decode returns the message e carries, validated as Send validates a
// message (maxSize > 0 caps its size), with its agent names checked. It
// returns an error wrapping ErrMalformed for anything a well-behaved node
// never sends.
func Decode(e *Envelope, maxSize int) (*actors.Message, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: no message", ErrMalformed)
	}
	if e.Type > math.MaxUint8 || e.Priority > math.MaxUint8 {
		return nil, fmt.Errorf("%w: type %d, priority %d", ErrMalformed, e.Type, e.Priority)
	}
	if e.Id == "" {
		return nil, fmt.Errorf("%w: message without id", ErrMalformed)
	}
	m := &actors.Message{
		ID:            e.Id,
		Type:          actors.MessageType(e.Type),
		Sender:        e.Sender,
		Recipient:     e.Recipient,
		Topic:         e.Topic,
		RequestID:     e.RequestId,
		CorrelationID: e.CorrelationId,
		Payload:       e.Payload,
		TTL:           time.Duration(e.TtlNs),
		Attempts:      int(e.Attempts),
		Metadata:      e.Metadata,
		Priority:      uint8(e.Priority),
		RequiresAck:   e.RequiresAck,
	}
	if len(m.Payload) == 0 {
		m.Payload = nil
	}
	if e.TimestampUnixNano != 0 {
		m.Timestamp = time.Unix(0, e.TimestampUnixNano).UTC()
	}
	if err := m.Validate(maxSize); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if m.Recipient != "" {
		if err := actors.ValidateName(m.Recipient); err != nil {
			return nil, fmt.Errorf("%w: recipient: %w", ErrMalformed, err)
		}
	}
	return m, nil
}

// Marshal encodes f for a memberlist message.
func Marshal(f *Frame) ([]byte, error) {
	f.Version = Version
	return proto.Marshal(f)
}

// Unmarshal decodes a memberlist message into a Frame of this Version.
// Errors wrap ErrMalformed or ErrVersion.
func Unmarshal(b []byte) (*Frame, error) {
	f := &Frame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := f.Check(); err != nil {
		return nil, err
	}
	return f, nil
}

// Check reports whether f is of this Version and has a known kind and a
// sender. Errors wrap ErrMalformed or ErrVersion.
func (f *Frame) Check() error {
	if f.GetVersion() != Version {
		return fmt.Errorf("%w: frame version %d, this node speaks %d", ErrVersion, f.GetVersion(), Version)
	}
	if _, ok := Kind_name[int32(f.GetKind())]; !ok || f.GetKind() == Kind_KIND_UNSPECIFIED {
		return fmt.Errorf("%w: kind %d", ErrMalformed, f.GetKind())
	}
	if f.GetFrom() == "" {
		return fmt.Errorf("%w: no sender", ErrMalformed)
	}
	return nil
}
