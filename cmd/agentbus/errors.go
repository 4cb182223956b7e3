package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/descartes/agentbus"
	"github.com/descartes/agentbus/client"
)

// explained is an error told in the CLI's words: its text is msg, and it
// wraps the error it explains, so errors.Is and errors.As still see that.
type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// explainf returns err with the text format gives.
func explainf(err error, format string, args ...any) error {
	return &explained{msg: fmt.Sprintf(format, args...), err: err}
}

// prefixes are the package prefixes of the errors the CLI passes on: it
// prints "agentbus: " once, before its own text.
var prefixes = []string{"agentbus daemon: ", "agentbus: ", "client: ", "protocol: ", "transport: "}

// plain returns err's text without the package prefixes at its start and
// after each ": ", so that a wrapped error does not repeat them.
func plain(err error) string {
	s := err.Error()
	for again := true; again; {
		again = false
		for _, p := range prefixes {
			if strings.HasPrefix(s, p) {
				s, again = s[len(p):], true
			}
		}
	}
	for _, p := range prefixes {
		s = strings.ReplaceAll(s, ": "+p, ": ")
	}
	return s
}

// daemonErr explains err, which an operation on the daemon returned, in
// the words the error calls for; what names the operation ("send to
// \"worker\""). The errors that only one command meets are explained by
// that command before it calls daemonErr.
func (g *globals) daemonErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrDisconnected):
		return unreachableError{explainf(err, "%s: the connection to the daemon at %s was lost before it answered "+
			"(did the daemon stop?); whether it carried the operation out is unknown", what, g.socket)}
	case errors.Is(err, context.Canceled):
		return explainf(err, "%s: interrupted", what)
	case errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, agentbus.ErrRequestTimeout):
		return explainf(err, "%s: the daemon did not answer within %v (--timeout)", what, g.timeout)
	case errors.Is(err, agentbus.ErrClosed):
		return explainf(err, "%s: the daemon is shutting down", what)
	case errors.Is(err, agentbus.ErrUnknownLetter):
		return explainf(err, "%s: the dead-letter queue does not hold it (never there, purged, or evicted)", what)
	case errors.Is(err, agentbus.ErrInvalidSubject):
		return usageError{explainf(err, "%s: %s", what, plain(err))}
	default:
		return explainf(err, "%s: %s", what, plain(err))
	}
}
