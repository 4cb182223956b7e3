package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/cluster"
	"github.com/descartes/agentbus/internal/protocol"
	"github.com/descartes/agentbus/internal/server"
	"github.com/descartes/agentbus/prom"
	"github.com/descartes/agentbus/store"
	"github.com/descartes/agentbus/transport"
)

// serveConfig is the daemon's configuration: flags, or the same keys in a
// JSON config file (flags win).
type serveConfig struct {
	SocketMode         string
	AllowUIDs          string // comma-separated
	Metrics            string
	MetricsAllowRemote bool
	LogLevel           string
	LogFormat          string
	DrainTimeout       time.Duration

	MaxMessageSize      int
	RequestTimeout      time.Duration
	MailboxSize         int
	MaxPending          int
	WaitDuration        time.Duration
	BackpressureTimeout time.Duration
	DLQMaxSize          int
	MaxAttempts         int
	History             bool
	MaxHistorySize      int
	MaxTopics           int
	MaxSubscriptions    int

	OutboundQueue int
	MaxAgents     int
	MaxRequests   int
	MaxConns      int
	AckTimeout    time.Duration

	OTLPEndpoint string // see otel.go
	OTLPInsecure bool

	DataDir       string
	Commit        string
	MaxStoreBytes int64
	DedupWindow   time.Duration

	Cluster string // cluster name; empty: not a cluster node
	Listen  string // membership address host:port
	Seeds   string // comma-separated host:port
	Node    string // node name
}

// flagName maps a config key to its flag's name: '-' for '_'.
func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// logLevels and logFormats are --log-level's and --log-format's values.
var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

