package protosys_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus/internal/protosys"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSystem(t *testing.T) *actor.ActorSystem {
	sys := protosys.New(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	t.Cleanup(sys.Shutdown)
	return sys
}

// TestRegistryKeepsWhatProtoactorRegistered checks that the small registry
// holds the processes protoactor registered while it created the system.
func TestRegistryKeepsWhatProtoactorRegistered(t *testing.T) {
	sys := newSystem(t)
	require.Len(t, sys.ProcessRegistry.LocalPIDs.LocalPIDs, protosys.Buckets)
	for _, id := range []string{"eventstream", "deadletter"} {
		p, ok := sys.ProcessRegistry.GetLocal(id)
		require.True(t, ok, id)
		require.NotNil(t, p)
	}
	n := 0
	for _, b := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		n += b.Count()
	}
	plain := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	defer plain.Shutdown()
	m := 0
	for _, b := range plain.ProcessRegistry.LocalPIDs.LocalPIDs {
		m += b.Count()
	}
	assert.Equal(t, m, n, "the same processes as protoactor's own registry")
}

type echo struct{}

func (echo) Receive(c actor.Context) {
	if s, ok := c.Message().(string); ok {
		c.Respond(s)
	}
}

// TestActorsOnTheSmallRegistry spawns, asks and stops many named actors.
func TestActorsOnTheSmallRegistry(t *testing.T) {
	sys := newSystem(t)
	const n = 2000
	pids := make([]*actor.PID, n)
	for i := range pids {
		pid, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return echo{} }), fmt.Sprintf("a%d", i))
		require.NoError(t, err)
		pids[i] = pid
	}
	_, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return echo{} }), "a7")
	require.ErrorIs(t, err, actor.ErrNameExists)
	for i, pid := range pids {
		// A fresh PID looks its process up in the registry.
		v, err := sys.Root.RequestFuture(actor.NewPID(pid.Address, pid.Id), fmt.Sprint(i), 5*time.Second).Result()
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint(i), v)
	}
	for _, pid := range pids {
		require.NoError(t, sys.Root.StopFuture(pid).Wait())
	}
	for _, pid := range pids[:10] {
		_, ok := sys.ProcessRegistry.GetLocal(pid.Id)
		assert.False(t, ok, "%s is gone", pid.Id)
	}
}
