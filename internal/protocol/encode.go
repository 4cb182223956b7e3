package protocol

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/descartes/agentbus/internal/codec"
)

// Encode returns the JSON form of f, with no newline: its fields in the
// order of Frame's, those that are zero left out, every string escaped as
// internal/codec's package doc says, the message as Message.AppendJSON
// writes it, and stats compacted with its strings in that same form. It
// fails only if a message cannot be encoded (an unknown type, a payload
// that is not JSON), stats is not JSON, or a letter's time is outside the
// years 0 to 9999. It is safe for concurrent use.
func Encode(f *Frame) ([]byte, error) {
	return AppendFrame(nil, f)
}

// AppendFrame appends the JSON form of f to b (see Encode), so that a caller
// can encode into a buffer it reuses. On error, b is returned as it was.
func AppendFrame(b []byte, f *Frame) ([]byte, error) {
	orig := b
	b = appendOp(append(b, `{"op":`...), f.Op)
	b = appendStringField(b, `,"id":`, f.ID)
	b = appendIntField(b, `,"version":`, int64(f.Version))
	b = appendStringField(b, `,"client":`, f.Client)
	b = appendStringField(b, `,"server":`, f.Server)
	b = appendIntField(b, `,"max_frame":`, int64(f.MaxFrame))
	b = appendStringField(b, `,"agent":`, f.Agent)
	b = appendIntField(b, `,"window":`, int64(f.Window))
	if f.Durable {
		b = append(b, `,"durable":true`...)
	}
	b = appendIntField(b, `,"n":`, int64(f.N))
	b = appendStringField(b, `,"topic":`, f.Topic)
	var err error
	if f.Message != nil {
		b = append(b, `,"message":`...)
		if b, err = f.Message.AppendJSON(b); err != nil {
			return orig, err
		}
	}
	b = appendStringField(b, `,"message_id":`, f.MessageID)
	b = appendIntField(b, `,"timeout_ms":`, f.TimeoutMS)
	b = appendStringField(b, `,"reason":`, f.Reason)
	b = appendStringField(b, `,"sender":`, f.Sender)
	b = appendStringField(b, `,"recipient":`, f.Recipient)
	b = appendStringField(b, `,"type":`, f.Type)
	b = appendIntField(b, `,"limit":`, int64(f.Limit))
	if f.Seq != 0 {
		b = strconv.AppendUint(append(b, `,"seq":`...), f.Seq, 10)
	}
	b = appendStringField(b, `,"to":`, f.To)
	b = appendStringField(b, `,"code":`, f.Code)
	b = appendStringField(b, `,"error":`, f.Error)
	if len(f.Stats) > 0 {
		if b, err = codec.AppendFormatted(append(b, `,"stats":`...), f.Stats); err != nil {
			return orig, fmt.Errorf("protocol: stats are not JSON: %w", err)
		}
	}
	if len(f.Letters) > 0 {
		b = append(b, `,"letters":[`...)
		for i := range f.Letters {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = appendLetter(b, &f.Letters[i]); err != nil {
				return orig, err
			}
		}
		b = append(b, ']')
	}
	if len(f.Messages) > 0 {
		b = append(b, `,"messages":[`...)
		for i, m := range f.Messages {
			if i > 0 {
				b = append(b, ',')
			}
			if m == nil {
				b = append(b, "null"...)
			} else if b, err = m.AppendJSON(b); err != nil {
				return orig, err
			}
		}
		b = append(b, ']')
	}
	if len(f.Topics) > 0 {
		b = append(b, `,"topics":[`...)
		for i := range f.Topics {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendTopic(b, &f.Topics[i])
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// appendTopic appends the JSON form of t to b (subscribers null when nil,
// as encoding/json writes a nil slice).
func appendTopic(b []byte, t *TopicInfo) []byte {
	b = codec.AppendString(append(b, `{"topic":`...), t.Topic)
	b = append(b, `,"subscribers":`...)
	if t.Subscribers == nil {
		return append(b, "null}"...)
	}
	b = append(b, '[')
	for i, s := range t.Subscribers {
		if i > 0 {
			b = append(b, ',')
		}
		b = codec.AppendString(b, s)
	}
	return append(b, "]}"...)
}

// appendLetter appends the JSON form of l to b: its fields in the order of
// Letter's, those tagged omitempty left out when zero.
func appendLetter(b []byte, l *Letter) ([]byte, error) {
	b = strconv.AppendUint(append(b, `{"seq":`...), l.Seq, 10)
	b = codec.AppendString(append(b, `,"reason":`...), l.Reason)
	b = appendStringField(b, `,"error":`, l.Error)
	b = appendStringField(b, `,"agent":`, l.Agent)
	b = append(b, `,"time":"`...)
	var err error
	if b, err = l.Time.AppendText(b); err != nil { // RFC 3339 with nanoseconds, as encoding/json writes it
		return b, fmt.Errorf("protocol: letter %d: %w", l.Seq, err)
	}
	b = append(b, '"')
	b = appendIntField(b, `,"attempts":`, int64(l.Attempts))
	b = appendIntField(b, `,"replays":`, int64(l.Replays))
	if l.Message != nil {
		if b, err = l.Message.AppendJSON(append(b, `,"message":`...)); err != nil {
			return b, err
		}
	}
	b = appendStringField(b, `,"value":`, l.Value)
	return append(b, '}'), nil
}

// appendOp appends op as a JSON string: a known op (which needs no
// escape) as it is, any other through codec.AppendString.
func appendOp(b []byte, op string) []byte {
	switch op {
	case OpHello, OpRegister, OpUnregister, OpSend, OpPublish, OpSubscribe, OpUnsubscribe, OpRequest, OpRespond,
		OpAck, OpNack, OpStats, OpDeadLetters, OpReplay, OpHistory, OpPing, OpCredit, OpSync,
		OpTopics, OpDeadLetter, OpPurgeDeadLetters, OpSubscribers,
		OpWelcome, OpOK, OpError, OpPong, OpResponse, OpDeliver:
		b = append(b, '"')
		b = append(b, op...)
		return append(b, '"')
	}
	return codec.AppendString(b, op)
}

// appendStringField appends key and s, unless s is empty (omitempty).
func appendStringField(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return codec.AppendString(append(b, key...), s)
}

// appendIntField appends key and n, unless n is 0 (omitempty).
func appendIntField(b []byte, key string, n int64) []byte {
	if n == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), n, 10)
}

// Buffer is a frame encoded into a buffer taken from a pool: the encoding
// side of a connection (the daemon's, the client's) writes frames at a rate
// where a fresh buffer for each would be most of its garbage.
type Buffer struct {
	B []byte // the encoded frame
}

// maxPooled is the largest buffer the pool keeps: a rare large frame's
// buffer is left to the collector rather than held for small ones.
const maxPooled = 64 << 10

var buffers = sync.Pool{New: func() any { return &Buffer{B: make([]byte, 0, 1024)} }}

// EncodeBuffer encodes f (see Encode) into a pooled Buffer. Call Release
// once the frame is no longer needed (transport.Conn.Send copies or writes
// a frame before it returns). On error it returns nil.
func EncodeBuffer(f *Frame) (*Buffer, error) {
	b := buffers.Get().(*Buffer)
	var err error
	if b.B, err = AppendFrame(b.B[:0], f); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

// Release gives b back to the pool; b must not be used afterwards. It is a
// no-op on nil.
func (b *Buffer) Release() {
	if b == nil || cap(b.B) > maxPooled {
		return
	}
	b.B = b.B[:0]
	buffers.Put(b)
}
