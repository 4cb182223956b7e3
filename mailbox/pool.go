package mailbox

import (
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// Pool is an actor.Dispatcher that runs each scheduled mailbox on a goroutine
// of its own, as protoactor's default dispatcher does, but hands the run to a
// goroutine that finished an earlier one and waits for the next, when there
// is one. Such a goroutine keeps the stack it grew; a new goroutine starts
// small and grows its stack again on every wake of an agent, copying it each
// time it doubles (a quarter of a remote request's CPU on the receiving
// node, see docs/cluster.md). At most maxIdle goroutines wait; a run that
// finds none waiting starts a new goroutine, so no mailbox ever waits for
// another's handler.
//
// It is safe for concurrent use. Close stops the goroutines that wait; one
// that is running a mailbox ends when that run ends, as under protoactor's
// dispatcher.
type Pool struct {
	throughput int
	maxIdle    int32
	work       chan func()   // unbuffered: a send succeeds only to a waiting goroutine
	stop       chan struct{} // closed by Close
	idleDone   chan struct{} // gets a value when no goroutine waits after Close
	idle       atomic.Int32  // goroutines waiting, or about to
	closed     atomic.Bool
}

var _ actor.Dispatcher = (*Pool)(nil)

// NewPool returns a Pool whose mailboxes yield every throughput messages
// (see actor.Dispatcher) and that keeps at most maxIdle goroutines waiting.
func NewPool(throughput, maxIdle int) *Pool {
	return &Pool{throughput: throughput, maxIdle: int32(max(maxIdle, 0)), work: make(chan func()),
		stop: make(chan struct{}), idleDone: make(chan struct{}, 1)}
}

// Throughput implements actor.Dispatcher.
func (p *Pool) Throughput() int { return p.throughput }

// Schedule implements actor.Dispatcher: fn runs on a waiting goroutine, or
// on a new one. It does not block.
func (p *Pool) Schedule(fn func()) {
	select {
	case p.work <- fn:
	default:
		go p.run(fn)
	}
}

// run runs fn, then waits for the next run, unless maxIdle goroutines wait
// already or the pool is closed.
func (p *Pool) run(fn func()) {
	for {
		fn()
		if !p.enter() {
			return
		}
		select {
		case fn = <-p.work:
			p.leave()
		case <-p.stop:
			p.leave()
			return
		}
	}
}

// enter counts a goroutine in among the waiting ones and reports whether it
// may wait: not if maxIdle wait already (so Idle never exceeds maxIdle), not
// once the pool is closed. It counts before it checks closed, as Close
// stores closed before it reads the count, so either Close waits for this
// goroutine or this goroutine sees that the pool is closed.
func (p *Pool) enter() bool {
	for {
		n := p.idle.Load()
		if n >= p.maxIdle {
			return false
		}
		if p.idle.CompareAndSwap(n, n+1) {
			break
		}
	}
	if p.closed.Load() {
		p.leave()
		return false
	}
	return true
}

// leave counts a goroutine out of the waiting ones.
func (p *Pool) leave() {
	if p.idle.Add(-1) == 0 && p.closed.Load() {
		select {
		case p.idleDone <- struct{}{}:
		default:
		}
	}
}

// Idle returns how many goroutines wait for a run. It does not block.
func (p *Pool) Idle() int { return int(p.idle.Load()) }

// Close stops the goroutines that wait and waits for them to end (they end
// at once). Runs scheduled afterwards get goroutines that end with them.
// Call it once.
func (p *Pool) Close() {
	p.closed.Store(true)
	close(p.stop)
	if p.idle.Load() > 0 {
		<-p.idleDone
	}
}
