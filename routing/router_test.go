package routing_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/routing"
	"github.com/descartes/agentbus/topics"
)

// waitFor bounds every wait for something an actor does; the tests never
// sleep, so it only matters when something is broken.
const waitFor = 10 * time.Second

// resume resumes a handler agent after a panic, as the bus's handler runner
// does: the router isolates failures per message.
var resume = actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.ResumeDirective })

// testHooks counts the hook calls that matter to the router's handlers. It
// never blocks.
type testHooks struct {
	failed, panicked, foreign atomic.Int64
}

// Failed counts the failure and does not escalate it.
func (h *testHooks) Failed(*actors.Agent, *actors.Message, error) any {
	h.failed.Add(1)
	return nil
}

func (h *testHooks) Panicked(*actors.Agent, *actors.Message, *actors.HandlerPanicError) {
	h.panicked.Add(1)
}

func (h *testHooks) Foreign(*actors.Agent, any, *actor.PID) { h.foreign.Add(1) }
func (h *testHooks) Started(*actors.Agent, int)             {}
func (h *testHooks) Handled(*actors.Agent, *actors.Message) {}
func (h *testHooks) Stopped(a *actors.Agent)                { a.Mailbox().Close(mailbox.ErrStopped) }
func (h *testHooks) Asked(*actors.Agent, *actors.Message)   {}

// testRunner starts handler agents the way the bus's handlerRunner does:
// a bounded mailbox each, spawned as "$handler:<name>" under a resuming
// supervisor.
type testRunner struct {
	system   *actor.ActorSystem
	capacity int
	sizes    map[string]int // capacities that differ from capacity, by handler
	hooks    *testHooks
	err      error // returned instead of starting an agent, when set

	mu     sync.Mutex
	agents []*actors.Agent
}

func (r *testRunner) RunHandler(name string, h actors.Handler) (*actors.Agent, error) {
	if r.err != nil {
		return nil, r.err
	}
	size := r.capacity
	if n, ok := r.sizes[name]; ok {
		size = n
	}
	mb := mailbox.New(mailbox.Config{Capacity: size})
	a := actors.NewAgent(context.Background(), name, h, mb, r.hooks)
	pid, err := r.system.Root.SpawnNamed(a.Props(resume), "$handler:"+name)
	if err != nil {
		return nil, fmt.Errorf("start handler %q: %w", name, err)
	}
	a.SetPID(pid)
	r.mu.Lock()
	r.agents = append(r.agents, a)
	r.mu.Unlock()
	return a, nil
}

// undelivered is one call of the router's Undeliverable.
type undelivered struct {
	msg     *actors.Message
	handler string
	err     error
}

// routerEnv is a router in an actor system of its own, with handlers that
// record what they handle.
type routerEnv struct {
	system  *actor.ActorSystem
	router  *routing.Router
	runner  *testRunner
	hooks   *testHooks
	undeliv chan undelivered
	gate    chan struct{} // closed when the test ends, to release blocked handlers

	mu   sync.Mutex
	seen map[string]chan *actors.Message // by handler
}

type envConfig struct {
	capacity        int            // of the router's and each handler's mailbox; default 64
	shared          *mailbox.Limit // the router mailbox's shared limit
	handlerCapacity int            // overrides capacity for handlers
	handlerSizes    map[string]int // override both for the handlers named
}

// newRouterEnv starts a router. Everything it starts is stopped when the
// test ends, blocked handlers first released.
func newRouterEnv(t *testing.T, cfg envConfig) *routerEnv {
	t.Helper()
	if cfg.capacity == 0 {
		cfg.capacity = 64
	}
	if cfg.handlerCapacity == 0 {
		cfg.handlerCapacity = cfg.capacity
	}
	system := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		// A dead letter starts a protoactor goroutine that lives for this
		// interval (1s by default), longer than goleak waits for it.
		actor.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	env := &routerEnv{
		system:  system,
		hooks:   &testHooks{},
		undeliv: make(chan undelivered, 4096),
		gate:    make(chan struct{}),
		seen:    make(map[string]chan *actors.Message),
	}
	env.runner = &testRunner{system: system, capacity: cfg.handlerCapacity, sizes: cfg.handlerSizes, hooks: env.hooks}
	r, err := routing.New(system, cfg.capacity, cfg.shared, env.runner, func(m *actors.Message, handler string, err error) {
		env.undeliv <- undelivered{m, handler, err}
	})
	require.NoError(t, err)
	env.router = r
	t.Cleanup(func() {
		close(env.gate)
		r.Stop(system, errors.New("test over"))
		assert.NoError(t, system.Root.StopFuture(r.PID()).Wait())
		env.runner.mu.Lock()
		agents := env.runner.agents
		env.runner.mu.Unlock()
		for _, a := range agents {
			assert.NoError(t, system.Root.StopFuture(a.PID()).Wait())
			<-a.Done()
		}
		system.Shutdown()
	})
	return env
}

