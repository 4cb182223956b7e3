package server_test

import "github.com/descartes/agentbus/transport/transporttest"

// shortDir returns a directory whose path fits a socket address.
var shortDir = transporttest.ShortDir
