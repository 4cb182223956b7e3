package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
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
	"github.com/descartes/agentbus/transport"
)

// version is the daemon's version, announced to clients.
const version = "0.1"

// serveConfig is the daemon's configuration: flags, or the same keys in a
// JSON config file (flags win). Durations are Go durations ("30s").
type serveConfig struct {
	Socket       string `json:"socket"`
	SocketMode   string `json:"socket_mode"`
	AllowUIDs    string `json:"allow_uids"` // comma-separated
	Metrics      string `json:"metrics"`
	LogLevel     string `json:"log_level"`
	DrainTimeout string `json:"drain_timeout"`

	MaxMessageSize      int    `json:"max_message_size"`
	RequestTimeout      string `json:"request_timeout"`
	MailboxSize         int    `json:"mailbox_size"`
	MaxPending          int    `json:"max_pending"`
	WaitDuration        string `json:"wait_duration"`
	BackpressureTimeout string `json:"backpressure_timeout"`
	DLQMaxSize          int    `json:"dlq_max_size"`
	MaxAttempts         int    `json:"max_attempts"`
	History             bool   `json:"history"`
	MaxHistorySize      int    `json:"max_history_size"`
	MaxTopics           int    `json:"max_topics"`
	MaxSubscriptions    int    `json:"max_subscriptions"`

	OutboundQueue int    `json:"outbound_queue"`
	MaxAgents     int    `json:"max_agents"`
	MaxRequests   int    `json:"max_requests"`
	MaxConns      int    `json:"max_conns"`
	AckTimeout    string `json:"ack_timeout"`

	Cluster string `json:"cluster"` // cluster name; empty: not a cluster node
	Listen  string `json:"listen"`  // membership address host:port
	Seeds   string `json:"seeds"`   // comma-separated host:port
	Node    string `json:"node"`    // node name
}

// flagNames maps config keys to flag names: the JSON key with '-' for '_'.
func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