// handler registers a handler named name that records each message and then
// runs do, if it is not nil.
func (env *routerEnv) handler(t *testing.T, name string, do actors.HandlerFunc) {
	t.Helper()
	seen := make(chan *actors.Message, 4096)
	env.mu.Lock()
	env.seen[name] = seen
	env.mu.Unlock()
	require.NoError(t, env.router.RegisterHandler(name, actors.HandlerFunc(func(ctx context.Context, m *actors.Message) error {
		seen <- m
		if do == nil {
			return nil
		}
		return do(ctx, m)
	})))
}

// next returns the next message handler name handles.
func (env *routerEnv) next(t *testing.T, name string) *actors.Message {
	t.Helper()
	env.mu.Lock()
	seen := env.seen[name]
	env.mu.Unlock()
	select {
	case m := <-seen:
		return m
	case <-time.After(waitFor):
		require.FailNow(t, "handler got nothing", "handler %q", name)
		return nil
	}
}

// flush routes a marker message to every recorded handler, through rules of
// its own, and returns, by handler, what each handled before the marker.
// Messages reach a handler in the order they were routed, so once the
// marker arrives nothing routed earlier is still on its way.
func (env *routerEnv) flush(t *testing.T) map[string][]*actors.Message {
	t.Helper()
	env.mu.Lock()
	names := make([]string, 0, len(env.seen))
	for n := range env.seen {
		names = append(names, n)
	}
	env.mu.Unlock()
	for _, n := range names {
		err := env.router.AddRule(routing.Rule{ID: "flush:" + n, Recipient: "$flush", Handler: n, Enabled: true})
		if !errors.Is(err, routing.ErrRuleExists) {
			require.NoError(t, err)
		}
	}
	marker := actors.NewMessage(actors.TypeDirect, "test", nil).WithRecipient("$flush")
	require.NoError(t, env.router.Route(marker))
	out := make(map[string][]*actors.Message, len(names))
	for _, n := range names {
		for {
			m := env.next(t, n)
			if m == marker {
				break
			}
			out[n] = append(out[n], m)
		}
	}
	return out
}

// nextUndelivered returns the next Undeliverable call.
func (env *routerEnv) nextUndelivered(t *testing.T) undelivered {
	t.Helper()
	select {
	case u := <-env.undeliv:
		return u
	case <-time.After(waitFor):
		require.FailNow(t, "no Undeliverable call")
		return undelivered{}
	}
}

// suspend stops the router actor from taking messages from its mailbox
// until resume, as protoactor's supervision does: the mailbox serves system
// messages first, so nothing posted after suspend returns is delivered.
func (env *routerEnv) suspend() { env.router.Mailbox().PostSystemMessage(&actor.SuspendMailbox{}) }
func (env *routerEnv) resume()  { env.router.Mailbox().PostSystemMessage(&actor.ResumeMailbox{}) }

func msg(typ actors.MessageType, sender, recipient, topic string) *actors.Message {
	return actors.NewMessage(typ, sender, nil).WithRecipient(recipient).WithTopic(topic)
}

var nop = actors.HandlerFunc(func(context.Context, *actors.Message) error { return nil })

