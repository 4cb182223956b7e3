package topics_test

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/descartes/agentbus/actors"
	"github.com/descartes/agentbus/mailbox"
	"github.com/descartes/agentbus/topics"
)

// waitFor bounds every wait for something an actor does; the tests never
// sleep, so it only matters when something is broken.
const waitFor = 10 * time.Second

// post is one message a fake subscriber accepted.
type post struct {
	to  string
	msg *actors.Message
}

// undelivered is one call of Directory.Undeliverable.
type undelivered struct {
	msg        *actors.Message
	subscriber string
	err        error
}

// fakeSubscriber records what it is posted on its directory's channel, or
// refuses with err.
type fakeSubscriber struct {
	name  string
	err   error
	posts chan<- post
}

func (s *fakeSubscriber) Name() string { return s.name }

func (s *fakeSubscriber) TryPost(msg *actors.Message) error {
	if s.err != nil {
		return s.err
	}
	s.posts <- post{s.name, msg}
	return nil
}

// fakeDirectory is a topics.Directory over a map of fake subscribers, with a
// generation the test sets and a count of lookups. Its channels are large
// enough that the topic actor never blocks on them.
type fakeDirectory struct {
	posts   chan post
	undeliv chan undelivered
	lookups atomic.Int64
	gen     atomic.Uint64

	mu   sync.Mutex
	subs map[string]*fakeSubscriber
}

func newFakeDirectory() *fakeDirectory {
	return &fakeDirectory{
		posts:   make(chan post, 256),
		undeliv: make(chan undelivered, 256),
		subs:    make(map[string]*fakeSubscriber),
	}
}

// add makes name known, refusing posts with err if it is not nil. It does not
// change the generation.
func (d *fakeDirectory) add(name string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.subs[name] = &fakeSubscriber{name: name, err: err, posts: d.posts}
}

func (d *fakeDirectory) Subscriber(name string) topics.Subscriber {
	d.lookups.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.subs[name]; ok {
		return s
	}
	return nil // untyped, as the bus's directory returns it
}

func (d *fakeDirectory) Generation() uint64 { return d.gen.Load() }

func (d *fakeDirectory) Undeliverable(msg *actors.Message, subscriber string, err error) {
	d.undeliv <- undelivered{msg, subscriber, err}
}

// nextPosts returns the next n posts, failing the test if they do not come.
func (d *fakeDirectory) nextPosts(t *testing.T, n int) []post {
	t.Helper()
	out := make([]post, 0, n)
	for range n {
		select {
		case p := <-d.posts:
			out = append(out, p)
		case <-time.After(waitFor):
			require.FailNow(t, "missing post", "got %d of %d", len(out), n)
		}
	}
	return out
}

// nextUndelivered returns the next Undeliverable call.
func (d *fakeDirectory) nextUndelivered(t *testing.T) undelivered {
	t.Helper()
	select {
	case u := <-d.undeliv:
		return u
	case <-time.After(waitFor):
		require.FailNow(t, "no Undeliverable call")
		return undelivered{}
	}
}

// recipients returns the names the posts went to, checking that they all
// carry msg itself.
func recipients(t *testing.T, posts []post, msg *actors.Message) []string {
	t.Helper()
	names := make([]string, 0, len(posts))
	for _, p := range posts {
		assert.Same(t, msg, p.msg, "the same *Message goes to every subscriber")
		names = append(names, p.to)
	}
	return names
}

// topicEnv is one topic actor running in an actor system of its own.
type topicEnv struct {
	system  *actor.ActorSystem
	pid     *actor.PID
	reg     *topics.Registry
	dir     *fakeDirectory
	queued  atomic.Int64 // what the actor's queued func returns
	retired atomic.Int64 // how many times retired was called
	gone    chan struct{}
}

