package topics_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The tests run protoactor actors, whose goroutines must all be gone when
// the tests end.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