func TestRouterRegisterHandler(t *testing.T) {
	tests := []struct {
		name    string
		handler string
		h       actors.Handler
		wantErr error
	}{
		{name: "ok", handler: "audit", h: nop},
		{name: "another", handler: "billing", h: nop},
		{name: "duplicate", handler: "audit", h: nop, wantErr: routing.ErrHandlerExists},
		{name: "empty name", handler: "", h: nop, wantErr: actors.ErrInvalidAgent},
		{name: "reserved name", handler: "$router", h: nop, wantErr: actors.ErrInvalidAgent},
		{name: "slash", handler: "a/b", h: nop, wantErr: actors.ErrInvalidAgent},
		{name: "space", handler: "a b", h: nop, wantErr: actors.ErrInvalidAgent},
		{name: "too long", handler: strings.Repeat("x", actors.MaxNameLen+1), h: nop, wantErr: actors.ErrInvalidAgent},
		{name: "nil handler", handler: "nil", h: nil, wantErr: actors.ErrInvalidAgent},
		{name: "first letter sorts", handler: "Zeta", h: nop},
	}
	env := newRouterEnv(t, envConfig{}) // shared: the cases run in order
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.router.Handlers()
			err := env.router.RegisterHandler(tt.handler, tt.h)
			require.ErrorIs(t, err, tt.wantErr)
			if tt.wantErr != nil {
				assert.Equal(t, before, env.router.Handlers(), "a refused handler is not registered")
				return
			}
			assert.Contains(t, env.router.Handlers(), tt.handler)
		})
	}
	assert.Equal(t, []string{"Zeta", "audit", "billing"}, env.router.Handlers(), "sorted")

	t.Run("runner error", func(t *testing.T) {
		boom := errors.New("boom")
		env.runner.err = boom
		defer func() { env.runner.err = nil }()
		require.ErrorIs(t, env.router.RegisterHandler("late", nop), boom)
		assert.NotContains(t, env.router.Handlers(), "late")
	})
}

func TestRouterAddRule(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	env.handler(t, "h", nil)
	tests := []struct {
		name    string
		rule    routing.Rule
		wantErr []error
	}{
		{name: "ok", rule: routing.Rule{ID: "r1", Handler: "h", Topic: "a.*", Enabled: true}},
		{name: "disabled", rule: routing.Rule{ID: "r2", Handler: "h"}},
		{name: "unknown handler", rule: routing.Rule{ID: "r3", Handler: "nobody", Enabled: true}, wantErr: []error{routing.ErrUnknownHandler}},
		{name: "empty id", rule: routing.Rule{Handler: "h"}, wantErr: []error{routing.ErrInvalidRule}},
		{name: "empty handler", rule: routing.Rule{ID: "r4"}, wantErr: []error{routing.ErrInvalidRule}},
		{name: "bad topic", rule: routing.Rule{ID: "r5", Handler: "h", Topic: "a..b"}, wantErr: []error{routing.ErrInvalidRule, topics.ErrInvalidSubject}},
		{name: "bad type", rule: routing.Rule{ID: "r6", Handler: "h", Type: 200}, wantErr: []error{routing.ErrInvalidRule}},
		{name: "bad sender", rule: routing.Rule{ID: "r7", Handler: "h", Sender: "a b"}, wantErr: []error{routing.ErrInvalidRule}},
		{name: "duplicate id", rule: routing.Rule{ID: "r1", Handler: "h"}, wantErr: []error{routing.ErrRuleExists}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.router.Rules()
			err := env.router.AddRule(tt.rule)
			if len(tt.wantErr) == 0 {
				require.NoError(t, err)
				assert.Len(t, env.router.Rules(), len(before)+1)
				return
			}
			for _, want := range tt.wantErr {
				require.ErrorIs(t, err, want)
			}
			assert.Equal(t, before, env.router.Rules(), "a refused rule is not added")
		})
	}
	ids := make([]string, 0, 2)
	for _, r := range env.router.Rules() {
		ids = append(ids, r.ID)
	}
	assert.Equal(t, []string{"r1", "r2"}, ids)
}