func newServe(g *globals) *cobra.Command {
	var cfg serveConfig
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: the bus, on a Unix socket",
		Long: `Run the agentbus daemon. It owns one bus and serves the protocol of PROTOCOL.md on a
Unix socket (mode 0600 unless --socket-mode says otherwise). A stale socket left by a
dead daemon is replaced; a live daemon's socket is never taken.

On SIGINT or SIGTERM it stops accepting and removes the socket (a new daemon may start at
once), lets queued messages drain to their clients (up to --drain-timeout), and
dead-letters what is left.

Durable agents (registered with "durable": true) keep their messages, pending
redeliveries, subscriptions and the dead-letter queue in --data-dir (mode 0700, its
file 0600), committed as --commit says: batch (the default: group commit, fsync'd),
always (an fsync per message) or none (no fsync: survives a crash of the daemon, not
of the machine). At start the daemon recovers them: durable agents come back detached
and take messages until a client registers them again. A damaged store file stops the
daemon at start with an error naming it. --data-dir "" keeps everything in memory.

It logs to stderr: lifecycle and, at most every 10 s, a summary of its clients at info;
each connection at debug; dead letters at warn.

Every flag can also be given in a JSON config file (--config) under the flag's name
with '_' for '-', e.g. {"max_pending": 20000, "request_timeout": "10s"}; flags given on
the command line win. Durations are Go durations: 100ms, 30s, 5m.`,
		Example: `  agentbus serve --history
  agentbus serve --socket /run/agentbus.sock --socket-mode 0660 --metrics 127.0.0.1:9464
  agentbus serve --config /etc/agentbus.json --log-format json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := loadConfig(configFile, cmd.Flags(), os.Getenv("AGENTBUS_SOCKET") != ""); err != nil {
					return usageError{err}
				}
			}
			return serve(cmd.Context(), g.socket, cfg, g.stderr)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&configFile, "config", "", "read flags from this JSON file (see above)")
	f.StringVar(&cfg.SocketMode, "socket-mode", "0600", "the socket file's permission bits, in octal")
	f.StringVar(&cfg.AllowUIDs, "allow-uids", "", "comma-separated uids allowed to connect (checked with SO_PEERCRED); empty: any that can open the socket")
	f.StringVar(&cfg.Metrics, "metrics", "", "serve Prometheus /metrics and /healthz on this address, e.g. 127.0.0.1:9464 (loopback only, unless --metrics-allow-remote)")
	f.BoolVar(&cfg.MetricsAllowRemote, "metrics-allow-remote", false, "let --metrics listen on any address, not only loopback")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "log from this level on: debug, info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", "text", "log as text (key=value) or json lines")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 10*time.Second, "on shutdown, how long queued messages may drain")
	f.IntVar(&cfg.MaxMessageSize, "max-message-size", agentbus.DefaultMaxMessageSize, "largest message in bytes (frames may be 64 KiB larger)")
	f.DurationVar(&cfg.RequestTimeout, "request-timeout", 30*time.Second, "default request timeout")
	f.IntVar(&cfg.MailboxSize, "mailbox-size", 1024, "each agent's mailbox capacity")
	f.IntVar(&cfg.MaxPending, "max-pending", 10000, "messages queued in all mailboxes together")
	f.DurationVar(&cfg.WaitDuration, "wait-duration", 100*time.Millisecond, "first backoff of a sender waiting for room")
	f.DurationVar(&cfg.BackpressureTimeout, "backpressure-timeout", 30*time.Second, "longest a sender waits for room")
	f.IntVar(&cfg.DLQMaxSize, "dlq-max-size", 1000, "dead letters kept (oldest evicted)")
	f.IntVar(&cfg.MaxAttempts, "max-attempts", agentbus.DefaultMaxAttempts, "deliveries of a requires_ack message before retries_exhausted")
	f.BoolVar(&cfg.History, "history", false, "record accepted messages, for agentbus history")
	f.IntVar(&cfg.MaxHistorySize, "max-history-size", 10000, "messages the history keeps")
	f.IntVar(&cfg.MaxTopics, "max-topics", 10000, "topic actors running at once")
	f.IntVar(&cfg.MaxSubscriptions, "max-subscriptions", 100000, "subscriptions in all")
	f.IntVar(&cfg.OutboundQueue, "outbound-queue", server.DefaultOutboundQueue, "frames queued for one connection")
	f.IntVar(&cfg.MaxAgents, "max-agents", server.DefaultMaxAgents, "agents one connection may register")
	f.IntVar(&cfg.MaxRequests, "max-requests", server.DefaultMaxRequests, "requests one connection may have in flight")
	f.IntVar(&cfg.MaxConns, "max-conns", server.DefaultMaxConns, "connections served at once")
	f.DurationVar(&cfg.AckTimeout, "ack-timeout", 30*time.Second, "how long a requires_ack delivery or a request waits for the client's answer")
	f.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "export OpenTelemetry spans over OTLP/HTTP to this collector HOST:PORT, e.g. 127.0.0.1:4318")
	f.BoolVar(&cfg.OTLPInsecure, "otlp-insecure", false, "with --otlp-endpoint: plain HTTP instead of HTTPS")
	f.StringVar(&cfg.DataDir, "data-dir", defaultDataDir(), `the durable store's directory ("": memory only)`)
	f.StringVar(&cfg.Commit, "commit", "batch", "when a durable message counts as stored: batch, always or none")
	f.Int64Var(&cfg.MaxStoreBytes, "max-store-bytes", defaultMaxStoreBytes, "bytes the durable store may hold; then senders are pushed back (store_full)")
	f.DurationVar(&cfg.DedupWindow, "dedup-window", agentbus.DefaultDedupWindow, "how long a durable message's ID is remembered, so that a resend is accepted once")
	_ = cmd.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions(logLevels, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions(logFormats, cobra.ShellCompDirectiveNoFileComp))
	f.StringVar(&cfg.Cluster, "cluster", "", "join (or start) the cluster of this name: agents of every node's clients reach each other (docs/cluster.md)")
	f.StringVar(&cfg.Listen, "listen", cluster.DefaultListen, "with --cluster: this node's membership address, host:port (every port binds to host only; port 0: a free one)")
	f.StringVar(&cfg.Seeds, "seeds", "", "with --cluster: comma-separated membership addresses of nodes to join")
	f.StringVar(&cfg.Node, "node", "", "with --cluster: this node's name (default: its membership address)")
	return cmd
}

