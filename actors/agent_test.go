package actors_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/mailbox"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hookEvent is one call of a Hooks method.
type hookEvent struct {
	kind     string // failed, panicked, foreign, started, stopped
	agent    *actors.Agent
	msg      *actors.Message
	err      error
	panicErr *actors.HandlerPanicError
	foreign  any
	sender   *actor.PID
	restarts int
}

// hooks records Hooks calls on a channel with room for every call a test
// makes, so that a hook never blocks the agent.
type hooks struct {
	events  chan hookEvent
	handled chan *actors.Message // Handled calls, kept apart from the others
}

func newHooks() *hooks {
	return &hooks{events: make(chan hookEvent, 64), handled: make(chan *actors.Message, 64)}
}

func (h *hooks) Handled(_ *actors.Agent, msg *actors.Message) { h.handled <- msg }

func (h *hooks) Asked(*actors.Agent, *actors.Message) {}

func (h *hooks) Failed(a *actors.Agent, msg *actors.Message, err error) any {
	h.events <- hookEvent{kind: "failed", agent: a, msg: msg, err: err}
	return nil
}

func (h *hooks) Panicked(a *actors.Agent, msg *actors.Message, err *actors.HandlerPanicError) {
	h.events <- hookEvent{kind: "panicked", agent: a, msg: msg, panicErr: err}
}

func (h *hooks) Foreign(a *actors.Agent, msg any, sender *actor.PID) {
	h.events <- hookEvent{kind: "foreign", agent: a, foreign: msg, sender: sender}
}

func (h *hooks) Started(a *actors.Agent, restarts int) {
	h.events <- hookEvent{kind: "started", agent: a, restarts: restarts}
}

func (h *hooks) Stopped(a *actors.Agent) {
	h.events <- hookEvent{kind: "stopped", agent: a}
}

// next returns the next hook call, failing the test if none comes.
func (h *hooks) next(t *testing.T) hookEvent {
	t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no hook call")
		return hookEvent{}
	}
}

// handled is what the test handler saw.
type handled struct {
	ctx context.Context
	msg *actors.Message
}

type agentEnv struct {
	system *actor.ActorSystem
	agent  *actors.Agent
	hooks  *hooks
	seen   chan handled
}

// startAgent runs an agent named name with handler h in a fresh actor
// system, and waits for its Started hook. The agent and the system are
// stopped when the test ends.
func startAgent(t *testing.T, name string, h actors.HandlerFunc) *agentEnv {
	t.Helper()
	system := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		// A dead letter starts a protoactor goroutine that lives for this
		// interval (1s by default), longer than goleak waits for it.
		actor.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	env := &agentEnv{system: system, hooks: newHooks(), seen: make(chan handled, 64)}
	handler := actors.HandlerFunc(func(ctx context.Context, msg *actors.Message) error {
		env.seen <- handled{ctx, msg}
		if h == nil {
			return nil
		}
		return h(ctx, msg)
	})
	mb := mailbox.New(mailbox.Config{Capacity: 16})
	env.agent = actors.NewAgent(context.Background(), name, handler, mb, env.hooks)
	pid, err := system.Root.SpawnNamed(env.agent.Props(actor.NewOneForOneStrategy(10, time.Second, actor.DefaultDecider)), name)
	require.NoError(t, err)
	env.agent.SetPID(pid)
	t.Cleanup(func() {
		select {
		case <-env.agent.Done():
		default:
			_ = system.Root.StopFuture(pid).Wait()
		}
		system.Shutdown()
	})

	e := env.hooks.next(t)
	require.Equal(t, "started", e.kind)
	require.Same(t, env.agent, e.agent)
	require.Zero(t, e.restarts)
	return env
}

// handledMsg returns the next message the handler saw.
func (env *agentEnv) handledMsg(t *testing.T) handled {
	t.Helper()
	select {
	case h := <-env.seen:
		return h
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the handler was not called")
		return handled{}
	}
}

func direct(to string) *actors.Message {
	return actors.NewMessage(actors.TypeDirect, "test", nil).WithRecipient(to)
}

func TestAgentAccessors(t *testing.T) {
	env := startAgent(t, "acc", nil)
	a := env.agent
	assert.Equal(t, "acc", a.Name())
	require.NotNil(t, a.PID())
	assert.Equal(t, "acc", a.PID().Id)
	require.NotNil(t, a.Mailbox())
	assert.Equal(t, 16, a.Mailbox().Cap())
	assert.Same(t, a, actors.FromContext(a.Context()))
	assert.Nil(t, actors.FromContext(context.Background()))
	assert.Zero(t, a.Handled())
	assert.Zero(t, a.Failed())
	assert.Zero(t, a.Restarts())
	select {
	case <-a.Done():
		t.Fatal("Done closed while running")
	default:
	}

	assert.Nil(t, a.WaitingOn())
	other := actors.NewAgent(context.Background(), "other", nil, mailbox.New(mailbox.Config{}), nil)
	a.SetWaitingOn(other)
	assert.Same(t, other, a.WaitingOn())
	a.SetWaitingOn(nil)
	assert.Nil(t, a.WaitingOn())
}

