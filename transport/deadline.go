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
type ctxDeadline struct {
	set func(time.Time) error

	mu  sync.Mutex
	gen uint64
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
