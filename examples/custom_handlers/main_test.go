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
	require.NoError(t, run(t.Context(), &out))
	assert.Equal(t, `rules, in evaluation order:
  errors-to-alerts  -> alerts    priority 100 enabled true
  coder-events      -> audit-log priority  50 enabled true
  count-publishes   -> metrics   priority  10 enabled true
  count-direct      -> metrics   priority  10 enabled true
  audit-planner     -> audit-log priority   1 enabled true
  audit-debug       -> audit-log priority   0 enabled false
what each handler saw:
  alerts    PAGE on-call: "tests fail on CI"
  alerts    ticket: "style nit"
  audit-log direct planner->coder p50 "write the parser"
  audit-log heartbeat planner->coder p50
  audit-log publish coder->#agents.coder.done p50 "parser done"
  metrics   count direct
  metrics   count direct
  metrics   count publish
handler stats:
  alerts    handled 2 failed 0
  audit-log handled 3 failed 0
  metrics   handled 3 failed 0
`, out.String())
}