// newActorSystem returns an actor system that logs nothing and lets go of
// its dead-letter throttle goroutine quickly; the test shuts it down.
func newActorSystem(t *testing.T) *actor.ActorSystem {
	t.Helper()
	system := actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }),
		// A dead letter starts a protoactor goroutine that lives for this
		// interval (1s by default), longer than goleak waits for it.
		actor.WithDeadLetterThrottleInterval(time.Millisecond),
	)
	t.Cleanup(system.Shutdown)
	return system
}

// startTopic spawns the actor of subject over a fresh registry and fake
// directory. It is stopped when the test ends.
func startTopic(t *testing.T, subject string) *topicEnv {
	t.Helper()
	env := &topicEnv{
		system: newActorSystem(t),
		reg:    topics.NewRegistry(0),
		dir:    newFakeDirectory(),
		gone:   make(chan struct{}, 4),
	}
	props := topics.Actor(subject, env.reg, env.dir,
		func() int { return int(env.queued.Load()) },
		func() {
			env.retired.Add(1)
			env.gone <- struct{}{}
		})
	env.pid = env.system.Root.Spawn(props)
	t.Cleanup(func() {
		// Stopping an actor that already stopped itself returns at once.
		_ = env.system.Root.StopFuture(env.pid).Wait()
	})
	return env
}

func (env *topicEnv) subscribe(t *testing.T, pattern, agent string) {
	t.Helper()
	_, err := env.reg.Subscribe(pattern, agent)
	require.NoError(t, err)
}

func (env *topicEnv) publish(topic string) *actors.Message {
	m := actors.NewMessage(actors.TypePublish, "pub", nil).WithTopic(topic)
	env.system.Root.Send(env.pid, m)
	return m
}

// waitRetired waits for the retired callback.
func (env *topicEnv) waitRetired(t *testing.T) {
	t.Helper()
	select {
	case <-env.gone:
	case <-time.After(waitFor):
		require.FailNow(t, "the topic actor did not retire")
	}
}

func TestTopicActorFanout(t *testing.T) {
	tests := []struct {
		name    string
		subject string
		subs    [][2]string // (pattern, agent)
		want    []string
	}{
		{
			name:    "one exact",
			subject: "a.b",
			subs:    [][2]string{{"a.b", "x"}},
			want:    []string{"x"},
		},
		{
			name:    "wildcards",
			subject: "a.b.c",
			subs:    [][2]string{{"a.b.c", "exact"}, {"a.*.c", "star"}, {"a.>", "rest"}, {"a.*", "nomatch"}, {"z.>", "other"}},
			want:    []string{"exact", "star", "rest"},
		},
		{
			name:    "overlapping patterns reach an agent once",
			subject: "a.b",
			subs:    [][2]string{{"a.b", "x"}, {"a.*", "x"}, {"a.>", "x"}, {"*.b", "x"}, {">", "x"}, {"a.*", "y"}},
			want:    []string{"x", "y"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startTopic(t, tt.subject)
			for _, s := range tt.subs {
				env.subscribe(t, s[0], s[1])
				env.dir.add(s[1], nil)
			}
			for range 3 {
				m := env.publish(tt.subject)
				got := recipients(t, env.dir.nextPosts(t, len(tt.want)), m)
				assert.ElementsMatch(t, tt.want, got)
			}
			// A last message with its own subscriber shows that no
			// duplicate copy of the earlier ones was on its way.
			env.subscribe(t, tt.subject, "last")
			env.dir.add("last", nil)
			m := env.publish(tt.subject)
			got := recipients(t, env.dir.nextPosts(t, len(tt.want)+1), m)
			assert.ElementsMatch(t, append([]string{"last"}, tt.want...), got)
			assert.Empty(t, env.dir.undeliv)
			assert.Zero(t, env.retired.Load())
		})
	}
}