func TestAgentHandles(t *testing.T) {
	env := startAgent(t, "worker", nil)
	a := env.agent
	msgs := []*actors.Message{direct("worker"), direct("worker"), direct("worker"), direct("worker")}
	env.system.Root.Send(a.PID(), msgs[0])                    // protoactor's API
	require.NoError(t, a.Mailbox().TryPost(msgs[1]))          // the mailbox directly
	require.NoError(t, a.Mailbox().Post(t.Context(), msgs[2], // and waiting for room
		mailbox.Patience{Wait: time.Second}))
	require.NoError(t, a.TryPost(msgs[3]))

	for i, want := range msgs {
		h := env.handledMsg(t)
		assert.Same(t, want, h.msg, "message %d", i)
		assert.Same(t, a, actors.FromContext(h.ctx), "the handler's ctx carries its agent")
		assert.Equal(t, a.Context(), h.ctx)
		assert.NoError(t, h.ctx.Err())
		assert.Nil(t, h.msg.ReplyTo(), "no sender, no reply address")
	}
	require.Eventually(t, func() bool { return a.Handled() == 4 }, 10*time.Second, time.Millisecond)
	assert.Zero(t, a.Failed())
	for i, want := range msgs {
		assert.Same(t, want, <-env.hooks.handled, "Handled hook for message %d, in order", i)
	}
	assert.Empty(t, env.hooks.events, "no other hook calls for handled messages")
}

func TestAgentHandlerError(t *testing.T) {
	bad := errors.New("cannot do that")
	env := startAgent(t, "fails", func(_ context.Context, msg *actors.Message) error {
		if msg.Topic == "bad" {
			return bad
		}
		return nil
	})
	a := env.agent
	m := direct("fails").WithTopic("bad")
	env.system.Root.Send(a.PID(), m)
	e := env.hooks.next(t)
	assert.Equal(t, "failed", e.kind)
	assert.Same(t, a, e.agent)
	assert.Same(t, m, e.msg)
	assert.ErrorIs(t, e.err, bad)

	env.system.Root.Send(a.PID(), direct("fails"))
	env.handledMsg(t)
	env.handledMsg(t)
	require.Eventually(t, func() bool { return a.Handled() == 1 }, 10*time.Second, time.Millisecond)
	assert.EqualValues(t, 1, a.Failed())
	assert.Zero(t, a.Restarts(), "an error is not a crash")
}

func TestAgentPanicRestarts(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name  string
		value any
	}{
		{name: "error value", value: boom},
		{name: "string value", value: "oops"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startAgent(t, "crashy", func(_ context.Context, msg *actors.Message) error {
				if msg.Topic == "panic" {
					panic(tt.value)
				}
				return nil
			})
			a := env.agent
			ctx := a.Context()
			m := direct("crashy").WithTopic("panic")
			env.system.Root.Send(a.PID(), m)

			e := env.hooks.next(t)
			require.Equal(t, "panicked", e.kind)
			assert.Same(t, m, e.msg)
			pe := e.panicErr
			require.NotNil(t, pe)
			assert.Equal(t, "crashy", pe.Agent)
			assert.Equal(t, tt.value, pe.Value)
			assert.Contains(t, string(pe.Stack), "TestAgentPanicRestarts", "the stack is the panicking goroutine's")
			assert.ErrorIs(t, pe, actors.ErrHandlerPanic)
			var target *actors.HandlerPanicError
			assert.ErrorAs(t, error(pe), &target)
			if err, ok := tt.value.(error); ok {
				assert.ErrorIs(t, pe, err, "an error panic value is unwrapped")
			}
			assert.True(t, strings.Contains(pe.Error(), "crashy"), pe.Error())

			e = env.hooks.next(t)
			require.Equal(t, "started", e.kind, "the supervisor restarts the agent")
			assert.Equal(t, 1, e.restarts)
			assert.Equal(t, 1, a.Restarts())
			assert.EqualValues(t, 1, a.Failed())
			assert.NoError(t, ctx.Err(), "a restart keeps the agent's context")

			next := direct("crashy")
			env.system.Root.Send(a.PID(), next)
			env.handledMsg(t) // the panicking one
			assert.Same(t, next, env.handledMsg(t).msg, "the restarted agent handles messages")
			require.Eventually(t, func() bool { return a.Handled() == 1 }, 10*time.Second, time.Millisecond)
		})
	}
}

func TestAgentForeign(t *testing.T) {
	env := startAgent(t, "polyglot", nil)
	a := env.agent

	fut := env.system.Root.RequestFuture(a.PID(), "hello", 10*time.Second)
	e := env.hooks.next(t)
	require.Equal(t, "foreign", e.kind)
	assert.Same(t, a, e.agent)
	assert.Equal(t, "hello", e.foreign)
	require.NotNil(t, e.sender)
	assert.True(t, e.sender.Equal(fut.PID()), "the sender is the future")
	env.system.Root.Send(e.sender, "reply") // the sender can be answered
	res, err := fut.Result()
	require.NoError(t, err)
	assert.Equal(t, "reply", res)

	env.system.Root.Send(a.PID(), 42)
	e = env.hooks.next(t)
	require.Equal(t, "foreign", e.kind)
	assert.Equal(t, 42, e.foreign)
	assert.Nil(t, e.sender, "sent without a sender")
	assert.Zero(t, a.Handled())
}