func newServe(g *globals) *cobra.Command {
	var cfg serveConfig
	var configFile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: the bus, on a Unix socket",
		Long: `Run the agentbus daemon. It owns one bus and serves the protocol of PROTOCOL.md on a
Unix socket (mode 0600 unless --socket-mode says otherwise). A stale socket left by a
dead daemon is replaced; a live daemon's socket is never taken.

On SIGINT or SIGTERM it stops accepting, lets queued messages drain to their clients
(up to --drain-timeout), dead-letters what is left, and removes the socket.

Every flag can also be given in a JSON config file (--config) under the flag's name
with '_' for '-', e.g. {"max_pending": 20000, "request_timeout": "10s"}; flags win.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Socket = g.socket
			if configFile != "" {
				if err := loadConfig(configFile, &cfg, cmd.Flags(), cmd.Flags().Changed("socket") || os.Getenv("AGENTBUS_SOCKET") != ""); err != nil {
					return usageError{err}
				}
			}
			return serve(cmd.Context(), cfg, g.stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "a JSON config file (see above)")
	f.StringVar(&cfg.SocketMode, "socket-mode", "0600", "the socket file's permission bits (octal)")
	f.StringVar(&cfg.AllowUIDs, "allow-uids", "", "comma-separated uids allowed to connect (checked with SO_PEERCRED); empty: any that can open the socket")
	f.StringVar(&cfg.Metrics, "metrics", "", "serve /metrics (Prometheus) and /healthz on this loopback address, e.g. 127.0.0.1:9464")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&cfg.DrainTimeout, "drain-timeout", "10s", "on shutdown, how long queued messages may drain")
	f.IntVar(&cfg.MaxMessageSize, "max-message-size", agentbus.DefaultMaxMessageSize, "largest message in bytes (frames may be 64 KiB larger)")
	f.StringVar(&cfg.RequestTimeout, "request-timeout", "30s", "default request timeout")
	f.IntVar(&cfg.MailboxSize, "mailbox-size", 1024, "each agent's mailbox capacity")
	f.IntVar(&cfg.MaxPending, "max-pending", 10000, "messages queued in all mailboxes together")
	f.StringVar(&cfg.WaitDuration, "wait-duration", "100ms", "first backoff of a sender waiting for room")
	f.StringVar(&cfg.BackpressureTimeout, "backpressure-timeout", "30s", "longest a sender waits for room")
	f.IntVar(&cfg.DLQMaxSize, "dlq-max-size", 1000, "dead letters kept (oldest evicted)")
	f.IntVar(&cfg.MaxAttempts, "max-attempts", agentbus.DefaultMaxAttempts, "deliveries of a requires_ack message before retries_exhausted")
	f.BoolVar(&cfg.History, "history", false, "record accepted messages for `agentbus history`")
	f.IntVar(&cfg.MaxHistorySize, "max-history-size", 10000, "messages the history keeps")
	f.IntVar(&cfg.MaxTopics, "max-topics", 10000, "topic actors running at once")
	f.IntVar(&cfg.MaxSubscriptions, "max-subscriptions", 100000, "subscriptions in all")
	f.IntVar(&cfg.OutboundQueue, "outbound-queue", server.DefaultOutboundQueue, "frames queued for one connection")
	f.IntVar(&cfg.MaxAgents, "max-agents", server.DefaultMaxAgents, "agents one connection may register")
	f.IntVar(&cfg.MaxRequests, "max-requests", server.DefaultMaxRequests, "requests one connection may have in flight")
	f.IntVar(&cfg.MaxConns, "max-conns", server.DefaultMaxConns, "connections served at once")
	f.StringVar(&cfg.AckTimeout, "ack-timeout", "30s", "how long a requires_ack delivery waits for the client's ack")
	f.StringVar(&cfg.Cluster, "cluster", "", "join (or start) the cluster of this name: agents of every node's clients reach each other (docs/cluster.md)")
	f.StringVar(&cfg.Listen, "listen", cluster.DefaultListen, "with --cluster: this node's membership address, host:port (every port binds to host only; port 0: a free one)")
	f.StringVar(&cfg.Seeds, "seeds", "", "with --cluster: comma-separated membership addresses of nodes to join")
	f.StringVar(&cfg.Node, "node", "", "with --cluster: this node's name (default: its membership address)")
	return cmd
}

// loadConfig reads the JSON config file into cfg, except for the keys whose
// flags were given on the command line.
func loadConfig(path string, cfg *serveConfig, flags *pflag.FlagSet, socketGiven bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var file map[string]json.RawMessage
	if err := json.Unmarshal(data, &file); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	for key, raw := range file {
		if key == "socket" && socketGiven || key != "socket" && flags.Changed(flagName(key)) {
			continue // the command line wins
		}
		one, _ := json.Marshal(map[string]json.RawMessage{key: raw})
		dec := json.NewDecoder(strings.NewReader(string(one)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(cfg); err != nil {
			return fmt.Errorf("config %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// daemon is what serveConfig turns into.
type daemon struct {
	bus          agentbus.Config
	srv          server.Config
	unix         transport.UnixOptions
	socket       string
	metrics      string
	drainTimeout time.Duration
	level        slog.Level
}

func parseDuration(name, s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, usagef("--%s: %q is not a duration such as 30s", name, s)
	}
	return d, nil
}

func (c serveConfig) daemon() (daemon, error) {
	var d daemon
	var errs []error
	dur := func(name, s string) time.Duration {
		v, err := parseDuration(name, s)
		errs = append(errs, err)
		return v
	}
	d.socket = c.Socket
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
		if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			errs = append(errs, usagef("--metrics: %q is not a loopback address such as 127.0.0.1:9464", c.Metrics))
		}
	}
	d.metrics = c.Metrics
	if err := d.level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, usagef("--log-level: %q is not debug, info, warn or error", c.LogLevel))
	}
	d.drainTimeout = dur("drain-timeout", c.DrainTimeout)
	for name, v := range map[string]int{"max-message-size": c.MaxMessageSize, "mailbox-size": c.MailboxSize,
		"max-pending": c.MaxPending, "dlq-max-size": c.DLQMaxSize, "max-attempts": c.MaxAttempts,
		"max-history-size": c.MaxHistorySize, "max-topics": c.MaxTopics, "max-subscriptions": c.MaxSubscriptions,
		"outbound-queue": c.OutboundQueue, "max-agents": c.MaxAgents, "max-requests": c.MaxRequests,
		"max-conns": c.MaxConns} {
		if v < 0 {
			errs = append(errs, usagef("--%s: %d is negative", name, v))
		}
	}
	d.bus = agentbus.Config{
		MaxMessageSize: c.MaxMessageSize,
		RequestTimeout: dur("request-timeout", c.RequestTimeout),
		MailboxSize:    c.MailboxSize,
		Backpressure: agentbus.BackpressureConfig{MaxPending: c.MaxPending,
			WaitDuration: dur("wait-duration", c.WaitDuration), Timeout: dur("backpressure-timeout", c.BackpressureTimeout)},
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
	d.srv = server.Config{Name: "agentbus/" + version, MaxFrameSize: d.unix.MaxFrameSize,
		OutboundQueue: c.OutboundQueue, MaxAgents: c.MaxAgents, MaxRequests: c.MaxRequests, MaxConns: c.MaxConns,
		AckTimeout: dur("ack-timeout", c.AckTimeout)}
	return d, errors.Join(errs...)
}

// serve runs the daemon until ctx ends or a signal arrives.
func serve(ctx context.Context, c serveConfig, stderr io.Writer) error {
	d, err := c.daemon()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: d.level}))
	d.bus.Logger = log
	d.srv.Logger = log
	if err := ensureSocketDir(d.socket); err != nil {
		return err
	}
	bus, err := agentbus.New(d.bus)
	if err != nil {
		return usageError{err}
	}
	l, err := transport.ListenUnix(d.socket, d.unix)
	if err != nil {
		_ = bus.Shutdown(context.Background())
		return err
	}
	d.srv.Bus = bus
	srv, err := server.New(d.srv)
	if err != nil {
		_ = l.Close()
		_ = bus.Shutdown(context.Background())
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

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
	log.Info("agentbus daemon listening", "socket", l.Addr(), "protocol", protocol.Version, "version", version,
		"metrics", d.metrics)
	if cl := bus.Cluster(); cl != nil {
		self := cl.Self()
		log.Info("cluster node", "cluster", d.bus.Cluster.Name, "node", self.Name, "listen", self.Addr,
			"remote", self.RemoteAddr, "members", len(cl.Members()))
	}
	serveErr := srv.Serve(ctx, l)
	stop()
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
	_ = l.Close() // removes the socket
	if httpSrv != nil {
		_ = httpSrv.Shutdown(context.Background())
		wg.Wait()
	}
	acc := bus.Accounting()
	log.Info("agentbus daemon stopped", "accepted", acc.Accepted, "handled", acc.Handled,
		"dead_lettered", acc.DeadLettered)
	return serveErr
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
