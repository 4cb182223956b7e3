// Package store keeps the records that make agentbus durable: the messages
// queued for durable agents, their pending redeliveries, the dead-letter
// queue, durable agents and subscriptions, and the message IDs remembered for
// idempotent publish. It owns nothing of the bus's logic: a Store is a small
// map of buckets of byte keys to byte values, written in atomic groups.
//
// # Implementations
//
// NewMemory keeps records in memory: the default, for durable agents that
// must outlive their connection but not the process. Open keeps them on disk
// in one bbolt file (a B+tree with copy-on-write pages, so a crash never
// leaves a half-written group), in a data directory of mode 0700 whose file
// is 0600; the choice of bbolt over pebble, and the figures behind it, are
// in docs/durability.md.
//
// # Commit policies
//
// Commit returns once its group is committed under the store's Policy:
//
//   - Batch (the default): concurrent commits are written together in one
//     transaction and one fsync (group commit). A commit waits at most for
//     the fsync in progress and its own. Nothing that Commit returned for is
//     lost by a process crash, an OS crash or a power loss.
//   - Always: each commit is its own transaction and fsync. The same
//     guarantee, at one fsync per commit.
//   - None: written to the file without fsync. Survives a process crash
//     (SIGKILL); an OS crash or power loss can lose recent commits or
//     damage the file (found at the next Open).
//
// Submit queues a group without waiting; it is committed with the next
// group, in order, and a failure is reported to Options.OnError. The bus
// submits what may be lost without losing a message: settlements, which at
// worst cause a redelivery.
//
// # Bounds and damage
//
// A store holds at most MaxBytes bytes of keys and values: a Commit that
// would grow it further returns ErrFull and applies nothing (Submit is never
// refused for size: what it writes belongs to work already accepted). Every
// value carries a CRC-32C, so a damaged record is found when it is read; a
// damaged or truncated file makes Open return an error wrapping ErrCorrupt
// that names the file, never a panic.
//
// # Conformance
//
// storetest.Run checks every operation of a Store; both implementations pass
// it.
package store
