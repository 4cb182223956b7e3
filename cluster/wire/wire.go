// Package wire is the one stable, versioned form in which agentbus nodes
// exchange frames: the protobuf message Frame (wire.proto), which carries an
// agentbus message as an Envelope, field for field. Protoactor remote
// serializes it with protobuf (protoactor's custom serializers are never
// used); memberlist user messages carry it too. A node accepts only frames of
// its own Version, and only Frame: nothing else of ours ever crosses.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"unicode/utf8"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
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

// Encode returns m encoded as an Envelope (wire.proto). It does not
// validate m; the bus validated it when it accepted it. It writes the
// protobuf wire format by hand (protowire), which any protobuf
// implementation decodes as an Envelope, at a fraction of the cost of
// protobuf's reflection.
func Encode(m *actors.Message) []byte {
	return appendEnvelope(make([]byte, 0, envelopeSize(m)), m)
}

// EncodeDelivery returns a Delivery (wire.proto) carrying m encoded as an
// Envelope, with patience and origin, for Frame.deliveries: one allocation
// for the whole delivery, with room to append its sequence number with
// AppendSeq without another. It does not validate m.
func EncodeDelivery(m *actors.Message, patience time.Duration, origin string) []byte {
	es := envelopeSize(m)
	n := 1 + protowire.SizeVarint(uint64(es)) + es + seqRoom
	if patience != 0 {
		n += 1 + protowire.SizeVarint(uint64(patience))
	}
	if origin != "" {
		n += 1 + protowire.SizeBytes(len(origin))
	}
	b := make([]byte, 0, n)
	b = protowire.AppendTag(b, deliveryMessage, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(es))
	b = appendEnvelope(b, m)
	if patience != 0 {
		b = protowire.AppendTag(b, deliveryPatience, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(patience))
	}
	if origin != "" {
		b = protowire.AppendTag(b, deliveryOrigin, protowire.BytesType)
		b = protowire.AppendString(b, origin)
	}
	return b
}

// seqRoom is the most AppendSeq appends: a tag and a 64-bit varint.
const seqRoom = 1 + binary.MaxVarintLen64

// AppendSeq appends the sequence number field to d, a delivery from
// EncodeDelivery, in the room EncodeDelivery left for it (protobuf fields
// may come in any order). Call it once per delivery.
func AppendSeq(d []byte, seq uint64) []byte {
	d = protowire.AppendTag(d, deliverySeq, protowire.VarintType)
	return protowire.AppendVarint(d, seq)
}

// Incoming is a delivery as DecodeDelivery returns it.
type Incoming struct {
	Seq      uint64
	Message  []byte // an encoded Envelope: see Decode
	Patience time.Duration
	Origin   string
}

