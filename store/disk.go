package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the store's file in its data directory.
const FileName = "agentbus.db"

// Defaults of Options.
const (
	DefaultQueue = 4096
	// maxGroup bounds the requests written in one transaction.
	maxGroup = 1024
	// lockTimeout is how long Open waits for another process's lock.
	lockTimeout = time.Second
)

// Options configure Open.
type Options struct {
	// Policy says when a Commit returns (default Batch).
	Policy Policy
	// MaxBytes bounds the keys and values held (0: no bound). A Commit
	// that would pass it returns ErrFull.
	MaxBytes int64
	// OnError is told when a submitted group could not be written (an I/O
	// error); nil ignores it. It is called on the store's goroutine and
	// must not block or call the store.
	OnError func(error)
	// Queue bounds the groups waiting to be written (default 4096);
	// Commit and Submit wait while it is full.
	Queue int
	// LockTimeout is how long Open waits for another process to let go of
	// the store (default 1 s), before it returns ErrLocked.
	LockTimeout time.Duration
}

// Disk is a Store in one bbolt file in a data directory. It is safe for
// concurrent use; one goroutine, started by Open and stopped by Close,
// writes every group.
type Disk struct {
	path     string
	db       *bolt.DB
	policy   Policy
	max      int64
	onErr    func(error)
	lockWait time.Duration
	size     atomic.Int64

	mu     sync.RWMutex // held shared to queue a request, exclusively to close
	closed bool
	reqs   chan *request
	done   chan struct{} // closed once the writer has returned
}

var _ Store = (*Disk)(nil)

// request is one group of ops; done is nil for a submitted one.
type request struct {
	ops  []Op
	done chan error
	err  error
}

// Open opens (or creates) the store in dir, creating dir with mode 0700 and
// its file with mode 0600 (and making them so if they are open to others),
// and checks every record. It returns an error wrapping ErrPermissions if
// dir or the file is open to others and belongs to another user (or cannot
// be changed), or dir is not a directory,
// ErrLocked if another process has it open, ErrCorrupt (naming the file) if
// the file or a record in it is damaged or truncated, ErrInvalidOp for a bad
// policy, or the I/O error. It never panics on a damaged file.
func Open(dir string, o Options) (*Disk, error) {
	if o.Policy > None {
		return nil, fmt.Errorf("%w: policy %d", ErrInvalidOp, o.Policy)
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = lockTimeout
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("store: data directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrPermissions, dir)
	}
	if err := private(dir, fi, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	created := false
	switch fi, err := os.Stat(path); {
	case errors.Is(err, os.ErrNotExist):
		created = true
	case err != nil:
		return nil, fmt.Errorf("store: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrCorrupt, path)
	default:
		if err := private(path, fi, 0o600); err != nil {
			return nil, err
		}
	}
	d := &Disk{path: path, policy: o.Policy, max: o.MaxBytes, onErr: o.OnError, lockWait: o.LockTimeout,
		reqs: make(chan *request, o.Queue), done: make(chan struct{})}
	if err := d.open(); err != nil {
		return nil, err
	}
	if created {
		if err := syncDir(dir); err != nil {
			_ = d.db.Close()
			return nil, err
		}
	}
	go d.writer()
	return d, nil
}

// private makes path (described by fi) accessible to its owner only, with
// mode perm, if it is open to others: it must then be owned by this
// process's user, or it is refused with ErrPermissions.
func private(path string, fi os.FileInfo, perm os.FileMode) error {
	if fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%w: %s has mode %04o and belongs to uid %d, not to this user", ErrPermissions, path,
			fi.Mode().Perm(), st.Uid)
	}
	if err := os.Chmod(path, perm); err != nil {
		return fmt.Errorf("%w: %s has mode %04o and cannot be made %04o: %w", ErrPermissions, path,
			fi.Mode().Perm(), perm, err)
	}
	return nil
}

// open opens the bbolt file and checks every record, turning a panic or a
// memory fault on a damaged file into ErrCorrupt.
func (d *Disk) open() (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if d.db != nil {
				_ = d.db.Close()
			}
			err = fmt.Errorf("%w: %s: %v; move it aside to start empty, or restore a backup", ErrCorrupt, d.path, r)
		}
	}()
	db, err := bolt.Open(d.path, 0o600, &bolt.Options{Timeout: d.lockWait, NoSync: d.policy == None,
		FreelistType: bolt.FreelistMapType})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s is locked", ErrLocked, d.path)
	case errors.As(err, new(*fs.PathError)):
		return fmt.Errorf("store: open %s: %w", d.path, err) // permissions, no room: not the file's fault
	case err != nil:
		// bbolt's own findings: invalid or mismatched meta pages, a file
		// too small for them.
		return fmt.Errorf("%w: %s: %w; move it aside to start empty, or restore a backup", ErrCorrupt, d.path, err)
	}
	d.db = db
	var size int64
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if _, ok := unseal(v); !ok {
					return d.corrupt(string(name), k)
				}
				size += int64(len(k) + len(v) - 4)
				return nil
			})
		})
	})
	if err != nil {
		_ = db.Close()
		return err
	}
	d.size.Store(size)
	return nil
}

