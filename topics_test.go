package agentbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/deadletter"
	"github.com/descartes/agentbus/routing"
)

func spawnRecorders(t *testing.T, bus *agentbus.Bus, names ...string) map[string]*recorder {
	t.Helper()
	recs := make(map[string]*recorder, len(names))
	for _, n := range names {
		recs[n] = newRecorder(64)
		_, err := bus.Spawn(n, recs[n])
		require.NoError(t, err)
	}
	return recs
}

func TestPublishSubscribe(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	recs := spawnRecorders(t, bus, "monitor", "coder-watch", "other")
	require.NoError(t, bus.Subscribe("agents.>", "monitor"))
	require.NoError(t, bus.Subscribe("agents.coder.*", "coder-watch"))
	require.NoError(t, bus.Subscribe("agents.coder.*", "coder-watch"), "subscribing twice is a no-op")
	require.NoError(t, bus.Subscribe("agents.*.done", "monitor"), "overlapping patterns still deliver once")

	assert.Equal(t, []string{"coder-watch", "monitor"}, bus.Subscribers("agents.coder.done"))
	assert.Equal(t, []string{"monitor"}, bus.Subscribers("agents.>"))
	assert.Equal(t, []string{"agents.*.done", "agents.>", "agents.coder.*"}, bus.Topics())

	id, err := bus.Publish(t.Context(), "agents.coder.done", "coder", []byte(`{"ok":true}`))
	require.NoError(t, err)
	for _, n := range []string{"monitor", "coder-watch"} {
		m := recs[n].next(t)
		assert.Equal(t, id, m.ID)
		assert.Equal(t, "agents.coder.done", m.Topic)
	}
	_, err = bus.Publish(t.Context(), "agents.planner.started", "planner", []byte(`1`))
	require.NoError(t, err)
	assert.Equal(t, "agents.planner.started", recs["monitor"].next(t).Topic)

	// Unsubscribe, then only the remaining pattern delivers.
	require.NoError(t, bus.Unsubscribe("agents.coder.*", "coder-watch"))
	require.ErrorIs(t, bus.Unsubscribe("agents.coder.*", "coder-watch"), agentbus.ErrNotSubscribed)
	_, err = bus.Publish(t.Context(), "agents.coder.done", "coder", []byte(`2`))
	require.NoError(t, err)
	assert.Equal(t, `2`, string(recs["monitor"].next(t).Payload))
	for n, r := range recs {
		select {
		case m := <-r.got:
			t.Fatalf("%s got unexpected %s on %s", n, m.Payload, m.Topic)
		default:
		}
	}
}

func TestSubscribeThroughMessages(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	recs := spawnRecorders(t, bus, "a")
	_, err := bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeSubscribe, "a", nil).WithTopic("news.*"))
	require.NoError(t, err)
	_, err = bus.Publish(t.Context(), "news.today", "x", []byte(`1`))
	require.NoError(t, err)
	recs["a"].next(t)
	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeUnsubscribe, "a", nil).WithTopic("news.*"))
	require.NoError(t, err)
	assert.Empty(t, bus.Subscribers("news.today"))
	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeSubscribe, "", nil).WithTopic("news.*"))
	require.ErrorIs(t, err, agentbus.ErrInvalidMessage, "a subscribe needs a sender")
}

func TestPubSubBadInput(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	spawnRecorders(t, bus, "a")
	tests := []struct {
		name    string
		do      func() error
		wantErr error
	}{
		{"empty token", func() error { return bus.Subscribe("a..b", "a") }, agentbus.ErrInvalidSubject},
		{"> not last", func() error { return bus.Subscribe("a.>.b", "a") }, agentbus.ErrInvalidSubject},
		{"space", func() error { return bus.Subscribe("a b", "a") }, agentbus.ErrInvalidSubject},
		{"unknown agent", func() error { return bus.Subscribe("a.b", "ghost") }, agentbus.ErrNoRecipient},
		{"unsubscribe what is not subscribed", func() error { return bus.Unsubscribe("a.b", "a") }, agentbus.ErrNotSubscribed},
		{"publish on a pattern", func() error { _, err := bus.Publish(t.Context(), "a.*", "x", []byte(`1`)); return err }, agentbus.ErrInvalidSubject},
		{"publish without topic", func() error {
			_, err := bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypePublish, "x", []byte(`1`)))
			return err
		}, agentbus.ErrInvalidMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.ErrorIs(t, tt.do(), tt.wantErr)
		})
	}
	assert.Empty(t, bus.Topics())
	assert.Zero(t, bus.DeadLetters().Len())
}

func TestPublishWithoutSubscribersIsDeadLettered(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	id, err := bus.Publish(t.Context(), "nobody.listens", "x", []byte(`1`))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.NoSubscribers})) == 1
	}, 5*time.Second, time.Millisecond)
	l := bus.DeadLetters().List(deadletter.Filter{Topic: "nobody.listens"})
	require.Len(t, l, 1)
	assert.Equal(t, id, l[0].Message.ID)
}

