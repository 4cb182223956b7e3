// Package protosys creates the protoactor actor systems agentbus runs on,
// with a process registry sized for a bus rather than protoactor's default.
//
// protoactor-go's NewActorSystem gives every system a registry of 1,024
// concurrent maps of 32 shards each: 32,768 Go maps and their locks, about
// 2.8 MB of pointers that the garbage collector marks on every cycle, for
// as long as the system lives. A bus keeps its agents' names in its own
// registry and a PID caches its process, so protoactor's registry is
// looked up rarely (a PID's first use, spawn and stop). With a fresh
// message per Send (BenchmarkSend/bus-new), marking that registry was most
// of the collector's work: see docs/performance.md, "A fresh message".
package protosys

import (
	"github.com/asynkron/protoactor-go/actor"
	cmap "github.com/orcaman/concurrent-map"
)

// Buckets is the number of concurrent maps (of 32 shards each) in the
// registry of a system New returns: 1,024 shards, as many locks as
// protoactor's default has maps, for a registry of about 90 KB.
const Buckets = 32

// New returns a new actor system configured by opts, with a registry of
// Buckets maps holding what protoactor registered while creating it. It
// does not block.
func New(opts ...actor.ConfigOption) *actor.ActorSystem {
	sys := actor.NewActorSystem(opts...)
	small := &actor.SliceMap{LocalPIDs: make([]cmap.ConcurrentMap, Buckets)}
	for i := range small.LocalPIDs {
		small.LocalPIDs[i] = cmap.New()
	}
	// Nothing else holds the new system yet: no process is added or
	// looked up while the registries are swapped.
	for _, bucket := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		// IterCb, not IterBuffered: that starts a goroutine per shard,
		// 32,768 of them here.
		bucket.IterCb(func(id string, p any) { small.GetBucket(id).Set(id, p) })
	}
	sys.ProcessRegistry.LocalPIDs = small
	return sys
}
