package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a minimal OTLP/HTTP trace receiver on 127.0.0.1: it counts
// the POSTs to /v1/traces and keeps the spans they carry.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	posts int
	spans []*tracepb.Span
	res   []string // service.name of each resource
	bad   []string // what it could not decode
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg collector.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &msg)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || err != nil {
			r.bad = append(r.bad, req.Method+" "+req.URL.Path)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		r.posts++
		for _, rs := range msg.ResourceSpans {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					r.res = append(r.res, kv.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				r.spans = append(r.spans, ss.Spans...)
			}
		}
		out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// The daemon with --otlp-endpoint exports the bus's spans over OTLP/HTTP:
// they reach a receiver, at the latest when it shuts down.
func TestOTLPExport(t *testing.T) {
	r := newOTLPReceiver(t)
	endpoint := strings.TrimPrefix(r.srv.URL, "http://")
	d := startDaemon(t, "--otlp-endpoint", endpoint, "--otlp-insecure")
	c := dialClient(t, d.socket)
	_, err := c.Publish(context.Background(), "nobody.home", []byte(`1`))
	require.NoError(t, err)
	require.NoError(t, d.stop(t), d.log()) // flushes the batch

	r.mu.Lock()
	defer r.mu.Unlock()
	assert.Empty(t, r.bad)
	require.Positive(t, r.posts, "no span reached the receiver: %s", d.log())
	assert.Contains(t, r.res, "agentbus")
	byName := map[string]*tracepb.Span{}
	for _, s := range r.spans {
		byName[s.Name] = s
	}
	pub, dl := byName["publish nobody.home"], byName["dead_letter nobody.home"]
	require.NotNil(t, pub, "spans: %v", byName)
	require.NotNil(t, dl, "spans: %v", byName)
	assert.Equal(t, tracepb.Span_SPAN_KIND_PRODUCER, pub.Kind)
	assert.Equal(t, pub.SpanId, dl.ParentSpanId, "the dead letter is a child of the publish")
	attrs := map[string]string{}
	for _, kv := range pub.Attributes {
		attrs[kv.Key] = kv.GetValue().GetStringValue()
	}
	assert.Equal(t, "agentbus", attrs["messaging.system"])
	assert.Equal(t, "nobody.home", attrs["messaging.destination.name"])
}

func TestOTLPFlagErrors(t *testing.T) {
	missing := "/nonexistent/agentbus.sock"
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"no port", []string{"--otlp-endpoint", "collector"}, "--otlp-endpoint"},
		{"bad port", []string{"--otlp-endpoint", "collector:http"}, "--otlp-endpoint"},
		{"port out of range", []string{"--otlp-endpoint", "collector:70000"}, "--otlp-endpoint"},
		{"no host", []string{"--otlp-endpoint", ":4318"}, "--otlp-endpoint"},
		{"insecure alone", []string{"--otlp-insecure"}, "needs --otlp-endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := cli(t, missing, append([]string{"serve"}, tc.args...)...)
			assert.Equal(t, exitUsage, code, errOut)
			assert.Contains(t, errOut, tc.msg)
		})
	}
}
