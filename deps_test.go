package agentbus_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// integrationModules are the libraries that only the integration subpackages
// (prom, otelbus, watermillbus, mcpbus) may import.
var integrationModules = []string{
	"github.com/prometheus/",
	"go.opentelemetry.io/otel/sdk",
	"go.opentelemetry.io/otel/exporters",
	"github.com/ThreeDotsLabs/watermill",
	"github.com/modelcontextprotocol/",
}

// TestCoreImportsNoIntegration checks that no package of the core (the root
// and everything it imports from this module) imports an integration's
// library. protoactor-go's actor package itself imports Prometheus and the
// OpenTelemetry SDK (for its optional metrics, actor/config.go), so those
// modules are in the core's build; the bus neither imports nor uses them.
func TestCoreImportsNoIntegration(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.CommandContext(t.Context(), goBin, "list", "-deps",
		"-f", "{{.ImportPath}} {{join .Imports \" \"}}", ".").Output()
	require.NoError(t, err)
	ours := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := fields[0]
		if pkg != "github.com/descartes/agentbus" && !strings.HasPrefix(pkg, "github.com/descartes/agentbus/") {
			continue
		}
		ours++
		for _, imp := range fields[1:] {
			for _, mod := range integrationModules {
				assert.False(t, strings.HasPrefix(imp, mod), "%s imports %s", pkg, imp)
			}
		}
	}
	assert.Greater(t, ours, 5, "the core's own packages were listed")
}
