package cluster

// inflight holds a link's frames sent and not yet confirmed, by sequence
// number. Sequence numbers rise by one per frame and confirmations come
// mostly in order, so a ring indexed by the low bits of the sequence finds a
// frame without hashing: a Go map here, with its inserts, deletes and the
// probing over deleted slots, was a tenth of a streaming sender's CPU
// (BenchmarkClusterSend). A frame still unconfirmed when a later sequence
// number needs its cell (it waits in a full mailbox on the receiving node,
// say) moves to a map of older frames. The link's window bounds both: at
// most Window frames are in flight, so older never holds more than Window
// entries. It is not safe for concurrent use; the link's mutex guards it.
type inflight struct {
	ring  []*outbound          // cell seq&mask: the frame of that seq, an older one, or nil
	mask  uint64               // len(ring)-1
	older map[uint64]*outbound // frames displaced from ring by a later seq
	n     int                  // frames held
}

// maxRing caps the ring's cells; a larger window spills into older.
const maxRing = 1 << 16

// newInflight returns an empty window for up to window frames: a ring of
// the next power of two at or above window, at most maxRing cells.
func newInflight(window int) inflight {
	size := 1
	for size < window && size < maxRing {
		size <<= 1
	}
	return inflight{ring: make([]*outbound, size), mask: uint64(size - 1)}
}

// add holds o under its sequence number, which is above every one held.
func (w *inflight) add(o *outbound) {
	i := o.seq & w.mask
	if old := w.ring[i]; old != nil {
		if w.older == nil {
			w.older = make(map[uint64]*outbound)
		}
		w.older[old.seq] = old
	}
	w.ring[i] = o
	w.n++
}

// take removes and returns the frame of seq, or nil if none is held (it was
// confirmed before, or never sent on this link).
func (w *inflight) take(seq uint64) *outbound {
	i := seq & w.mask
	if o := w.ring[i]; o != nil && o.seq == seq {
		w.ring[i] = nil
		w.n--
		return o
	}
	if o, ok := w.older[seq]; ok {
		delete(w.older, seq)
		if len(w.older) == 0 {
			w.older = nil // a map does not shrink: let a burst's go
		}
		w.n--
		return o
	}
	return nil
}

// each calls f for every frame held, in no particular order.
func (w *inflight) each(f func(*outbound)) {
	if w.n == 0 {
		return
	}
	for _, o := range w.ring {
		if o != nil {
			f(o)
		}
	}
	for _, o := range w.older {
		f(o)
	}
}

// clear removes every frame and returns them, in no particular order.
func (w *inflight) clear() []*outbound {
	all := make([]*outbound, 0, w.n)
	w.each(func(o *outbound) { all = append(all, o) })
	clear(w.ring)
	w.older, w.n = nil, 0
	return all
}

// len returns the number of frames held.
func (w *inflight) len() int { return w.n }
