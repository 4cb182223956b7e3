package deadletter

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/descartes/agentbus/actors"
)

// Query asks the dead-letter actor for the letters matching Filter; it
// responds with a *Letters.
type Query struct {
	Filter Filter
}

// Letters is the dead-letter actor's response to a Query.
type Letters struct {
	Letters []Letter
}

// Actor returns the props of the dead-letter actor: the protoactor face of q,
// for code that works with PIDs. It stores every *Letter it receives; a bare
// *actors.Message is stored with reason NoRecipient (the sender could not
// deliver it); any other value is stored as a foreign value with reason
// UnsupportedMessage. A *Query is answered with the matching *Letters. The
// actor never blocks, and what it stores is bounded by q.
func Actor(q *Queue) *actor.Props {
	return actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *Letter:
			q.Add(*m)
		case *Query:
			c.Respond(&Letters{Letters: q.List(m.Filter)})
		case *actors.Message:
			q.Add(Letter{Message: m, Reason: NoRecipient, Err: "agentbus: sent to the dead-letter actor"})
		case actor.SystemMessage, actor.AutoReceiveMessage:
		default:
			q.Add(Letter{Value: m, Reason: UnsupportedMessage, Err: fmt.Sprintf("agentbus: %T sent to the dead-letter actor", m)})
		}
	})
}
