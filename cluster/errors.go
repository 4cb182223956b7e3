package cluster

import "errors"

// Sentinel errors; the agentbus package re-exports them.
var (
	// ErrInvalidConfig: a Config field has an unusable value.
	ErrInvalidConfig = errors.New("agentbus: invalid cluster config")
	// ErrNodeUnreachable: the node a message was bound for failed (it was
	// declared dead) before it confirmed the message.
	ErrNodeUnreachable = errors.New("agentbus: node unreachable")
	// ErrNodeLeft: the node a message was bound for left the cluster
	// before it confirmed the message.
	ErrNodeLeft = errors.New("agentbus: node left")
	// ErrNameConflict: two nodes held one agent name (each side of a
	// partition took it, or a stalled node's name was taken meanwhile);
	// the agent that lost it was stopped (see docs/cluster.md).
	ErrNameConflict = errors.New("agentbus: agent name conflict between nodes")
	// ErrNameTaken: another node holds (or is taking) the name.
	ErrNameTaken = errors.New("agentbus: agent name taken on another node")
	// ErrIncompatible: a peer speaks another wire version, or belongs to
	// another cluster; it is refused.
	ErrIncompatible = errors.New("agentbus: incompatible cluster peer")
	// ErrJoin: no seed could be joined.
	ErrJoin = errors.New("agentbus: cluster join failed")
	// ErrClosed: the node has shut down.
	ErrClosed = errors.New("agentbus: cluster node closed")
)
