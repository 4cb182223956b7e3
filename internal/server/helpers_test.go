package server_test

import (
	"github.com/descartes/agentbus/internal/daemontest"
	"github.com/descartes/agentbus/transport/transporttest"
)

// shortDir returns a directory whose path fits a socket address.
var shortDir = transporttest.ShortDir

// serve starts a bus configured by cfg and a daemon configured by scfg (its
// Bus set to that bus) serving l, and stops all three when tb ends.
var serve = daemontest.ServeListener
