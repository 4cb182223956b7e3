// Package topics validates and matches NATS-style subjects.
//
// # Subjects and patterns
//
// A subject is a dot-separated list of tokens, such as "agents.coder.done".
// A pattern is a subject in which whole tokens may be wildcards:
//
//   - "*" matches exactly one token: "agents.*.done" matches
//     "agents.coder.done" but not "agents.done" or "agents.a.b.done".
//   - ">" matches one or more trailing tokens and must be the last token:
//     "events.>" matches "events.a" and "events.a.b" but not "events".
//
// The characters '*' and '>' are reserved: they may not appear inside a
// longer token of either a subject or a pattern.
//
// # Matching many patterns
//
// [Match] tests one pattern against one subject. [Tree] holds many patterns,
// each with a set of values (such as subscribers), and finds the values of
// every pattern that matches a subject by walking the subject's tokens, so
// the cost of a lookup does not grow with the number of patterns.
//
// Nothing in this package starts goroutines or imports other agentbus
// packages.
package topics
