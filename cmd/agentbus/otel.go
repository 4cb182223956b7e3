package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/otelbus"
)

// tracing is the daemon's span export (--otlp-endpoint): the bus's spans
// (see package otelbus), batched and sent over OTLP/HTTP. A nil *tracing
// is export off.
type tracing struct {
	tp *sdktrace.TracerProvider
	tr *otelbus.Tracer
}

// startTracing sets up the export to endpoint (HOST:PORT), over plain HTTP
// when insecure, else HTTPS; it connects to nothing yet. With no endpoint it
// returns nil. A bad endpoint is a usage error. No OpenTelemetry global is
// set: the daemon's own provider and the W3C propagator are used.
func startTracing(endpoint string, insecure bool) (*tracing, error) {
	if endpoint == "" {
		if insecure {
			return nil, usagef("--otlp-insecure: needs --otlp-endpoint")
		}
		return nil, nil
	}
	host, port, err := net.SplitHostPort(endpoint)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return nil, usagef("--otlp-endpoint: %q is not HOST:PORT, such as 127.0.0.1:4318", endpoint)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(endpoint)}
	if insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("agentbus"), semconv.ServiceVersion(moduleVersion())))
	if err != nil {
		_ = exp.Shutdown(context.Background())
		return nil, fmt.Errorf("otlp resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	tr, err := otelbus.New(tp)
	if err != nil {
		_ = tp.Shutdown(context.Background())
		return nil, err
	}
	return &tracing{tp: tp, tr: tr}, nil
}

// config returns cfg traced, if export is on.
func (t *tracing) config(cfg agentbus.Config) agentbus.Config {
	if t == nil {
		return cfg
	}
	return t.tr.Config(cfg)
}

// shutdown exports the spans still batched and stops the export, waiting at
// most timeout; what could not be sent is logged.
func (t *tracing) shutdown(log *slog.Logger, timeout time.Duration) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := t.tp.Shutdown(ctx); err != nil {
		log.Warn("otlp: spans not exported", "error", err)
	}
}