// loadConfig sets the flags named by the keys of the JSON config file at
// path, except those given on the command line (and socket when
// socketFromEnv). Each value is parsed as the flag's own: a string as it
// is, a number or a boolean as its JSON text.
func loadConfig(path string, flags *pflag.FlagSet, socketFromEnv bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var file map[string]json.RawMessage
	if err := json.Unmarshal(data, &file); err != nil {
		return fmt.Errorf("config %s: not a JSON object: %w", path, err)
	}
	for _, key := range slices.Sorted(maps.Keys(file)) {
		name := flagName(key)
		if name == "config" || name == "help" || flags.Lookup(name) == nil {
			return fmt.Errorf("config %s: unknown key %q (the keys are serve's flags, with '_' for '-')", path, key)
		}
		if flags.Changed(name) || name == "socket" && socketFromEnv {
			continue // the command line wins
		}
		raw := file[key]
		var value string
		switch t := bytes.TrimSpace(raw); {
		case len(t) > 0 && t[0] == '"':
			_ = json.Unmarshal(t, &value) // valid: it came out of a valid object
		case len(t) > 0 && t[0] != '{' && t[0] != '[' && string(t) != "null":
			value = string(t)
		default:
			return fmt.Errorf("config %s: key %q: %s is not a string, number or boolean", path, key, t)
		}
		if err := flags.Set(name, value); err != nil {
			return fmt.Errorf("config %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// defaultMaxStoreBytes bounds the durable store unless --max-store-bytes
// says otherwise: 1 GiB.
const defaultMaxStoreBytes = 1 << 30

// storeLockWait is how long the daemon waits for another process (a daemon
// still draining after SIGTERM) to let go of the data directory.
const storeLockWait = 15 * time.Second

// defaultDataDir is $XDG_STATE_HOME/agentbus, else ~/.local/state/agentbus
// (the XDG base directory for state), else "" (memory only) when there is no
// home directory.
func defaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "agentbus")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, ".local", "state", "agentbus")
}

// daemon is what serveConfig turns into.
type daemon struct {
	dataDir      string
	storeOpts    store.Options
	bus          agentbus.Config
	srv          server.Config
	unix         transport.UnixOptions
	socket       string
	metrics      string
	drainTimeout time.Duration
	level        slog.Level
	jsonLog      bool
}

func (c serveConfig) daemon(socket string) (daemon, error) {
	var d daemon
	var errs []error
	d.socket = socket
	if d.socket == "" {
		errs = append(errs, usagef("--socket: empty path"))
	}
	mode, err := strconv.ParseUint(c.SocketMode, 8, 32)
	if err != nil || mode > 0o777 {
		errs = append(errs, usagef("--socket-mode: %q is not an octal permission such as 0600", c.SocketMode))
	}
	d.unix.Mode = os.FileMode(mode)
	if c.AllowUIDs != "" {
		for _, s := range strings.Split(c.AllowUIDs, ",") {
			uid, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || uid < 0 {
				errs = append(errs, usagef("--allow-uids: %q is not a uid", s))
				continue
			}
			d.unix.AllowUIDs = append(d.unix.AllowUIDs, uid)
		}
	}
	if c.Metrics != "" {
		host, _, err := net.SplitHostPort(c.Metrics)
		ip := net.ParseIP(host)
		switch {
		case err != nil:
			errs = append(errs, usagef("--metrics: %q is not an address such as 127.0.0.1:9464", c.Metrics))
		case !c.MetricsAllowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()):
			errs = append(errs, usagef("--metrics: %q is not a loopback address such as 127.0.0.1:9464 "+
				"(add --metrics-allow-remote to serve metrics on any address)", c.Metrics))
		}
	}
	d.metrics = c.Metrics
	if !slices.Contains(logLevels, c.LogLevel) || d.level.UnmarshalText([]byte(c.LogLevel)) != nil {
		errs = append(errs, usagef("--log-level: %q is not one of %s", c.LogLevel, strings.Join(logLevels, ", ")))
	}
	if !slices.Contains(logFormats, c.LogFormat) {
		errs = append(errs, usagef("--log-format: %q is not one of %s", c.LogFormat, strings.Join(logFormats, ", ")))
	}
	d.jsonLog = c.LogFormat == "json"
	for _, v := range []struct {
		name string
		d    time.Duration
	}{{"drain-timeout", c.DrainTimeout}, {"request-timeout", c.RequestTimeout}, {"wait-duration", c.WaitDuration},
		{"backpressure-timeout", c.BackpressureTimeout}, {"ack-timeout", c.AckTimeout},
		{"dedup-window", c.DedupWindow}} {
		if v.d < 0 {
			errs = append(errs, usagef("--%s: %v is negative", v.name, v.d))
		}
	}
	d.drainTimeout = c.DrainTimeout
	for _, v := range []struct {
		name string
		n    int
	}{{"max-message-size", c.MaxMessageSize}, {"mailbox-size", c.MailboxSize}, {"max-pending", c.MaxPending},
		{"dlq-max-size", c.DLQMaxSize}, {"max-attempts", c.MaxAttempts}, {"max-history-size", c.MaxHistorySize},
		{"max-topics", c.MaxTopics}, {"max-subscriptions", c.MaxSubscriptions}, {"outbound-queue", c.OutboundQueue},
		{"max-agents", c.MaxAgents}, {"max-requests", c.MaxRequests}, {"max-conns", c.MaxConns}} {
		if v.n < 0 {
			errs = append(errs, usagef("--%s: %d is negative", v.name, v.n))
		}
	}
	d.bus = agentbus.Config{
		MaxMessageSize: c.MaxMessageSize,
		RequestTimeout: c.RequestTimeout,
		MailboxSize:    c.MailboxSize,
		Backpressure: agentbus.BackpressureConfig{MaxPending: c.MaxPending,
			WaitDuration: c.WaitDuration, Timeout: c.BackpressureTimeout},
		DLQMaxSize:       c.DLQMaxSize,
		Retry:            agentbus.RetryConfig{MaxAttempts: c.MaxAttempts},
		EnableHistory:    c.History,
		MaxHistorySize:   c.MaxHistorySize,
		MaxTopics:        c.MaxTopics,
		MaxSubscriptions: c.MaxSubscriptions,
	}
	if c.Cluster != "" {
		d.bus.Cluster = &agentbus.ClusterConfig{Name: c.Cluster, NodeName: c.Node, Listen: c.Listen}
		for _, s := range strings.Split(c.Seeds, ",") {
			if s = strings.TrimSpace(s); s != "" {
				if _, _, err := net.SplitHostPort(s); err != nil {
					errs = append(errs, usagef("--seeds: %q is not host:port", s))
				}
				d.bus.Cluster.Seeds = append(d.bus.Cluster.Seeds, s)
			}
		}
	} else if c.Seeds != "" || c.Node != "" || c.Listen != cluster.DefaultListen && c.Listen != "" {
		errs = append(errs, usagef("--listen, --seeds and --node need --cluster"))
	}
	maxFrame := c.MaxMessageSize
	if maxFrame == 0 {
		maxFrame = agentbus.DefaultMaxMessageSize
	}
	d.unix.MaxFrameSize = maxFrame + 64<<10
	d.dataDir = c.DataDir
	policy, err := store.ParsePolicy(c.Commit)
	if err != nil {
		errs = append(errs, usagef("--commit: %q is not batch, always or none", c.Commit))
	}
	if c.MaxStoreBytes < 0 {
		errs = append(errs, usagef("--max-store-bytes: %d is negative", c.MaxStoreBytes))
	}
	d.storeOpts = store.Options{Policy: policy, MaxBytes: c.MaxStoreBytes, LockTimeout: storeLockWait}
	d.bus.Durability.DedupWindow = c.DedupWindow
	d.srv = server.Config{Name: "agentbus/" + strings.Fields(strings.Trim(moduleVersion(), "()"))[0], MaxFrameSize: d.unix.MaxFrameSize,
		OutboundQueue: c.OutboundQueue, MaxAgents: c.MaxAgents, MaxRequests: c.MaxRequests, MaxConns: c.MaxConns,
		AckTimeout: c.AckTimeout}
	return d, errors.Join(errs...)
}