func TestRouterActive(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	env.handler(t, "h", nil)
	r := env.router
	steps := []struct {
		name string
		do   func() error
		want bool
	}{
		{name: "no rules", do: func() error { return nil }, want: false},
		{name: "a disabled rule", do: func() error { return r.AddRule(routing.Rule{ID: "off", Handler: "h"}) }, want: false},
		{name: "an enabled rule", do: func() error { return r.AddRule(routing.Rule{ID: "on", Handler: "h", Enabled: true}) }, want: true},
		{name: "disable it", do: func() error { return r.EnableRule("on", false) }, want: false},
		{name: "enable the other", do: func() error { return r.EnableRule("off", true) }, want: true},
		{name: "enable it again", do: func() error { return r.EnableRule("off", true) }, want: true},
		{name: "remove a disabled rule", do: func() error { return r.RemoveRule("on") }, want: true},
		{name: "remove the enabled rule", do: func() error { return r.RemoveRule("off") }, want: false},
		{name: "a failed change", do: func() error {
			if err := r.AddRule(routing.Rule{ID: "x", Handler: "nobody", Enabled: true}); err == nil {
				return errors.New("AddRule accepted an unknown handler")
			}
			return nil
		}, want: false},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			require.NoError(t, s.do())
			assert.Equal(t, s.want, r.Active())
		})
	}
}

func TestRouterRuleNotFound(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	env.handler(t, "h", nil)
	require.NoError(t, env.router.AddRule(routing.Rule{ID: "r", Handler: "h", Enabled: true}))

	require.ErrorIs(t, env.router.RemoveRule("nope"), routing.ErrRuleNotFound)
	require.ErrorIs(t, env.router.EnableRule("nope", true), routing.ErrRuleNotFound)
	require.ErrorIs(t, env.router.EnableRule("nope", false), routing.ErrRuleNotFound)
	require.NoError(t, env.router.RemoveRule("r"))
	require.ErrorIs(t, env.router.RemoveRule("r"), routing.ErrRuleNotFound, "removed twice")
	require.ErrorIs(t, env.router.EnableRule("r", true), routing.ErrRuleNotFound, "enabled after removal")
	assert.Empty(t, env.router.Rules())
}

func TestRouterRouteInactive(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	env.handler(t, "h", nil)
	ignored := msg(actors.TypeDirect, "a", "b", "")

	require.NoError(t, env.router.Route(ignored), "no rules")
	assert.Zero(t, env.router.Mailbox().Len(), "nothing was queued")

	require.NoError(t, env.router.AddRule(routing.Rule{ID: "r", Handler: "h"}))
	require.NoError(t, env.router.Route(ignored), "only a disabled rule")
	assert.Zero(t, env.router.Mailbox().Len(), "nothing was queued")

	got := env.flush(t)
	assert.Empty(t, got["h"], "the handler saw none of the ignored messages")
}

func TestRouterDelivers(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	for _, h := range []string{"h1", "h2", "h3"} {
		env.handler(t, h, nil)
	}
	for _, rule := range []routing.Rule{
		{ID: "h1-topic", Topic: "a.*", Handler: "h1", Enabled: true},
		{ID: "h1-type", Type: actors.TypePublish, Handler: "h1", Enabled: true, Priority: 5},
		{ID: "h2-sender", Sender: "s", Handler: "h2", Enabled: true},
		{ID: "h3-recipient", Recipient: "r", Handler: "h3", Enabled: true},
		{ID: "h3-off", Handler: "h3"}, // disabled: would match everything
	} {
		require.NoError(t, env.router.AddRule(rule))
	}

	routes := []struct {
		name string
		msg  *actors.Message
		want []string // the handlers it reaches, each once
	}{
		{name: "two rules for h1 and one for h2", msg: msg(actors.TypePublish, "s", "", "a.b"), want: []string{"h1", "h2"}},
		{name: "h1 by topic", msg: msg(actors.TypeDirect, "x", "", "a.c"), want: []string{"h1"}},
		{name: "h1 by type", msg: msg(actors.TypePublish, "x", "", "z"), want: []string{"h1"}},
		{name: "h3 by recipient", msg: msg(actors.TypeDirect, "x", "r", ""), want: []string{"h3"}},
		{name: "all three", msg: msg(actors.TypePublish, "s", "r", "a.d"), want: []string{"h1", "h2", "h3"}},
		{name: "none", msg: msg(actors.TypeDirect, "x", "y", "b.c"), want: nil},
	}
	want := map[string][]*actors.Message{}
	for _, rt := range routes {
		require.NoError(t, env.router.Route(rt.msg), rt.name)
		for _, h := range rt.want {
			want[h] = append(want[h], rt.msg)
		}
	}
	got := env.flush(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		assert.Equal(t, want[h], got[h], "handler %s: each matching message once, in order", h)
	}
	assert.Empty(t, env.undeliv)

	// Toggling rules changes what is routed from the next message on.
	require.NoError(t, env.router.EnableRule("h2-sender", false))
	require.NoError(t, env.router.EnableRule("h3-off", true))
	m := msg(actors.TypePublish, "s", "", "a.b")
	require.NoError(t, env.router.Route(m))
	got = env.flush(t)
	assert.Equal(t, []*actors.Message{m}, got["h1"])
	assert.Empty(t, got["h2"], "its only rule is disabled")
	assert.Equal(t, []*actors.Message{m}, got["h3"], "a catch-all now")

	require.NoError(t, env.router.RemoveRule("h1-topic"))
	require.NoError(t, env.router.RemoveRule("h1-type"))
	m = msg(actors.TypePublish, "s", "", "a.b")
	require.NoError(t, env.router.Route(m))
	got = env.flush(t)
	assert.Empty(t, got["h1"], "its rules are gone")
	assert.Equal(t, []*actors.Message{m}, got["h3"])

	for _, s := range env.router.Stats() {
		assert.Zero(t, s.Failed, s.Name)
		assert.Zero(t, s.Queued, s.Name)
	}
}

