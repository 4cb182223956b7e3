// Package watermillbus is a Watermill (github.com/ThreeDotsLabs/watermill)
// Publisher and Subscriber on an agentbus bus, in process on a
// *agentbus.Bus (NewLocal) or over the daemon's socket through package
// client (NewRemote). Go services that move messages with Watermill, its
// router and its middleware then talk to the bus's agents, and the bus's
// agents to them.
package watermillbus