// serve runs the daemon on socket until ctx ends or a signal arrives.
func serve(ctx context.Context, socket string, c serveConfig, stderr io.Writer) error {
	d, err := c.daemon(socket)
	if err != nil {
		return err
	}
	// Before the socket exists: once a client can connect, a signal stops
	// the daemon cleanly.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := &slog.HandlerOptions{Level: d.level}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if d.jsonLog {
		h = slog.NewJSONHandler(stderr, opts)
	}
	log := slog.New(h)
	d.bus.Logger = log
	d.srv.Logger = log
	traces, err := startTracing(c.OTLPEndpoint, c.OTLPInsecure)
	if err != nil {
		return err
	}
	defer traces.shutdown(log, 5*time.Second) // after the bus's shutdown: its last spans too
	d.bus = traces.config(d.bus)
	if err := ensureSocketDir(d.socket); err != nil {
		return err
	}
	l, err := transport.ListenUnix(d.socket, d.unix)
	if err != nil {
		if errors.Is(err, transport.ErrAddrInUse) {
			return explainf(err, "another daemon is serving %s: stop it first, or give another --socket", d.socket)
		}
		return explainf(err, "cannot listen on %s: %s", d.socket, plain(err))
	}
	st, err := openStore(d, log)
	if err != nil {
		_ = l.Close()
		return err
	}
	if st != nil {
		d.bus.Durability.Store = st
		defer func() { // after the bus's shutdown and the clients'
			if err := st.Close(); err != nil {
				log.Error("durable store not closed cleanly", "error", err)
			}
		}()
	}
	recoverStart := time.Now()
	bus, err := agentbus.New(d.bus)
	if errors.Is(err, store.ErrCorrupt) {
		_ = l.Close()
		return err // the file's fault, not the command line's: the error names it
	}
	if err != nil {
		_ = l.Close()
		return usageError{explainf(err, "%s", plain(err))}
	}
	if st != nil {
		log.Info("durable state recovered", "agents", len(bus.Agents()), "queued", bus.Accounting().InFlight,
			"took", time.Since(recoverStart))
	}
	d.srv.Bus = bus
	srv, err := server.New(d.srv)
	if err != nil {
		_ = l.Close()
		_ = bus.Shutdown(context.Background())
		return err
	}
	var wg sync.WaitGroup
	var httpSrv *http.Server
	if d.metrics != "" {
		httpSrv, err = startMetrics(d.metrics, bus, &wg, log)
		if err != nil {
			_ = l.Close()
			_ = bus.Shutdown(context.Background())
			return err
		}
	}
	log.Info("agentbus daemon listening", "socket", l.Addr(), "protocol", protocol.Version, "version", moduleVersion(),
		"metrics", d.metrics)
	if cl := bus.Cluster(); cl != nil {
		self := cl.Self()
		log.Info("cluster node", "cluster", d.bus.Cluster.Name, "node", self.Name, "listen", self.Addr,
			"remote", self.RemoteAddr, "members", len(cl.Members()))
	}
	serveErr := srv.Serve(ctx, l)
	stop()
	// Stop accepting at once: the socket goes, so a new daemon can start
	// while this one drains to the clients it has.
	_ = l.Close()
	log.Info("agentbus daemon shutting down", "drain_timeout", d.drainTimeout)

	drainCtx, cancel := context.WithTimeout(context.Background(), d.drainTimeout)
	defer cancel()
	if err := bus.Shutdown(drainCtx); err != nil {
		log.Warn("drain incomplete; what was queued is dead-lettered", "error", err)
	}
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), time.Second)
	defer cancelFlush()
	if err := srv.Close(flushCtx); err != nil {
		log.Warn("some clients did not take their last messages", "error", err)
	}
	if httpSrv != nil {
		_ = httpSrv.Shutdown(context.Background())
		wg.Wait()
	}
	acc := bus.Accounting()
	log.Info("agentbus daemon stopped", "accepted", acc.Accepted, "handled", acc.Handled,
		"dead_lettered", acc.DeadLettered)
	return serveErr
}