func TestTopicActorFailingSubscriber(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr error
	}{
		{name: "full", err: fmt.Errorf("%w (capacity 1)", mailbox.ErrFull), wantErr: mailbox.ErrFull},
		{name: "stopped", err: mailbox.ErrStopped, wantErr: mailbox.ErrStopped},
		{name: "any error", err: errors.New("boom"), wantErr: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := startTopic(t, "jobs.done")
			for _, agent := range []string{"ok1", "bad", "ok2"} {
				env.subscribe(t, "jobs.*", agent)
			}
			env.dir.add("ok1", nil)
			env.dir.add("bad", tt.err)
			env.dir.add("ok2", nil)

			m := env.publish("jobs.done")
			got := recipients(t, env.dir.nextPosts(t, 2), m)
			assert.ElementsMatch(t, []string{"ok1", "ok2"}, got, "the others get theirs")
			u := env.dir.nextUndelivered(t)
			assert.Same(t, m, u.msg)
			assert.Equal(t, "bad", u.subscriber)
			assert.Same(t, tt.err, u.err, "the subscriber's own error")
			if tt.wantErr != nil {
				assert.ErrorIs(t, u.err, tt.wantErr)
			}
			assert.Empty(t, env.dir.undeliv, "one Undeliverable call per failed copy")
		})
	}
}

func TestTopicActorSubscriberGone(t *testing.T) {
	env := startTopic(t, "a.b")
	env.subscribe(t, "a.b", "here")
	env.subscribe(t, "a.*", "gone")
	env.dir.add("here", nil)

	m := env.publish("a.b")
	got := recipients(t, env.dir.nextPosts(t, 1), m)
	assert.Equal(t, []string{"here"}, got)
	u := env.dir.nextUndelivered(t)
	assert.Same(t, m, u.msg)
	assert.Equal(t, "gone", u.subscriber)
	assert.ErrorIs(t, u.err, topics.ErrSubscriberGone)
	assert.Zero(t, env.retired.Load(), "a topic with a subscriber, even a gone one, stays")
}

func TestTopicActorNoSubscribersRetires(t *testing.T) {
	env := startTopic(t, "quiet")
	env.subscribe(t, "other", "x") // a subscription that does not match
	env.dir.add("x", nil)

	m := env.publish("quiet")
	u := env.dir.nextUndelivered(t)
	assert.Same(t, m, u.msg)
	assert.Empty(t, u.subscriber)
	assert.ErrorIs(t, u.err, topics.ErrNoSubscribers)

	env.waitRetired(t)
	// The actor is gone: stopping it again returns at once, a later message
	// goes to protoactor's dead letters, and retired is not called again.
	require.NoError(t, env.system.Root.StopFuture(env.pid).Wait())
	env.publish("quiet")
	require.NoError(t, env.system.Root.StopFuture(env.pid).Wait())
	assert.Equal(t, int64(1), env.retired.Load())
	assert.Empty(t, env.dir.undeliv, "the late message never reached the topic actor")
	assert.Empty(t, env.dir.posts)
}

func TestTopicActorNoSubscribersWithQueuedStays(t *testing.T) {
	env := startTopic(t, "busy")
	env.queued.Store(1) // more is queued: the actor must not retire

	m := env.publish("busy")
	u := env.dir.nextUndelivered(t)
	assert.Same(t, m, u.msg)
	assert.ErrorIs(t, u.err, topics.ErrNoSubscribers)

	// It is still running: once someone subscribes, it delivers.
	env.subscribe(t, "busy", "late")
	env.dir.add("late", nil)
	m = env.publish("busy")
	got := recipients(t, env.dir.nextPosts(t, 1), m)
	assert.Equal(t, []string{"late"}, got)
	assert.Zero(t, env.retired.Load())

	// Stopped by its owner, it reports retirement once.
	require.NoError(t, env.system.Root.StopFuture(env.pid).Wait())
	env.waitRetired(t)
	assert.Equal(t, int64(1), env.retired.Load())
}