func (d *Disk) corrupt(bucket string, key []byte) error {
	return fmt.Errorf("%w: %s: record %q of bucket %q fails its checksum; move the file aside to start empty, or restore a backup",
		ErrCorrupt, d.path, key, bucket)
}

// Path returns the store's file.
func (d *Disk) Path() string { return d.path }

// Policy returns the store's commit policy.
func (d *Disk) Policy() Policy { return d.policy }

// Commit applies ops atomically and returns once they are committed; see
// Store.
func (d *Disk) Commit(ops ...Op) error {
	if err := validate(ops); err != nil {
		return err
	}
	r := &request{ops: ops, done: make(chan error, 1)}
	if err := d.queue(r); err != nil {
		return err
	}
	return <-r.done
}

// Submit queues ops for the next group; see Store.
func (d *Disk) Submit(ops ...Op) error {
	if err := validate(ops); err != nil {
		return err
	}
	return d.queue(&request{ops: ops})
}

func (d *Disk) queue(r *request) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	d.reqs <- r
	return nil
}

// writer writes groups until Close: each time, the first request waiting
// and those queued behind it (under Always, up to the first Commit), in one
// transaction.
func (d *Disk) writer() {
	defer close(d.done)
	group := make([]*request, 0, maxGroup)
	for r := range d.reqs {
		group = append(group[:0], r)
		for d.policy != Always || r.done == nil {
			if len(group) == maxGroup {
				break
			}
			var ok bool
			select {
			case r, ok = <-d.reqs:
			default:
			}
			if !ok {
				break
			}
			group = append(group, r)
		}
		d.write(group)
		clear(group)
	}
}

// write commits group in one transaction and tells each request.
func (d *Disk) write(group []*request) {
	size := d.size.Load()
	err := d.db.Update(func(tx *bolt.Tx) error {
		for _, r := range group {
			grow, err := d.delta(tx, r.ops)
			if err != nil {
				return err
			}
			if r.done != nil && d.max > 0 && grow > 0 && size+grow > d.max {
				r.err = fmt.Errorf("%w: %d bytes held, %d more would pass the bound of %d", ErrFull, size, grow, d.max)
				continue
			}
			r.err = nil
			for _, op := range r.ops {
				b, err := tx.CreateBucketIfNotExists([]byte(op.Bucket))
				if err != nil {
					return err
				}
				if op.Value == nil {
					err = b.Delete(op.Key)
				} else {
					b.FillPercent = 0.8 // keys mostly grow (time-ordered IDs, sequence numbers)
					err = b.Put(op.Key, seal(op.Value))
				}
				if err != nil {
					return err
				}
			}
			size += grow
		}
		return nil
	})
	if err == nil {
		d.size.Store(size)
	} else {
		err = fmt.Errorf("store: write %s: %w", d.path, err)
	}
	for _, r := range group {
		switch {
		case r.done != nil && err != nil:
			r.done <- err
		case r.done != nil:
			r.done <- r.err
		case err != nil && d.onErr != nil:
			d.onErr(err)
		}
	}
}

// delta is how much ops would grow the store, as tx has it.
func (d *Disk) delta(tx *bolt.Tx, ops []Op) (int64, error) {
	var grow int64
	var seen map[string]int64 // keys seen earlier in ops: their size after them (-1: absent)
	if len(ops) > 1 {
		seen = make(map[string]int64, len(ops))
	}
	for _, op := range ops {
		k := op.Bucket + "\x00" + string(op.Key)
		cur, ok := seen[k]
		if !ok {
			cur = -1
			if b := tx.Bucket([]byte(op.Bucket)); b != nil {
				if v := b.Get(op.Key); v != nil {
					cur = int64(len(op.Key) + len(v) - 4)
				}
			}
		}
		next := int64(-1)
		if op.Value != nil {
			next = op.size()
		}
		grow += max(next, 0) - max(cur, 0)
		if seen != nil {
			seen[k] = next
		}
	}
	return grow, nil
}

// Scan calls fn with bucket's records in key order; see Store.
func (d *Disk) Scan(bucket string, fn func(key, value []byte) error) error {
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			val, ok := unseal(v)
			if !ok {
				return d.corrupt(bucket, k)
			}
			return fn(k, val)
		})
	})
}

// Size returns the bytes of keys and values held.
func (d *Disk) Size() int64 { return d.size.Load() }

// Close writes what is queued, stops the writer and closes the file.
func (d *Disk) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.closed = true
	close(d.reqs)
	d.mu.Unlock()
	<-d.done
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", d.path, err)
	}
	return nil
}

// syncDir makes a new file's directory entry durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: sync %s: %w", dir, err)
	}
	return nil
}
