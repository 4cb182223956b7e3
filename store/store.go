package store

import (
	"errors"
	"fmt"
	"hash/crc32"
)

// Errors. Every error a Store returns wraps one of these or an I/O error.
var (
	// ErrFull: a Commit would grow the store beyond its MaxBytes; nothing
	// of it was applied.
	ErrFull = errors.New("store: full")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt: a record or the file is damaged. The error names the
	// file (and the record, when one is).
	ErrCorrupt = errors.New("store: corrupt")
	// ErrInvalidOp: an operation with an empty bucket name or key, or a
	// bucket name longer than MaxBucketName.
	ErrInvalidOp = errors.New("store: invalid operation")
	// ErrPermissions: the data directory or file is open to other users
	// and belongs to another user, or the data directory is not one.
	ErrPermissions = errors.New("store: unsafe permissions")
	// ErrLocked: another process has the store open.
	ErrLocked = errors.New("store: in use by another process")
)

// MaxBucketName is the longest bucket name, in bytes.
const MaxBucketName = 64

// Op is one write: a put of Value under Key in Bucket, or, when Value is
// nil, the deletion of Key (deleting a missing key is not an error).
type Op struct {
	Bucket string
	Key    []byte
	Value  []byte
}

// Put returns the Op that stores value under key in bucket. A nil value is
// stored as an empty one.
func Put(bucket string, key, value []byte) Op {
	if value == nil {
		value = []byte{}
	}
	return Op{Bucket: bucket, Key: key, Value: value}
}

// Delete returns the Op that removes key from bucket.
func Delete(bucket string, key []byte) Op { return Op{Bucket: bucket, Key: key} }

// size is what op adds to the store when it puts (its key and value).
func (op Op) size() int64 { return int64(len(op.Key) + len(op.Value)) }

func (op Op) validate() error {
	switch {
	case op.Bucket == "":
		return fmt.Errorf("%w: empty bucket name", ErrInvalidOp)
	case len(op.Bucket) > MaxBucketName:
		return fmt.Errorf("%w: bucket name longer than %d bytes", ErrInvalidOp, MaxBucketName)
	case len(op.Key) == 0:
		return fmt.Errorf("%w: empty key in bucket %q", ErrInvalidOp, op.Bucket)
	}
	return nil
}

func validate(ops []Op) error {
	for _, op := range ops {
		if err := op.validate(); err != nil {
			return err
		}
	}
	return nil
}

// Store is a durable map of buckets of keys to values. Implementations are
// safe for concurrent use.
type Store interface {
	// Commit applies ops atomically, in order, and returns once they are
	// committed under the store's policy (see the package doc), after
	// every group submitted or committed before it. It blocks for that
	// long (an fsync, at most two). It returns ErrFull (nothing applied)
	// if the puts would grow the store past its bound, ErrInvalidOp,
	// ErrClosed, or the I/O error that failed the write (nothing applied).
	Commit(ops ...Op) error
	// Submit queues ops to be applied atomically with the next group, in
	// order, without waiting; an I/O failure is reported to the store's
	// error callback. It never returns ErrFull. It blocks only while its
	// bounded queue is full. It returns ErrInvalidOp or ErrClosed.
	Submit(ops ...Op) error
	// Scan calls fn with every record of bucket in key order, until fn
	// returns an error, which Scan returns. A missing bucket has no
	// records. key and value are valid only during the call. Writes during
	// a Scan are not seen by it. It returns ErrCorrupt for a damaged
	// record, ErrClosed.
	Scan(bucket string, fn func(key, value []byte) error) error
	// Size returns the bytes of keys and values held. It does not block.
	Size() int64
	// Close commits what was submitted and closes the store. Later calls
	// return ErrClosed; so does every other method after it.
	Close() error
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// seal returns value with its CRC-32C in front, as the disk store keeps it.
func seal(value []byte) []byte {
	out := make([]byte, 4+len(value))
	c := crc32.Checksum(value, castagnoli)
	out[0], out[1], out[2], out[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	copy(out[4:], value)
	return out
}

// unseal checks and strips the CRC-32C of a stored value.
func unseal(stored []byte) ([]byte, bool) {
	if len(stored) < 4 {
		return nil, false
	}
	c := uint32(stored[0])<<24 | uint32(stored[1])<<16 | uint32(stored[2])<<8 | uint32(stored[3])
	v := stored[4:]
	return v, crc32.Checksum(v, castagnoli) == c
}
