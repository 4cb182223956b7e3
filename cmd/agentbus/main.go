// Command agentbus runs the agentbus daemon and talks to it.
//
//	agentbus serve                       # run the daemon on the default socket
//	agentbus sub 'progress.>'            # print messages published on progress.*
//	agentbus pub progress.build '{"done":50}'
//	agentbus req worker '{"task":"lint"}'
//	agentbus agents | stats | dlq list | history
//
// `agentbus --help` lists the common flows; docs/cli.md is the full
// reference. Every command takes --socket (default $AGENTBUS_SOCKET, else
// $XDG_RUNTIME_DIR/agentbus.sock, else /tmp/agentbus-$UID/agentbus.sock).
// Exit codes: 0 success, 1 the operation failed (the daemon refused it, it
// timed out, …), 2 bad usage (flags, arguments, payload, config), 3 the
// daemon could not be reached or the connection to it was lost.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"
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

// unreachableError marks an error as "the daemon could not be reached, or
// the connection to it was lost" (exit code 3).
type unreachableError struct{ err error }

func (e unreachableError) Error() string { return e.err.Error() }
func (e unreachableError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code. Errors are
// printed on stderr as one line, "agentbus: " and what went wrong.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := newRoot(stdin, stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "agentbus:", strings.TrimPrefix(err.Error(), "agentbus: "))
	var u usageError
	var n unreachableError
	switch {
	case errors.As(err, &u):
		return exitUsage
	case errors.As(err, &n):
		return exitUnreachable
	default:
		return exitFailed
	}
}

// isTerminal reports whether f is a file open on a terminal.
func isTerminal(f any) bool {
	file, ok := f.(*os.File)
	return ok && term.IsTerminal(int(file.Fd()))
}
