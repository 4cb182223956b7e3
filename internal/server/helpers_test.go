package server_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// shortDir returns a directory with a path short enough for a socket
// (sun_path holds 108 bytes; t.TempDir() paths can be longer).
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ab")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
