// Package srv owns one node's serving path: the striped-lock hash table,
// the statistics of operations on it, request validation and execution
// (Store), and the gnet event-loop server that decodes frames, hands
// requests to a Handler and writes replies back in request order.
//
// The server never blocks an event loop: a Handler that cannot answer at
// once (a write waiting for the chain's tail) defers the reply, and the
// server keeps later replies on that connection queued behind it.
package srv
