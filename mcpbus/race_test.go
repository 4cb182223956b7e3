//go:build race

package mcpbus_test

const raceEnabled = true