// openStore opens the durable store of d, or returns nil for --data-dir "".
// It waits up to storeLockWait for a daemon that still holds it.
func openStore(d daemon, log *slog.Logger) (*store.Disk, error) {
	if d.dataDir == "" {
		log.Info("durable store: none (--data-dir \"\"): durable agents last until the daemon stops")
		return nil, nil
	}
	start := time.Now()
	d.storeOpts.OnError = func(err error) { log.Error("durable store write failed", "error", err) }
	st, err := store.Open(d.dataDir, d.storeOpts)
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w (another daemon uses this data directory: give this one --data-dir DIR, or --data-dir \"\" for memory only)", err)
	}
	if err != nil {
		return nil, err
	}
	log.Info("durable store opened", "path", st.Path(), "commit", st.Policy().String(), "bytes", st.Size(),
		"took", time.Since(start))
	return st, nil
}

// ensureSocketDir creates the fallback socket directory (mode 0700) when it
// is missing. Any other missing directory is the operator's to create.
func ensureSocketDir(socket string) error {
	dir := filepath.Dir(socket)
	fallback := filepath.Join(os.TempDir(), fmt.Sprintf("agentbus-%d", os.Getuid()))
	if dir != fallback {
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create socket directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || (ok && int(st.Uid) != os.Getuid()) {
		return fmt.Errorf("socket directory %s is not a directory owned by uid %d", dir, os.Getuid())
	}
	return nil
}

// startMetrics serves /metrics and /healthz on addr.
func startMetrics(addr string, bus *agentbus.Bus, wg *sync.WaitGroup, log *slog.Logger) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	if err := prom.Register(reg, bus); err != nil {
		return nil, err
	}
	// The standard runtime and process metrics (go_*, process_*), as every
	// Go service exposes them.
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "error", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return srv, nil
}
