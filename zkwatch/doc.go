// Package zkwatch owns the chain's membership in ZooKeeper, for servers and
// clients alike: the persistent node ChainPath, the ephemeral sequential
// member nodes under it, and the live, ordered view of them.
//
// Each server registers a member node holding its "ip:port" and a trailing
// NUL byte, as course C clients expect. Members are ordered by the sequence
// number ZooKeeper appends to their names: the lowest is the head, the
// highest the tail. Register uses plain "node0000000001" names, as course
// C servers do, so that course clients, which order members by comparing
// whole names, find the same head and tail; the protected names of older
// versions ("_c_<guid>-node0000000001") are read alike.
//
// A Client holds one ZooKeeper session. Watch follows the chain; Register
// puts the caller in it and keeps it there: ZooKeeper deletes a member node
// when its session expires, and the Registration then creates a new one,
// under a new name, as soon as the Client has a new session. Session reports
// contact with ZooKeeper, which a server needs to stop serving before
// ZooKeeper drops it from the chain.
package zkwatch