func TestTopicActorIgnoresForeignMessages(t *testing.T) {
	env := startTopic(t, "a")
	// With no subscriber and nothing queued, a *Message would retire the
	// actor; these must not even be looked at.
	env.system.Root.Send(env.pid, "hello")
	env.system.Root.Send(env.pid, 42)
	env.system.Root.Send(env.pid, &struct{ Topic string }{"a"})

	env.subscribe(t, "a", "x")
	env.dir.add("x", nil)
	m := env.publish("a")
	got := recipients(t, env.dir.nextPosts(t, 1), m)
	assert.Equal(t, []string{"x"}, got)
	assert.Empty(t, env.dir.undeliv)
	assert.Zero(t, env.retired.Load())
	assert.Equal(t, int64(1), env.dir.lookups.Load(), "resolved once, for the one *Message")
}

func TestTopicActorCachesSubscribers(t *testing.T) {
	env := startTopic(t, "a.b")
	env.subscribe(t, "a.b", "x")
	env.subscribe(t, "a.*", "y")
	env.dir.add("x", nil)
	env.dir.add("y", nil)

	m := env.publish("a.b")
	assert.ElementsMatch(t, []string{"x", "y"}, recipients(t, env.dir.nextPosts(t, 2), m))
	assert.Equal(t, int64(2), env.dir.lookups.Load())

	m = env.publish("a.b")
	assert.ElementsMatch(t, []string{"x", "y"}, recipients(t, env.dir.nextPosts(t, 2), m))
	assert.Equal(t, int64(2), env.dir.lookups.Load(), "nothing changed: the cache is used")

	// A registry change: the next message is resolved again and reaches the
	// new subscriber.
	env.subscribe(t, "a.>", "z")
	env.dir.add("z", nil)
	m = env.publish("a.b")
	assert.ElementsMatch(t, []string{"x", "y", "z"}, recipients(t, env.dir.nextPosts(t, 3), m))
	assert.Equal(t, int64(5), env.dir.lookups.Load())

	// An unsubscribe is a registry change too.
	require.NoError(t, env.reg.Unsubscribe("a.*", "y"))
	m = env.publish("a.b")
	assert.ElementsMatch(t, []string{"x", "z"}, recipients(t, env.dir.nextPosts(t, 2), m))
	assert.Equal(t, int64(7), env.dir.lookups.Load())

	// A subscriber the directory does not know yet.
	env.subscribe(t, "a.b", "w")
	m = env.publish("a.b")
	assert.ElementsMatch(t, []string{"x", "z"}, recipients(t, env.dir.nextPosts(t, 2), m))
	u := env.dir.nextUndelivered(t)
	assert.Equal(t, "w", u.subscriber)
	assert.ErrorIs(t, u.err, topics.ErrSubscriberGone)

	// The directory learns of it without changing its generation: the
	// cached answer stands.
	env.dir.add("w", nil)
	m = env.publish("a.b")
	assert.ElementsMatch(t, []string{"x", "z"}, recipients(t, env.dir.nextPosts(t, 2), m))
	u = env.dir.nextUndelivered(t)
	assert.Equal(t, "w", u.subscriber)
	assert.ErrorIs(t, u.err, topics.ErrSubscriberGone)

	// A directory generation change: resolved again, and w gets its copy.
	env.dir.gen.Add(1)
	m = env.publish("a.b")
	assert.ElementsMatch(t, []string{"x", "z", "w"}, recipients(t, env.dir.nextPosts(t, 3), m))
	assert.Empty(t, env.dir.undeliv)
}

// When every subscriber leaves, the next message finds none and the actor
// retires, even though it had resolved subscribers before.
func TestTopicActorRetiresAfterLastLeaves(t *testing.T) {
	env := startTopic(t, "a.b")
	env.subscribe(t, "a.*", "x")
	env.dir.add("x", nil)
	m := env.publish("a.b")
	assert.Equal(t, []string{"x"}, recipients(t, env.dir.nextPosts(t, 1), m))

	assert.Equal(t, []string{"a.*"}, env.reg.Leave("x"))
	m = env.publish("a.b")
	u := env.dir.nextUndelivered(t)
	assert.Same(t, m, u.msg)
	assert.ErrorIs(t, u.err, topics.ErrNoSubscribers)
	env.waitRetired(t)
	assert.Equal(t, int64(1), env.retired.Load())
}