// Publishers racing a topic actor that retires (it found no subscriber)
// never see an error: each message is dead-lettered as no_subscribers, once.
func TestPublishRacingRetiringTopic(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	const publishers, each = 4, 250
	var wg sync.WaitGroup
	for range publishers {
		wg.Go(func() {
			for i := range each {
				_, err := bus.Publish(t.Context(), "nobody.listens", "x", []byte(strconv.Itoa(i)))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		return bus.DeadLetters().Counts()[deadletter.NoSubscribers] == publishers*each && bus.Accounting().Balanced()
	}, 10*time.Second, time.Millisecond)
}

func TestSlowSubscriberDoesNotBlockOthers(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	slow := newGate(newRecorder(8))
	_, err := bus.Spawn("slow", slow, agentbus.WithMailboxSize(2))
	require.NoError(t, err)
	fast := newRecorder(16)
	_, err = bus.Spawn("fast", fast)
	require.NoError(t, err)
	require.NoError(t, bus.Subscribe("jobs", "slow"))
	require.NoError(t, bus.Subscribe("jobs", "fast"))

	defer close(slow.Open)
	_, err = bus.Publish(t.Context(), "jobs", "boss", []byte(`"first"`))
	require.NoError(t, err)
	<-slow.Entered // "slow" is now stuck in its handler
	fast.next(t)
	const n = 8
	for i := range n {
		_, err := bus.Publish(t.Context(), "jobs", "boss", []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	for range n {
		fast.next(t) // all arrive although "slow" is stuck
	}
	// "slow" queues two; the rest overflowed to dead letters.
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.MailboxFull, Agent: "slow"})) == n-2
	}, 5*time.Second, time.Millisecond)
}

func TestStoppedAgentLeavesItsTopics(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	spawnRecorders(t, bus, "a", "b")
	require.NoError(t, bus.Subscribe("x.*", "a"))
	require.NoError(t, bus.Subscribe("x.y", "a"))
	require.NoError(t, bus.Subscribe("x.y", "b"))
	require.NoError(t, bus.Stop(t.Context(), "a"))
	assert.Equal(t, []string{"x.y"}, bus.Topics())
	assert.Equal(t, []string{"b"}, bus.Subscribers("x.y"))
}

func TestPriorityAndTTLHoldPerDelivery(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	rec := newRecorder(16)
	g := newGate(rec)
	_, err := bus.Spawn("sub", g)
	require.NoError(t, err)
	require.NoError(t, bus.Subscribe("t", "sub"))
	_, err = bus.Publish(t.Context(), "t", "p", []byte(`"hold"`))
	require.NoError(t, err)
	<-g.Entered
	send := func(body string, prio uint8, ttl time.Duration) *agentbus.Message {
		m := agentbus.NewMessage(agentbus.TypePublish, "p", []byte(body)).WithTopic("t").WithPriority(prio).WithTTL(ttl)
		_, err := bus.Send(t.Context(), m)
		require.NoError(t, err)
		return m
	}
	send(`"low"`, 5, 0)
	send(`"high"`, 99, 0)
	stale := send(`"stale"`, 100, 50*time.Millisecond)
	// Each publish passes through the topic actor into the subscriber's
	// mailbox, where the priority order applies.
	require.Eventually(t, func() bool { return bus.Backpressure().Pending() == 3 }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return time.Now().After(stale.Deadline()) }, 5*time.Second, time.Millisecond)
	close(g.Open)
	assert.Equal(t, `"high"`, string(rec.next(t).Payload))
	assert.Equal(t, `"low"`, string(rec.next(t).Payload))
	require.Len(t, bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.Expired}), 1)
}

func TestPublishFromHandler(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	recs := spawnRecorders(t, bus, "watcher")
	require.NoError(t, bus.Subscribe("progress.*", "watcher"))
	_, err := bus.Spawn("worker", agentbus.HandlerFunc(func(ctx context.Context, m *agentbus.Message) error {
		_, err := bus.Send(ctx, agentbus.NewMessage(agentbus.TypePublish, "", m.Payload).WithTopic("progress.worker"))
		return err
	}))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), direct("worker", `"50%"`))
	require.NoError(t, err)
	m := recs["watcher"].next(t)
	assert.Equal(t, "worker", m.Sender, "the bus stamps the publishing agent")
	assert.Equal(t, `"50%"`, string(m.Payload))
}

