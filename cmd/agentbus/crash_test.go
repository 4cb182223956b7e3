package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
	"github.com/descartes/agentbus/store"
)

// crashLedger is what the crash test knows: the messages whose Send (or
// Publish) returned OK, and every handling of a message by a durable agent.
type crashLedger struct {
	mu       sync.Mutex
	ok       map[string]string // message ID -> the durable agent it is for
	handled  map[string]int    // message ID -> handlings not marked redelivered
	marked   map[string]int    // message ID -> handlings marked redelivered
	lettered map[string]string // message IDs seen in the dead-letter queue -> reason
}

func (l *crashLedger) accepted(id, agent string) {
	l.mu.Lock()
	l.ok[id] = agent
	l.mu.Unlock()
}

func (l *crashLedger) handle(m *agentbus.Message) {
	l.mu.Lock()
	if m.Redelivered {
		l.marked[m.ID]++
	} else {
		l.handled[m.ID]++
	}
	l.mu.Unlock()
}

// missing returns the IDs of ids that were neither handled nor
// dead-lettered.
func (l *crashLedger) missing(ids []string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, id := range ids {
		if _, dead := l.lettered[id]; l.handled[id]+l.marked[id] == 0 && !dead {
			out = append(out, id)
		}
	}
	return out
}

func (l *crashLedger) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.ok))
	for id := range l.ok {
		ids = append(ids, id)
	}
	return ids
}