func TestRouterHandlerFull(t *testing.T) {
	env := newRouterEnv(t, envConfig{handlerSizes: map[string]int{"slow": 1}})
	entered := make(chan *actors.Message, 8)
	env.handler(t, "slow", func(_ context.Context, m *actors.Message) error {
		entered <- m
		<-env.gate
		return nil
	})
	env.handler(t, "fast", nil)
	require.NoError(t, env.router.AddRule(routing.Rule{ID: "slow", Handler: "slow", Enabled: true}))
	require.NoError(t, env.router.AddRule(routing.Rule{ID: "fast", Handler: "fast", Enabled: true}))

	m1, m2, m3 := msg(actors.TypeDirect, "a", "b", ""), msg(actors.TypeDirect, "a", "b", ""), msg(actors.TypeDirect, "a", "b", "")
	require.NoError(t, env.router.Route(m1))
	select {
	case m := <-entered: // slow is now blocked on m1, its mailbox empty
		require.Same(t, m1, m)
	case <-time.After(waitFor):
		require.FailNow(t, "the slow handler did not start")
	}
	require.NoError(t, env.router.Route(m2))
	slow := env.runner.agents[0]
	require.Equal(t, "slow", slow.Name())
	require.Eventually(t, func() bool { return slow.Mailbox().Len() == 1 }, waitFor, time.Millisecond,
		"m2 fills the slow handler's mailbox")

	require.NoError(t, env.router.Route(m3), "the router's own mailbox has room")
	u := env.nextUndelivered(t)
	assert.Same(t, m3, u.msg)
	assert.Equal(t, "slow", u.handler)
	assert.ErrorIs(t, u.err, mailbox.ErrFull)

	for _, want := range []*actors.Message{m1, m2, m3} {
		assert.Same(t, want, env.next(t, "fast"), "the fast handler is not held up")
	}
	assert.Empty(t, env.undeliv, "only the slow handler's copy of m3 was refused")
}

