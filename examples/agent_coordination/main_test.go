package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, false))
	assert.Equal(t, `plan: 7 tasks for alice, bob, carol and dave (task 5 is poisoned)
coordinator: task 7 for dave not sent: agentbus: no such recipient: "dave"
status: alice has done 2
status: bob has done 1
status: carol has done 2
monitor saw 10 progress reports:
  progress.alice  task 1 started, task 1 done, task 4 started, task 4 done
  progress.bob    task 2 started, task 2 done
  progress.carol  task 3 started, task 3 done, task 6 started, task 6 done
supervision:
  bob: restart (failure 1) after: agentbus: handler of "bob" panicked: poisoned task 5
  bob restarted
statistics:
  sent 24 messages: direct 6, publish 10, request 4, response 4
  delivered 19, failed 1, expired 0, rejected 1 (no_recipient 1)
  dead letters 1 (handler_panic 1)
  deliveries: accepted 34 = handled 33 + dead-lettered 1 + retried 0 + in flight 0: balanced
  per topic:  progress.alice 4, progress.bob 2, progress.carol 4
  per sender: alice 5, bob 3, carol 5, coordinator 10, main 1
  agent        queued  handled  failed restarts
  alice             0        3       0        0
  bob               0        2       1        1
  carol             0        3       0        0
  coordinator       0        1       0        0
  monitor           0       10       0        0
  backpressure 0 of 10000, pending requests 0, pending retries 0
dead letters:
  handler_panic for bob: agentbus: handler of "bob" panicked: poisoned task 5
`, out.String())
}

func TestRunTimings(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, true))
	assert.Regexp(t, `delivery latency: p50 \S+, p99 \S+ over \d+ deliveries`, out.String())
}