func TestAgentReplyTo(t *testing.T) {
	var system *actor.ActorSystem
	env := startAgent(t, "responder", func(_ context.Context, msg *actors.Message) error {
		if to := msg.ReplyTo(); to != nil {
			system.Root.Send(to, "pong:"+msg.Topic)
		}
		return nil
	})
	system = env.system
	a := env.agent

	t.Run("RequestFuture", func(t *testing.T) {
		m := direct("responder").WithTopic("future")
		fut := system.Root.RequestFuture(a.PID(), m, 10*time.Second)
		res, err := fut.Result()
		require.NoError(t, err)
		assert.Equal(t, "pong:future", res)
		assert.True(t, env.handledMsg(t).msg.ReplyTo().Equal(fut.PID()))
	})
	t.Run("actor Request", func(t *testing.T) {
		got := make(chan any, 1)
		asker := system.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
			switch msg := c.Message().(type) {
			case *actors.Message:
				c.Request(a.PID(), msg)
			case string:
				got <- msg
			}
		}))
		defer func() { _ = system.Root.StopFuture(asker).Wait() }()
		system.Root.Send(asker, direct("responder").WithTopic("actor"))
		select {
		case v := <-got:
			assert.Equal(t, "pong:actor", v)
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
		}
		assert.True(t, env.handledMsg(t).msg.ReplyTo().Equal(asker), "ReplyTo is the requesting actor")
	})
	t.Run("custom sender", func(t *testing.T) {
		m := direct("responder").WithTopic("custom")
		fut := actor.NewFuture(system, 10*time.Second)
		system.Root.RequestWithCustomSender(a.PID(), m, fut.PID())
		res, err := fut.Result()
		require.NoError(t, err)
		assert.Equal(t, "pong:custom", res)
		env.handledMsg(t)
	})
}

func TestAgentStop(t *testing.T) {
	env := startAgent(t, "stopper", nil)
	a := env.agent
	ctx := a.Context()
	env.system.Root.Send(a.PID(), direct("stopper"))
	env.handledMsg(t)

	require.NoError(t, env.system.Root.StopFuture(a.PID()).Wait())
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	assert.ErrorIs(t, ctx.Err(), context.Canceled, "stopping cancels the agent's context")

	var stopped int
	for len(env.hooks.events) > 0 {
		e := <-env.hooks.events
		if e.kind == "stopped" {
			stopped++
			assert.Same(t, a, e.agent)
		}
	}
	assert.Equal(t, 1, stopped, "Stopped is called once")

	// A restart that reaches the stopped actor revives it in protoactor;
	// stopping it again must not report the agent stopped a second time.
	a.Mailbox().PostSystemMessage(&actor.Restart{})
	a.Mailbox().PostSystemMessage(&actor.Stop{})
	fut := actor.NewFuture(env.system, 10*time.Second)
	a.Mailbox().PostSystemMessage(&actor.Watch{Watcher: fut.PID()}) // answered once the Stop is handled
	_, err := fut.Result()
	require.NoError(t, err)
	for len(env.hooks.events) > 0 {
		e := <-env.hooks.events
		assert.NotEqual(t, "stopped", e.kind, "Stopped reported twice")
		assert.NotEqual(t, "failed", e.kind)
		assert.NotEqual(t, "panicked", e.kind)
	}
}

func TestAgentContextFromParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	a := actors.NewAgent(parent, "child", nil, mailbox.New(mailbox.Config{}), newHooks())
	require.NoError(t, a.Context().Err())
	cancel()
	assert.ErrorIs(t, a.Context().Err(), context.Canceled, "the agent's context derives from the parent")
	assert.Same(t, a, actors.FromContext(a.Context()))
}

func TestAgentCounters(t *testing.T) {
	env := startAgent(t, "counted", func(_ context.Context, msg *actors.Message) error {
		switch msg.Topic {
		case "error":
			return errors.New("nope")
		case "panic":
			panic("crash")
		}
		return nil
	})
	a := env.agent
	for _, topic := range []string{"ok", "error", "ok", "panic", "error", "ok"} {
		env.system.Root.Send(a.PID(), direct("counted").WithTopic(topic))
	}
	for range 6 {
		env.handledMsg(t)
	}
	require.Eventually(t, func() bool { return a.Handled()+a.Failed() == 6 }, 10*time.Second, time.Millisecond)
	assert.EqualValues(t, 3, a.Handled())
	assert.Len(t, env.hooks.handled, 3, "one Handled hook per message handled")
	assert.EqualValues(t, 3, a.Failed())
	assert.Equal(t, 1, a.Restarts())
}