func TestRouterRouteFull(t *testing.T) {
	tests := []struct {
		name  string
		limit int // the shared limit's size; 0: none
		fill  func(env *routerEnv, limit *mailbox.Limit) (undo func())
	}{
		{
			name: "own capacity",
			fill: func(env *routerEnv, _ *mailbox.Limit) func() {
				env.suspend()
				return env.resume
			},
		},
		{
			name:  "shared limit",
			limit: 1,
			fill: func(_ *routerEnv, limit *mailbox.Limit) func() {
				limit.TryAcquire() // someone else holds the only slot
				return func() { limit.Release(1) }
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var limit *mailbox.Limit
			if tt.limit > 0 {
				limit = mailbox.NewLimit(tt.limit)
			}
			env := newRouterEnv(t, envConfig{capacity: 1, shared: limit, handlerCapacity: 8})
			env.handler(t, "h", nil)
			require.NoError(t, env.router.AddRule(routing.Rule{ID: "r", Handler: "h", Enabled: true}))

			undo := tt.fill(env, limit)
			var queued *actors.Message
			if limit == nil {
				queued = msg(actors.TypeDirect, "a", "b", "")
				require.NoError(t, env.router.Route(queued), "the one slot")
			}
			refused := msg(actors.TypeDirect, "a", "b", "")
			err := env.router.Route(refused)
			require.ErrorIs(t, err, mailbox.ErrFull)
			undo()

			if queued != nil {
				assert.Same(t, queued, env.next(t, "h"))
			}
			got := env.flush(t)
			assert.Empty(t, got["h"], "the refused message stays the caller's")
			assert.Empty(t, env.undeliv, "and is not reported as undeliverable")
		})
	}
}

func TestRouterStats(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	bad := errors.New("bad message")
	env.handler(t, "worker", func(_ context.Context, m *actors.Message) error {
		switch m.Topic {
		case "bad":
			return bad
		case "panic":
			panic("handler panic")
		}
		return nil
	})
	env.handler(t, "idle", nil)
	require.NoError(t, env.router.AddRule(routing.Rule{ID: "w", Sender: "s", Handler: "worker", Enabled: true}))

	for _, topic := range []string{"ok", "bad", "panic", "ok", "bad", "ok"} {
		require.NoError(t, env.router.Route(msg(actors.TypeDirect, "s", "", topic)))
	}
	got := env.flush(t)
	require.Len(t, got["worker"], 6, "the handler is resumed after the panic")
	assert.Empty(t, got["idle"])

	// The marker itself is handled too.
	require.Eventually(t, func() bool {
		s := env.router.Stats()
		return len(s) == 2 && s[0].Handled == 1 && s[1].Handled+s[1].Failed == 7
	}, waitFor, time.Millisecond)
	assert.Equal(t, []routing.HandlerStats{
		{Name: "idle", Handled: 1},
		{Name: "worker", Handled: 4, Failed: 3},
	}, env.router.Stats(), "sorted by name")
	assert.Equal(t, int64(2), env.hooks.failed.Load())
	assert.Equal(t, int64(1), env.hooks.panicked.Load())
	assert.Empty(t, env.undeliv)
}

func TestRouterStop(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	env.handler(t, "h", nil)
	require.NoError(t, env.router.AddRule(routing.Rule{ID: "r", Handler: "h", Enabled: true}))
	require.True(t, env.router.Active())

	env.suspend() // hold the messages in the router's mailbox
	queued := []*actors.Message{msg(actors.TypeDirect, "a", "b", ""), msg(actors.TypeDirect, "a", "c", "")}
	for _, m := range queued {
		require.NoError(t, env.router.Route(m))
	}
	require.Equal(t, 2, env.router.Mailbox().Len())

	reason := errors.New("shutting down")
	env.router.Stop(env.system, reason)
	for _, want := range queued {
		u := env.nextUndelivered(t)
		assert.Same(t, want, u.msg)
		assert.Equal(t, "$router", u.handler)
		assert.ErrorIs(t, u.err, reason)
	}
	require.NoError(t, env.system.Root.StopFuture(env.router.PID()).Wait())
	assert.True(t, env.router.Mailbox().Closed())

	assert.False(t, env.router.Active())
	assert.NoError(t, env.router.Route(msg(actors.TypeDirect, "a", "b", "")), "nothing to route once stopped")
	changes := []struct {
		name string
		do   func() error
	}{
		{name: "AddRule", do: func() error { return env.router.AddRule(routing.Rule{ID: "r2", Handler: "h", Enabled: true}) }},
		{name: "RemoveRule", do: func() error { return env.router.RemoveRule("r") }},
		{name: "EnableRule", do: func() error { return env.router.EnableRule("r", false) }},
		{name: "RegisterHandler", do: func() error { return env.router.RegisterHandler("h2", nop) }},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			require.ErrorIs(t, c.do(), routing.ErrRouterStopped)
		})
	}
	assert.Len(t, env.router.Rules(), 1, "the rules are as they were")
	assert.Equal(t, []string{"h"}, env.router.Handlers())
	assert.Empty(t, env.undeliv)

	env.router.Stop(env.system, errors.New("again")) // idempotent
	assert.Empty(t, env.undeliv)
}

