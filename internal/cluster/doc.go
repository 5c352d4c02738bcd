// Package cluster runs real chains for end-to-end tests: a ZooKeeper server
// or ensemble (through zktest) and table_server processes on loopback,
// which a test can kill, terminate, freeze, resume, restart, add to and
// partition while clients use the chain. Each node reaches ZooKeeper
// through fault-injecting netfault Proxies of its own (Node.CutZK), and with
// Options.NodeProxies clients and its predecessor reach it through another
// (Node.Partition), which resets or silently stalls connections.
//
// It also owns the tools to judge such a run: a Load of concurrent clients
// that records every operation in a History, a checker that tests the
// History for linearizability with porcupine, against a model of a
// key-value table partitioned by key, a check that no acknowledged write
// was lost, and a Recorder that splits a run into one phase per fault and
// sums it up in a Report: operations, errors, the longest unavailability,
// lost writes and porcupine's verdict, phase by phase.
//
// table_server is built once per test binary, from the module this package
// belongs to, into a temporary directory that the next build removes once
// the binary that made it has exited. Every process a Cluster starts is
// killed by its PID when the test ends; node logs are kept in a directory
// that is removed when the test passes (unless CHAINTABLE_KEEP_LOGS=1) and
// named in the test log when it fails, with the last lines of each.
//
// Environment: CHAINTABLE_SERVER names a table_server to use instead of
// building one, CHAINTABLE_SERVER_RACE=1 builds it with the race detector,
// CHAINTABLE_KEEP_LOGS=1 keeps the logs of passing tests too,
// CHAINTABLE_FAULT_REPORT=path writes every published Report to path.
package cluster
