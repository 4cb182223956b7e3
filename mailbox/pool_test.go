package mailbox_test

import (
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

func TestPoolReusesAWaitingGoroutine(t *testing.T) {
	p := mailbox.NewPool(10, 4)
	defer p.Close()
	ran := make(chan struct{})
	p.Schedule(func() { close(ran) })
	<-ran
	require.Eventually(t, func() bool { return p.Idle() == 1 }, 5*time.Second, time.Millisecond)
	idle := make(chan int)
	p.Schedule(func() { idle <- p.Idle() })
	require.Equal(t, 0, <-idle, "the run took the waiting goroutine")
	require.Eventually(t, func() bool { return p.Idle() == 1 }, 5*time.Second, time.Millisecond)
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
