// Package routing decides which named handlers see a message.
//
// # Rules
//
// A [Rule] names a handler and filters messages by type, sender, recipient
// and topic; an empty filter matches anything, and the topic filter may be a
// wildcard pattern as in package topics. Rules have a priority: higher
// priorities are evaluated first, and rules of equal priority in the order
// they were added.
//
// # Tables
//
// A [Table] is an immutable, indexed set of rules. Changes return a new
// Table (copy on write), so a router can keep the current one behind an
// atomic pointer: readers match without locks while a writer builds the
// next table. [Table.Match] returns the enabled rules that match a message,
// in evaluation order, with each handler at most once.
//
// Nothing in this package starts goroutines.
package routing
