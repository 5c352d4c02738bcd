// Package chain owns replication between the nodes of a chain: the
// protocol as a pure state machine (Machine), and the Node that drives it
// with sockets, serves clients through srv and follows the membership
// that ZooKeeper reports.
//
// The head assigns every write a sequence number, applies it and streams
// it to its successor; every node applies writes in sequence order and
// forwards them; the tail acknowledges, and acknowledgements travel back
// up. A write is committed, and its client answered, once the tail has
// applied it. Reads are served by the tail.
//
// A node acts as the tail when it has no successor, or when its successor
// is still catching up (it joined and is receiving a snapshot); in that
// case the node hands the tail role over, with a "live" marker, once the
// successor has acknowledged everything the node applied.
package chain