func TestTopicActorsAreBounded(t *testing.T) {
	bus := newBus(t, agentbus.Config{MaxTopics: 2})
	recs := spawnRecorders(t, bus, "a")
	require.NoError(t, bus.Subscribe("t.>", "a"))
	for i := range 20 { // 20 distinct subjects through at most 2 topic actors
		_, err := bus.Publish(t.Context(), fmt.Sprintf("t.%d", i), "x", []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
	got := map[string]bool{}
	for range 20 {
		got[string(recs["a"].next(t).Payload)] = true
	}
	assert.Len(t, got, 20)
	assert.Zero(t, bus.DeadLetters().Len())
}

func TestRouting(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	recs := spawnRecorders(t, bus, "worker")
	var mu sync.Mutex
	seen := map[string][]string{}
	note := func(name string) agentbus.HandlerFunc {
		return func(_ context.Context, m *agentbus.Message) error {
			mu.Lock()
			defer mu.Unlock()
			seen[name] = append(seen[name], string(m.Payload))
			return nil
		}
	}
	r := bus.Router()
	require.NoError(t, r.RegisterHandler("audit", note("audit")))
	require.NoError(t, r.RegisterHandler("alerts", note("alerts")))
	require.ErrorIs(t, r.RegisterHandler("audit", note("x")), routing.ErrHandlerExists)
	require.ErrorIs(t, r.RegisterHandler("bad name", note("x")), agentbus.ErrInvalidAgent)
	require.ErrorIs(t, r.AddRule(routing.Rule{ID: "r0", Handler: "nobody", Enabled: true}), routing.ErrUnknownHandler)
	require.ErrorIs(t, r.AddRule(routing.Rule{ID: "", Handler: "audit"}), routing.ErrInvalidRule)
	require.ErrorIs(t, r.AddRule(routing.Rule{ID: "r9", Handler: "audit", Topic: "a..b"}), routing.ErrInvalidRule)

	require.NoError(t, r.AddRule(routing.Rule{ID: "everything", Handler: "audit", Priority: 1, Enabled: true}))
	require.NoError(t, r.AddRule(routing.Rule{ID: "urgent-errors", Handler: "alerts", Type: agentbus.TypeError, Priority: 10, Enabled: true}))
	require.NoError(t, r.AddRule(routing.Rule{ID: "also-audit", Handler: "audit", Recipient: "worker", Enabled: true}))
	require.ErrorIs(t, r.AddRule(routing.Rule{ID: "everything", Handler: "audit"}), routing.ErrRuleExists)
	assert.Equal(t, []string{"urgent-errors", "everything", "also-audit"}, ruleIDs(r.Rules()))

	_, err := bus.Send(t.Context(), direct("worker", `"task"`))
	require.NoError(t, err)
	_, err = bus.Send(t.Context(), agentbus.NewMessage(agentbus.TypeError, "tool", []byte(`"disk full"`)).WithRecipient("worker"))
	require.NoError(t, err)
	recs["worker"].next(t) // routing is in addition to delivery
	recs["worker"].next(t)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["audit"]) == 2 && len(seen["alerts"]) == 1
	}, 5*time.Second, time.Millisecond)
	mu.Lock()
	assert.Equal(t, []string{`"task"`, `"disk full"`}, seen["audit"], "two matching rules, one handler: once")
	assert.Equal(t, []string{`"disk full"`}, seen["alerts"])
	mu.Unlock()

	require.NoError(t, r.EnableRule("everything", false))
	require.NoError(t, r.RemoveRule("also-audit"))
	require.ErrorIs(t, r.RemoveRule("also-audit"), routing.ErrRuleNotFound)
	_, err = bus.Send(t.Context(), direct("worker", `"quiet"`))
	require.NoError(t, err)
	recs["worker"].next(t)
	stats := r.Stats()
	require.Len(t, stats, 2)
	assert.EqualValues(t, 2, stats[1].Handled) // audit
}

func ruleIDs(rules []routing.Rule) []string {
	var ids []string
	for _, r := range rules {
		ids = append(ids, r.ID)
	}
	return ids
}

func TestRoutingIsolatesHandlerFailures(t *testing.T) {
	bus := newBus(t, agentbus.Config{})
	spawnRecorders(t, bus, "w")
	ok := newRecorder(16)
	slowGate := newGate(newRecorder(16))
	r := bus.Router()
	require.NoError(t, r.RegisterHandler("panicky", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { panic("boom") })))
	require.NoError(t, r.RegisterHandler("erring", agentbus.HandlerFunc(func(context.Context, *agentbus.Message) error { return errors.New("nope") })))
	require.NoError(t, r.RegisterHandler("slow", slowGate))
	require.NoError(t, r.RegisterHandler("ok", ok))
	for _, h := range []string{"panicky", "erring", "slow", "ok"} {
		require.NoError(t, r.AddRule(routing.Rule{ID: h, Handler: h, Enabled: true}))
	}
	for i := range 3 {
		_, err := bus.Send(t.Context(), direct("w", fmt.Sprint(i)))
		require.NoError(t, err)
	}
	for range 3 {
		ok.next(t) // unaffected by the panicking, failing and stuck handlers
	}
	require.Eventually(t, func() bool {
		return len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerPanic, Agent: "panicky"})) == 3 &&
			len(bus.DeadLetters().List(deadletter.Filter{Reason: deadletter.HandlerError, Agent: "erring"})) == 3
	}, 5*time.Second, time.Millisecond)
	close(slowGate.Open)
	require.Eventually(t, func() bool {
		for _, s := range r.Stats() {
			if s.Name == "slow" && s.Handled == 3 {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond)
}
