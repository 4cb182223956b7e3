package supervisor

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a backoff timer's goroutine or a
// protoactor goroutine running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
