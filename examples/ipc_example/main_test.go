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
	got := out.String()
	for _, want := range []string{
		`coder got {"action":"start"} from planner`,
		`reviewer answered {"verdict":"approved"}`,
		"runner handles \"hotfix\" (priority 90)\nrunner handles \"tests\" (priority 50)\nrunner handles \"lint\" (priority 10)\n",
		"pending: 5 of 10000",
		"sixth send: backpressure timeout = true",
		`dead letter: expired "stale status" (agent "runner")`,
		`dead letter: orphan_response 1 (agent "")`,
	} {
		assert.Contains(t, got, want)
	}
	assert.NotContains(t, got, `runner handles "stale status"`)
}
