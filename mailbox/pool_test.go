package mailbox_test

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/mailbox"
)

func TestPoolRunsEveryRunWithoutWaitingForOthers(t *testing.T) {
	p := mailbox.NewPool(10, 4)
	defer p.Close()
	release := make(chan struct{})
	var wg sync.WaitGroup
	const blocked = 8 // more than maxIdle: runs beyond the waiting goroutines get new ones
	for range blocked {
		wg.Add(1)
		p.Schedule(func() { defer wg.Done(); <-release })
	}
	done := make(chan struct{})
	p.Schedule(func() { close(done) }) // not behind the blocked runs
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a run waited for other runs' handlers")
	}
	close(release)
	wg.Wait()
	require.Equal(t, 10, p.Throughput())
}

// TestPoolReusesAWaitingGoroutine checks that a run goes to a goroutine
// that finished an earlier run, once one waits: it compares goroutine IDs.
// (Idle counts a goroutine a moment before it waits, so a run scheduled in
// that moment gets a new goroutine, which is allowed: hence Eventually.)
func TestPoolReusesAWaitingGoroutine(t *testing.T) {
	p := mailbox.NewPool(10, 4)
	defer p.Close()
	seen := map[uint64]bool{}
	runOn := func() uint64 {
		id := make(chan uint64)
		p.Schedule(func() { id <- goroutineID() })
		got := <-id
		require.NotZero(t, got, "goroutine ID not parsed")
		return got
	}
	seen[runOn()] = true
	require.Eventually(t, func() bool {
		id := runOn()
		reused := seen[id]
		seen[id] = true
		return reused
	}, 5*time.Second, time.Millisecond, "no run went to a goroutine that had run one before")
	require.Eventually(t, func() bool { return p.Idle() >= 1 }, 5*time.Second, time.Millisecond)
}

// goroutineID returns the calling goroutine's ID, from its stack trace's
// first line ("goroutine 18 [running]:"), or 0 if that does not parse.
func goroutineID() uint64 {
	buf := make([]byte, 64)
	f := strings.Fields(string(buf[:runtime.Stack(buf, false)]))
	if len(f) < 2 {
		return 0
	}
	id, _ := strconv.ParseUint(f[1], 10, 64)
	return id
}

func TestPoolBoundsWaitingGoroutines(t *testing.T) {
	p := mailbox.NewPool(10, 2)
	defer p.Close()
	release := make(chan struct{})
	var started, wg sync.WaitGroup
	for range 6 {
		started.Add(1)
		wg.Add(1)
		p.Schedule(func() { defer wg.Done(); started.Done(); <-release })
	}
	started.Wait()
	close(release)
	wg.Wait()
	require.Eventually(t, func() bool { return p.Idle() == 2 }, 5*time.Second, time.Millisecond)
	require.Never(t, func() bool { return p.Idle() > 2 }, 50*time.Millisecond, time.Millisecond)
}

func TestPoolCloseStopsWaitingGoroutines(t *testing.T) {
	p := mailbox.NewPool(10, 4)
	ran := make(chan struct{}, 3)
	for range 3 {
		p.Schedule(func() { ran <- struct{}{} })
	}
	for range 3 {
		<-ran
	}
	require.Eventually(t, func() bool { return p.Idle() > 0 }, 5*time.Second, time.Millisecond)
	p.Close()
	require.Zero(t, p.Idle())
	// A run after Close still runs, on a goroutine that ends with it
	// (goleak checks that none is left when the package's tests end).
	p.Schedule(func() { ran <- struct{}{} })
	<-ran
	require.Eventually(t, func() bool { return p.Idle() == 0 }, 5*time.Second, time.Millisecond)
}