// DecodeDelivery decodes a Delivery (one element of Frame.deliveries). Its
// Message and Origin share b, which must not change afterwards. Unknown
// fields are skipped (a newer node's additions). It returns an error
// wrapping ErrMalformed for a frame that is not a Delivery, or whose origin
// is not UTF-8. It does not check that Seq and Message are set.
func DecodeDelivery(b []byte) (Incoming, error) {
	var d Incoming
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return d, fmt.Errorf("%w: delivery: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		want := protowire.VarintType
		switch num {
		case deliveryMessage, deliveryOrigin:
			want = protowire.BytesType
		case deliverySeq, deliveryPatience:
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return d, fmt.Errorf("%w: delivery field %d: %w", ErrMalformed, num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if typ != want {
			return d, fmt.Errorf("%w: delivery field %d has wire type %d", ErrMalformed, num, typ)
		}
		var (
			v   uint64
			raw []byte
		)
		if typ == protowire.VarintType {
			v, n = protowire.ConsumeVarint(b)
		} else {
			raw, n = protowire.ConsumeBytes(b)
		}
		if n < 0 {
			return d, fmt.Errorf("%w: delivery field %d: %w", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case deliverySeq:
			d.Seq = v
		case deliveryMessage:
			d.Message = raw
		case deliveryPatience:
			d.Patience = time.Duration(int64(v))
		case deliveryOrigin:
			d.Origin = unsafe.String(unsafe.SliceData(raw), len(raw))
			if !utf8.ValidString(d.Origin) {
				return d, fmt.Errorf("%w: delivery origin that is not UTF-8", ErrMalformed)
			}
		}
	}
	return d, nil
}

// The Delivery's field numbers (wire.proto).
const (
	deliverySeq      protowire.Number = 1
	deliveryMessage  protowire.Number = 2
	deliveryPatience protowire.Number = 3
	deliveryOrigin   protowire.Number = 4
)

// envelopeSize returns the length of m's Envelope encoding: what
// appendEnvelope appends.
func envelopeSize(m *actors.Message) int {
	n := 0
	str := func(s string) {
		if s != "" {
			n += 1 + protowire.SizeBytes(len(s))
		}
	}
	varint := func(v uint64) {
		if v != 0 {
			n += 1 + protowire.SizeVarint(v)
		}
	}
	str(m.ID)
	varint(uint64(m.Type))
	str(m.Sender)
	str(m.Recipient)
	str(m.Topic)
	str(m.RequestID)
	str(m.CorrelationID)
	if len(m.Payload) > 0 {
		n += 1 + protowire.SizeBytes(len(m.Payload))
	}
	if !m.Timestamp.IsZero() {
		varint(uint64(m.Timestamp.UnixNano()))
	}
	varint(uint64(m.TTL))
	varint(attempts(m))
	for k, v := range m.Metadata {
		n += 1 + protowire.SizeBytes(entrySize(k, v))
	}
	varint(uint64(m.Priority))
	if m.RequiresAck {
		varint(1)
	}
	return n
}

// appendEnvelope appends m's Envelope encoding to b.
func appendEnvelope(b []byte, m *actors.Message) []byte {
	str := func(num protowire.Number, s string) {
		if s != "" {
			b = protowire.AppendTag(b, num, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	varint := func(num protowire.Number, v uint64) {
		if v != 0 {
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	str(fieldID, m.ID)
	varint(fieldType, uint64(m.Type))
	str(fieldSender, m.Sender)
	str(fieldRecipient, m.Recipient)
	str(fieldTopic, m.Topic)
	str(fieldRequestID, m.RequestID)
	str(fieldCorrelationID, m.CorrelationID)
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	if !m.Timestamp.IsZero() {
		varint(fieldTimestamp, uint64(m.Timestamp.UnixNano()))
	}
	varint(fieldTTL, uint64(m.TTL))
	varint(fieldAttempts, attempts(m))
	for k, v := range m.Metadata {
		b = protowire.AppendTag(b, fieldMetadata, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(entrySize(k, v)))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, v)
	}
	varint(fieldPriority, uint64(m.Priority))
	if m.RequiresAck {
		varint(fieldRequiresAck, 1)
	}
	return b
}

// attempts is m.Attempts as the Envelope's int32 field encodes it.
func attempts(m *actors.Message) uint64 {
	return uint64(int64(int32(min(m.Attempts, math.MaxInt32))))
}

// entrySize is the length of one metadata map entry's encoding.
func entrySize(k, v string) int {
	return 1 + protowire.SizeBytes(len(k)) + 1 + protowire.SizeBytes(len(v))
}

// The Envelope's field numbers (wire.proto).
const (
	fieldID            protowire.Number = 1
	fieldType          protowire.Number = 2
	fieldSender        protowire.Number = 3
	fieldRecipient     protowire.Number = 4
	fieldTopic         protowire.Number = 5
	fieldRequestID     protowire.Number = 6
	fieldCorrelationID protowire.Number = 7
	fieldPayload       protowire.Number = 8
	fieldTimestamp     protowire.Number = 9
	fieldTTL           protowire.Number = 10
	fieldAttempts      protowire.Number = 11
	fieldMetadata      protowire.Number = 12
	fieldPriority      protowire.Number = 13
	fieldRequiresAck   protowire.Number = 14
)

// maxMetadata bounds the metadata entries a decoded message may have.
const maxMetadata = 1024

// Decode returns the message an encoded Envelope carries, validated as Send
// validates a message (maxSize > 0 caps its size), with its text fields
// checked for UTF-8 and its recipient's name checked. Unknown fields are
// skipped (a newer node's additions). The message's strings and payload
// share one copy of b, which must not change afterwards. It returns an
// error wrapping ErrMalformed for anything a well-behaved node never sends.
func Decode(b []byte, maxSize int) (*actors.Message, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: no message", ErrMalformed)
	}
	if maxSize > 0 && len(b) > 2*maxSize+4096 {
		return nil, fmt.Errorf("%w: envelope of %d bytes", ErrMalformed, len(b))
	}
	m := &actors.Message{}
	var ts int64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v   uint64
			raw []byte
		)
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			raw, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, fmt.Errorf("%w: field %d: %w", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		want := protowire.VarintType
		switch num {
		case fieldID, fieldSender, fieldRecipient, fieldTopic, fieldRequestID, fieldCorrelationID, fieldPayload, fieldMetadata:
			want = protowire.BytesType
		case fieldType, fieldTimestamp, fieldTTL, fieldAttempts, fieldPriority, fieldRequiresAck:
		default:
			continue // a field of a newer version
		}
		if typ != want {
			return nil, fmt.Errorf("%w: field %d has wire type %d", ErrMalformed, num, typ)
		}
		s := unsafe.String(unsafe.SliceData(raw), len(raw))
		switch num {
		case fieldID:
			m.ID = s
		case fieldType:
			if v == 0 || v > math.MaxUint8 {
				return nil, fmt.Errorf("%w: type %d", ErrMalformed, v)
			}
			m.Type = actors.MessageType(v)
		case fieldSender:
			m.Sender = s
		case fieldRecipient:
			m.Recipient = s
		case fieldTopic:
			m.Topic = s
		case fieldRequestID:
			m.RequestID = s
		case fieldCorrelationID:
			m.CorrelationID = s
		case fieldPayload:
			m.Payload = raw
		case fieldTimestamp:
			ts = int64(v)
		case fieldTTL:
			m.TTL = time.Duration(int64(v))
		case fieldAttempts:
			m.Attempts = int(int32(v))
		case fieldPriority:
			if v > math.MaxUint8 {
				return nil, fmt.Errorf("%w: priority %d", ErrMalformed, v)
			}
			m.Priority = uint8(v)
		case fieldRequiresAck:
			m.RequiresAck = v != 0
		case fieldMetadata:
			k, val, err := decodeEntry(raw)
			if err != nil {
				return nil, err
			}
			if m.Metadata == nil {
				m.Metadata = make(map[string]string, 2)
			}
			if len(m.Metadata) >= maxMetadata {
				return nil, fmt.Errorf("%w: more than %d metadata entries", ErrMalformed, maxMetadata)
			}
			m.Metadata[k] = val
		}
	}
	if m.ID == "" {
		return nil, fmt.Errorf("%w: message without id", ErrMalformed)
	}
	if ts != 0 {
		m.Timestamp = time.Unix(0, ts).UTC()
	}
	for _, s := range [...]string{m.ID, m.Sender, m.Recipient, m.Topic, m.RequestID, m.CorrelationID} {
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("%w: text that is not UTF-8", ErrMalformed)
		}
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

// decodeEntry decodes one metadata map entry.
func decodeEntry(b []byte) (key, value string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return "", "", fmt.Errorf("%w: metadata entry", ErrMalformed)
		}
		b = b[n:]
		raw, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return "", "", fmt.Errorf("%w: metadata entry", ErrMalformed)
		}
		b = b[n:]
		s := unsafe.String(unsafe.SliceData(raw), len(raw))
		if !utf8.ValidString(s) {
			return "", "", fmt.Errorf("%w: metadata that is not UTF-8", ErrMalformed)
		}
		switch num {
		case 1:
			key = s
		case 2:
			value = s
		}
	}
	return key, value, nil
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
