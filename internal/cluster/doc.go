// Package cluster runs real chains for end-to-end tests: a ZooKeeper server
// (through zktest) and table_server processes on loopback, which a test can
// kill, terminate, freeze, resume, restart and add to while clients use the
// chain. It also owns the tools to judge such a run: a Load of concurrent
// clients that records every operation in a History, and a checker that
// tests the History for linearizability with porcupine, against a model of a
// key-value table partitioned by key.
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
// CHAINTABLE_KEEP_LOGS=1 keeps the logs of passing tests too.
package cluster
