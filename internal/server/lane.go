package server

import (
	"fmt"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/internal/protocol"
)

// DefaultMaxQueuedOps is the default of Config.MaxQueuedOps.
const DefaultMaxQueuedOps = 1024

// ordered is an operation that waits in order in its connection's lane: a
// send, publish, respond, request or sync. The reader checks what it can
// (the frame, the sender) and hands the rest to the lane, so that a send
// waiting for room in a full mailbox holds up only the ordered operations
// behind it, never a ping, a credit or an ack.
type ordered struct {
	op        string
	id        string // the frame's id; "" for a quiet send of version 2
	m         *agentbus.Message
	timeoutMS int64 // request
}

// order queues o for the lane, waiting while the lane is full (then the
// connection is not read until it has room: a client cannot queue more
// than Config.MaxQueuedOps operations in the daemon). It returns an error
// only when the connection ends first.
//
// A request or a sync that finds the lane idle (nothing queued or being
// carried out before it) is carried out at once by the reader, saving a
// hand-off: neither waits for anything (a request is handed to a request
// goroutine), so the reader is never held up by it.
func (c *conn) order(o ordered) error {
	if (o.op == protocol.OpRequest || o.op == protocol.OpSync) && c.laneN.Load() == 0 {
		c.carryOut(o, c.more)
		return nil
	}
	c.laneN.Add(1)
	select {
	case c.lane <- o:
		return nil
	default:
	}
	select {
	case c.lane <- o:
		return nil
	case <-c.ctx.Done():
		c.laneN.Add(-1)
		return fmt.Errorf("agentbus daemon: %w", agentbus.ErrTransportClosed)
	}
}

// laneLoop carries out the connection's ordered operations, one at a time
// and in the order they came, until the connection ends; what is left in
// the lane then was never carried out, and the client, whose connection
// is gone, learns nothing of it (the Go client reports it as
// ErrDisconnected).
func (c *conn) laneLoop() {
	defer c.wg.Done()
	for {
		select {
		case o := <-c.lane:
			c.carryOut(o, len(c.lane) > 0)
			c.laneN.Add(-1)
		case <-c.ctx.Done():
			return
		}
	}
}

// carryOut runs one ordered operation and answers it. With more (more
// operations wait), its answers are left to the writer, so that they go
// out together (see emit).
func (c *conn) carryOut(o ordered, more bool) {
	switch o.op {
	case protocol.OpSync:
		c.emit(encode(&protocol.Frame{Op: protocol.OpOK, ID: o.id}), more)
		return
	case protocol.OpRequest:
		if err := c.request(o.id, o.timeoutMS, o.m); err != nil {
			c.emit(encode(protocol.ErrorFrame(o.id, err)), more)
		}
		return
	}
	m := o.m
	id, err := c.s.bus.Send(c.ctx, m)
	if o.op == protocol.OpRespond {
		// The responding agent is free again, whether or not the
		// requester still waited.
		c.settle(m.Sender, func(w *waiting) bool { return w.respond && w.id == m.RequestID }, nil)
	}
	if err != nil {
		ef := protocol.ErrorFrame(o.id, err)
		ef.MessageID = m.ID
		c.emit(encode(ef), more)
		return
	}
	if o.id != "" || c.version < protocol.QuietVersion {
		c.emit(encode(&protocol.Frame{Op: protocol.OpOK, ID: o.id, MessageID: id}), more)
	}
}
