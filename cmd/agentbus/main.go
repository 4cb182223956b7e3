// Command agentbus runs the agentbus daemon and talks to it.
//
//	agentbus serve                       # run the daemon on the default socket
//	agentbus sub 'progress.>'            # print messages published on progress.*
//	agentbus pub progress.build '{"done":50}'
//	agentbus req --to worker '{"task":"lint"}'
//	agentbus stats | dlq list | history
//
// Every command takes --socket (default $XDG_RUNTIME_DIR/agentbus.sock, or
// /tmp/agentbus-$UID/agentbus.sock) and --json for machine-readable output.
// Exit codes: 0 success, 1 the operation failed (the daemon refused it, it
// timed out, …), 2 bad usage (flags, arguments, config), 3 the daemon could
// not be reached.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitUnreachable = 3
)

// usageError marks an error as bad usage (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// unreachableError marks an error as "the daemon could not be reached"
// (exit code 3).
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }
func (e unreachableError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := newRoot(stdin, stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "agentbus:", err)
	var u usageError
	var n unreachableError
	switch {
	case errors.As(err, &u), isCobraUsage(err):
		return exitUsage
	case errors.As(err, &n):
		return exitUnreachable
	default:
		return exitFailed
	}
}