// TestCrashRecovery runs the daemon as a real process and kills it with
// SIGKILL at random moments while several clients send to durable agents
// (direct messages, some requiring acks that the handler refuses at times,
// and publishes to a durable subscription). After each restart, every
// message whose Send returned OK before the kill is handled or
// dead-lettered; no message is handled twice without the second handling
// marked redelivered. The commit policy alternates between batch and
// always. AGENTBUS_CRASH_ROUNDS sets the number of kills (default 20),
// AGENTBUS_CRASH_SEED the seed (printed either way).
func TestCrashRecovery(t *testing.T) {
	rounds := 20
	if s := os.Getenv("AGENTBUS_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "AGENTBUS_CRASH_ROUNDS")
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("AGENTBUS_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "AGENTBUS_CRASH_SEED")
		seed = n
	}
	t.Logf("crash test: %d rounds, seed %d (AGENTBUS_CRASH_SEED=%d to repeat)", rounds, seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	dir := t.TempDir()
	socket := filepath.Join(shortDir(t), "bus.sock")
	start := func(policy string) *proc {
		p := startProc(t, socket, "--data-dir", dir, "--commit", policy, "--max-attempts", "6",
			"--drain-timeout", "1s")
		up := assert.Eventually(t, func() bool {
			c, err := net.Dial("unix", socket) // the killed one's socket is stale: this waits for the new one
			if err == nil {
				_ = c.Close()
			}
			return err == nil
		}, 20*time.Second, 5*time.Millisecond)
		require.True(t, up, "daemon did not start: %s", p.log())
		return p
	}
	d := start("batch")

	l := &crashLedger{ok: map[string]string{}, handled: map[string]int{}, marked: map[string]int{},
		lettered: map[string]string{}}
	dial := func(name string) *client.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var c *client.Client
		require.Eventually(t, func() bool {
			var err error
			c, err = client.Dial(ctx, socket, client.Options{Name: name, MinBackoff: 5 * time.Millisecond,
				MaxBackoff: 50 * time.Millisecond})
			return err == nil
		}, 20*time.Second, 10*time.Millisecond)
		return c
	}
	// The consumers: a worker for direct messages, a reviewer subscribed
	// to jobs.>. A requires_ack message is refused now and then (the bus
	// redelivers it, maybe across a crash).
	var refuseMu sync.Mutex
	refuse := rand.New(rand.NewPCG(seed+1, seed+1))
	handler := agentbus.HandlerFunc(func(_ context.Context, m *agentbus.Message) error {
		if m.RequiresAck {
			refuseMu.Lock()
			no := refuse.IntN(4) == 0
			refuseMu.Unlock()
			if no {
				return errors.New("not now")
			}
		}
		l.handle(m)
		return nil
	})
	consumers := []*client.Client{dial("worker"), dial("reviewer")}
	ctx := context.Background()
	require.NoError(t, consumers[0].Register(ctx, "worker", handler, client.Durable()))
	require.NoError(t, consumers[1].Register(ctx, "reviewer", handler, client.Durable()))
	require.NoError(t, consumers[1].Subscribe(ctx, "reviewer", "jobs.>"))

	// The senders: each sends until stopped; a Send that fails (the daemon
	// died under it) is retried with the same message, so its ID is
	// accepted once. A publish that fails is not retried (publishes are not
	// deduplicated).
	stop := make(chan struct{})
	var senders sync.WaitGroup
	for s := range 3 {
		c := dial(fmt.Sprintf("sender-%d", s))
		consumers = append(consumers, c)
		srng := rand.New(rand.NewPCG(seed+2+uint64(s), 0))
		senders.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if i%5 == 4 {
					m := agentbus.NewMessage(agentbus.TypePublish, "", []byte(strconv.Itoa(i))).WithTopic("jobs.build")
					sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					if id, err := c.PublishMessage(sctx, m); err == nil {
						l.accepted(id, "reviewer")
					}
					cancel()
					continue
				}
				m := agentbus.NewMessage(agentbus.TypeDirect, "", []byte(strconv.Itoa(i))).WithRecipient("worker").
					WithPriority(uint8(srng.IntN(101)))
				if srng.IntN(3) == 0 {
					m.RequireAck()
				}
				for {
					sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					id, err := c.Send(sctx, m.Clone())
					cancel()
					if err == nil {
						l.accepted(id, "worker")
						break
					}
					select {
					case <-stop:
						return
					default:
					}
				}
			}
		})
	}
	t.Cleanup(func() {
		for _, c := range consumers {
			_ = c.Close()
		}
	})

	// settled waits until every message of ids is handled or dead-lettered.
	settled := func(ids []string, what string) {
		t.Helper()
		lc := consumers[2]
		require.Eventually(t, func() bool {
			if len(l.missing(ids)) == 0 {
				return true
			}
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			letters, err := lc.DeadLetters(qctx, client.LetterFilter{})
			if err != nil {
				return false
			}
			l.mu.Lock()
			for _, lt := range letters {
				if lt.Message != nil {
					l.lettered[lt.Message.ID] = lt.Reason
				}
			}
			l.mu.Unlock()
			return len(l.missing(ids)) == 0
		}, 30*time.Second, 20*time.Millisecond, "%s: %d of %d accepted messages neither handled nor dead-lettered: %v",
			what, len(l.missing(ids)), len(ids), l.missing(ids))
	}

	for round := 1; round <= rounds; round++ {
		delay := time.Duration(30+rng.IntN(250)) * time.Millisecond
		policy := []string{"batch", "always"}[round%2]
		time.Sleep(delay) // the workload runs; the kill comes at a random moment of it
		before := l.snapshot()
		require.NoError(t, d.cmd.Process.Signal(syscall.SIGKILL))
		err := <-d.done
		d.done <- err
		t.Logf("round %d: killed after %v with %d messages accepted so far; restarting with --commit %s",
			round, delay, len(before), policy)
		d = start(policy)
		settled(before, fmt.Sprintf("round %d (seed %d)", round, seed))
	}
	close(stop)
	senders.Wait()
	all := l.snapshot()
	settled(all, "at the end")
	require.NoError(t, d.stop(t), d.log())

	l.mu.Lock()
	defer l.mu.Unlock()
	var dups int
	for id, n := range l.handled {
		if n > 1 {
			t.Errorf("message %s handled %d times without the redelivered mark", id, n)
		}
		if n+l.marked[id] > 1 {
			dups++
		}
	}
	reasons := map[string]int{}
	for _, r := range l.lettered {
		reasons[r]++
	}
	t.Logf("crash test: %d messages accepted, %d handled, %d handled again (marked redelivered), dead-lettered: %v",
		len(all), len(l.handled)+len(l.marked), dups, reasons)
	require.Positive(t, len(all))
}

// TestDamagedStoreRefused: a daemon whose store file is damaged refuses to
// start, with an error that names the file.
func TestDamagedStoreRefused(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, "--data-dir", dir)
	require.NoError(t, d.stop(t))
	path := filepath.Join(dir, store.FileName)
	_, err := os.Stat(path)
	require.NoError(t, err, "the daemon made its store")
	require.NoError(t, os.WriteFile(path, []byte("not a store at all, but long enough to look like one?"), 0o600))
	var errb bytes.Buffer
	code := run([]string{"serve", "--socket", filepath.Join(shortDir(t), "s.sock"), "--data-dir", dir},
		strings.NewReader(""), io.Discard, &errb)
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errb.String(), "corrupt")
	assert.Contains(t, errb.String(), path)
}
