package transport

import (
	"context"
	"sync"
	"time"
)

// aLongTimeAgo is a deadline in the past: setting it makes blocked I/O
// return at once with os.ErrDeadlineExceeded.
var aLongTimeAgo = time.Unix(1, 0)

// ctxDeadline lets a context interrupt blocking I/O without a goroutine
// of its own: when the context ends, context.AfterFunc moves the I/O
// deadline (set) into the past. Calls to arm and disarm must not overlap
// (the owner serialises them); a generation number makes a late AfterFunc
// of an earlier arm harmless.
//
// watch and release keep one context watched across several I/O calls, so
// that a connection used with the same context again and again (the usual
// case: the context of the connection's owner) registers with it once
// instead of once per call. They are owner-serialised too, and must not be
// mixed with arm and disarm on the same ctxDeadline.
type ctxDeadline struct {
	set func(time.Time) error

	mu  sync.Mutex
	gen uint64

	// Owned by the caller of watch and release.
	done <-chan struct{} // the Done channel of the context watched
	stop func() bool     // its arm's result; nil if nothing is watched
}

// watch makes ctx the context that interrupts I/O: if another context is
// watched it is released first (see release). Contexts with the same Done
// channel end together, so they count as the same. A context that can
// never end is not watched.
func (d *ctxDeadline) watch(ctx context.Context) {
	done := ctx.Done()
	if done == d.done {
		return
	}
	d.release()
	if done != nil {
		d.done, d.stop = done, d.arm(ctx)
	}
}

// release stops watching the context watch registered, if any, and clears
// the deadline if that context has ended (it may have moved it). Call it
// once I/O with that context is over for good, so that a long-lived
// context does not keep the registration.
func (d *ctxDeadline) release() {
	stop := d.stop
	d.done, d.stop = nil, nil
	d.disarm(stop)
}

// arm starts watching ctx. It returns nil when ctx can never end;
// otherwise pass the result to disarm once the I/O is over.
func (d *ctxDeadline) arm(ctx context.Context) (stop func() bool) {
	if ctx.Done() == nil {
		return nil
	}
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	return context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			_ = d.set(aLongTimeAgo)
		}
	})
}

// disarm stops watching and, if the context has ended (the deadline may
// have moved), clears the deadline for the next I/O.
func (d *ctxDeadline) disarm(stop func() bool) {
	if stop == nil || stop() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	_ = d.set(time.Time{})
}