// One goroutine changes rules and handlers while others route and read; run
// with -race. Every routed message must reach only handlers that exist.
func TestRouterConcurrentChanges(t *testing.T) {
	const messages = 500
	env := newRouterEnv(t, envConfig{capacity: 2 * messages})
	env.handler(t, "a", nil)
	env.handler(t, "b", nil)
	r := env.router
	require.NoError(t, r.AddRule(routing.Rule{ID: "base", Topic: "t.>", Handler: "a", Enabled: true}))

	var wg sync.WaitGroup
	wg.Go(func() { // rules
		for i := range messages {
			id := fmt.Sprintf("r%d", i%4)
			rule := routing.Rule{ID: id, Topic: "t.*", Handler: []string{"a", "b"}[i%2], Enabled: i%3 != 0}
			if err := r.AddRule(rule); err != nil && !errors.Is(err, routing.ErrRuleExists) {
				t.Errorf("AddRule %s: %v", id, err)
				return
			}
			if err := r.EnableRule(id, i%2 == 0); err != nil {
				t.Errorf("EnableRule %s: %v", id, err)
				return
			}
			if i%5 == 0 {
				if err := r.RemoveRule(id); err != nil {
					t.Errorf("RemoveRule %s: %v", id, err)
					return
				}
			}
			if i == messages/2 {
				if err := r.RegisterHandler("c", nop); err != nil {
					t.Errorf("RegisterHandler: %v", err)
					return
				}
				if err := r.AddRule(routing.Rule{ID: "c", Type: actors.TypePublish, Handler: "c", Enabled: true}); err != nil {
					t.Errorf("AddRule c: %v", err)
					return
				}
			}
		}
	})
	wg.Go(func() { // routing
		for i := range messages {
			if err := r.Route(msg(actors.TypePublish, "s", "", fmt.Sprintf("t.%d", i))); err != nil {
				t.Errorf("Route %d: %v", i, err)
				return
			}
		}
	})
	wg.Go(func() { // reading
		for range messages {
			r.Active()
			r.Rules()
			r.Handlers()
			r.Stats()
		}
	})
	wg.Wait()

	got := env.flush(t) // "c" has no recorder: it is not flushed
	assert.Len(t, got["a"], messages, "the base rule reaches a every time, and a only once")
	assert.LessOrEqual(t, len(got["b"]), messages)
	assert.Empty(t, env.undeliv)
	assert.Equal(t, []string{"a", "b", "c"}, r.Handlers())
}

func TestRouterNewNameTaken(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	_, err := routing.New(env.system, 8, nil, env.runner, func(*actors.Message, string, error) {})
	require.ErrorIs(t, err, actor.ErrNameExists, "one router per actor system")

	// The first router is unaffected.
	env.handler(t, "h", nil)
	require.NoError(t, env.router.AddRule(routing.Rule{ID: "r", Handler: "h", Enabled: true}))
	m := msg(actors.TypeDirect, "a", "b", "")
	require.NoError(t, env.router.Route(m))
	assert.Same(t, m, env.next(t, "h"))
}

func TestRouterIgnoresForeignMessages(t *testing.T) {
	env := newRouterEnv(t, envConfig{})
	env.handler(t, "h", nil)
	require.NoError(t, env.router.AddRule(routing.Rule{ID: "r", Handler: "h", Enabled: true}))

	// Values sent with protoactor's API that are not *Message.
	env.system.Root.Send(env.router.PID(), "hello")
	env.system.Root.Send(env.router.PID(), &struct{ Topic string }{"a"})

	got := env.flush(t)
	assert.Empty(t, got["h"])
	assert.Empty(t, env.undeliv)
	assert.Zero(t, env.hooks.foreign.Load(), "nothing foreign reached the handler's agent")
}
