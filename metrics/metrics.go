// Package metrics exposes a node's instruments to Prometheus: the
// collectors that read, at each scrape, the counters and state that srv,
// chain and zkwatch keep anyway, and the HTTP endpoint that serves them at
// /metrics with a health check at /healthz.
//
// Nothing here runs on a request's path: serving requests costs the
// atomic additions those packages make, and a scrape costs a pass over
// their counters and the table's stripes.
package metrics

import (
	"math"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/zkwatch"
)

// Sources are what a node's metrics read at each scrape.
type Sources struct {
	// Stats are the server's request and connection counters; required.
	Stats *srv.Stats
	// Table is the node's table; required.
	Table *srv.Table
	// Node is the chain member; nil for a standalone server, which then
	// has no chaintable_chain_ metrics.
	Node *chain.Node
	// ZK is the node's ZooKeeper client; nil for a standalone server,
	// which then has no chaintable_zk_ metrics.
	ZK *zkwatch.Client
}

// NewRegistry returns a registry of the node's metrics, with the Go
// runtime's and the process's.
func NewRegistry(src Sources) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&serverCollector{src.Stats, src.Table})
	if src.Node != nil {
		reg.MustRegister(&chainCollector{src.Node})
	}
	if src.ZK != nil {
		reg.MustRegister(&zkCollector{src.ZK})
	}
	return reg
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("chaintable_"+name, help, labels, nil)
}

// emit sends every desc of a collector's struct of descs.
func emit(ch chan<- *prometheus.Desc, ds ...*prometheus.Desc) {
	for _, d := range ds {
		ch <- d
	}
}

func counter(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// stateSet sends one gauge per state, 1 for the current one and 0 for the
// others, as Prometheus's state sets do.
func stateSet(ch chan<- prometheus.Metric, d *prometheus.Desc, states []string, current string) {
	for _, s := range states {
		ch <- gauge(d, bool01(s == current), s)
	}
}

// Durations are exposed in every other power-of-two bucket of
// srv.Pow2Histogram, from 2^10 ns (about 1 µs) to 2^34 ns (about 17 s):
// 13 buckets.
const (
	durationLow  = 10
	durationHigh = 34
	durationStep = 2
)

// durationHistogram converts nanoseconds counted by a srv.Pow2Histogram
// to a histogram in seconds.
func durationHistogram(d *prometheus.Desc, b srv.Pow2Buckets) prometheus.Metric {
	return pow2Histogram(d, b, durationLow, durationHigh, durationStep, func(i int) float64 {
		return math.Ldexp(1, i) / 1e9
	}, 1e-9)
}

// batchHistogram converts writes per frame counted by a
// srv.Pow2Histogram to a histogram with the bounds 1, 3, 7, ... 2047,
// exact for whole numbers: a frame carries at most 1024 writes.
func batchHistogram(d *prometheus.Desc, b srv.Pow2Buckets) prometheus.Metric {
	return pow2Histogram(d, b, 1, 11, 1, func(i int) float64 { return math.Ldexp(1, i) - 1 }, 1)
}

// pow2Histogram converts the buckets lo, lo+step, ... hi of b to a
// histogram whose bucket i has the upper bound bound(i), scaling the sum.
// Bucket i of b holds values below 2^i, so the cumulative count for bound
// i is the count of b's buckets 0 to i.
func pow2Histogram(d *prometheus.Desc, b srv.Pow2Buckets, lo, hi, step int, bound func(int) float64, scale float64) prometheus.Metric {
	buckets := make(map[float64]uint64, (hi-lo)/step+1)
	var below uint64
	next := lo
	for i, n := range b.Counts {
		below += n
		if i == next && i <= hi {
			buckets[bound(i)] = below
			next += step
		}
	}
	return prometheus.MustNewConstHistogram(d, below, float64(b.Sum)*scale, buckets)
}

// opLabels and statusLabels name srv.Stats's request rows and statuses.
var (
	opLabels = func() []string {
		names := make([]string, len(srv.RequestOps))
		for i, op := range srv.RequestOps {
			names[i] = strings.ToLower(strings.TrimPrefix(op.String(), "OP_"))
		}
		names[len(names)-1] = "other"
		return names
	}()
	statusLabels = func() []string {
		names := make([]string, srv.NumStatuses)
		for i := range names {
			names[i] = strings.ToLower(strings.TrimPrefix(codec.Status(i).String(), "STATUS_"))
		}
		return names
	}()
)

// serverCollector reads a server's srv.Stats and table.
type serverCollector struct {
	stats *srv.Stats
	table *srv.Table
}

var (
	requestsDesc       = desc("requests_total", "Client requests answered, by opcode and outcome status (ok, or the OP_ERROR reply's status).", "op", "status")
	opDurationDesc     = desc("table_operation_duration_seconds", "Time spent executing each table operation (a read, or a write whether from a client or replicated). Writes are timed by batch (a replication frame, or a client's run of writes in one pass), each counted at its batch's mean, which includes the batch's replication bookkeeping; the sum is exact.")
	connsOpenDesc      = desc("connections_open", "Client and replication connections open now.")
	connsOpenedDesc    = desc("connections_opened_total", "Connections accepted.")
	connsClosedDesc    = desc("connections_closed_total", "Connections closed, by reason: peer (closed by the other end, a network error, or shutdown), idle (-idle-timeout), unread (more than -max-unread reply bytes left unread, or, paused, sent past -reply-budget plus -max-frame of requests), bad_frame (a frame above -max-frame or unparsable framing), max_conns (over -max-conns).", "reason")
	pausesDesc         = desc("connections_paused_total", "Times a connection was paused for backpressure: its unsent replies reached -reply-budget, so its requests waited undecoded until its client read.")
	pausedDesc         = desc("connections_paused", "Connections paused for backpressure now.")
	heldBytesDesc      = desc("paused_held_bytes", "Bytes paused connections hold: replies not yet read and requests not yet decoded, as of the last look at each.")
	tableKeysDesc      = desc("table_keys", "Keys in the table.")
	tableBytesDesc     = desc("table_bytes", "Bytes the table's contents take, by kind: entries (keys, values and their lengths), garbage (replaced and deleted entries not yet compacted), index (hash index slots).", "kind")
	serverCollectorAll = []*prometheus.Desc{requestsDesc, opDurationDesc, connsOpenDesc, connsOpenedDesc, connsClosedDesc, pausesDesc, pausedDesc, heldBytesDesc, tableKeysDesc, tableBytesDesc}
)

// Describe sends the descriptions of every metric the collector makes.
func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) { emit(ch, serverCollectorAll...) }

// Collect reads the counters. Request counts are sent for every opcode
// with status ok, and for other statuses once they are counted.
func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	for i, row := range c.stats.Requests() {
		for j, n := range row {
			if n > 0 || j == int(codec.Status_STATUS_OK) {
				ch <- counter(requestsDesc, n, opLabels[i], statusLabels[j])
			}
		}
	}
	ch <- durationHistogram(opDurationDesc, c.stats.OpTime())
	_, _, open := c.stats.Snapshot()
	ch <- gauge(connsOpenDesc, float64(open))
	opened, closed := c.stats.Connections()
	ch <- counter(connsOpenedDesc, opened)
	for _, r := range srv.CloseReasons {
		ch <- counter(connsClosedDesc, closed[r], r.String())
	}
	pauses, paused, held := c.stats.Backpressure()
	ch <- counter(pausesDesc, pauses)
	ch <- gauge(pausedDesc, float64(paused))
	ch <- gauge(heldBytesDesc, float64(held))
	u := c.table.Usage()
	ch <- gauge(tableKeysDesc, float64(u.Keys))
	ch <- gauge(tableBytesDesc, float64(u.Entries), "entries")
	ch <- gauge(tableBytesDesc, float64(u.Garbage), "garbage")
	ch <- gauge(tableBytesDesc, float64(u.Index), "index")
}

// chainCollector reads a chain.Node's status.
type chainCollector struct{ node *chain.Node }

var (
	roles           = []string{chain.RoleNone, chain.RoleWaiting, chain.RoleJoining, chain.RoleHead, chain.RoleMiddle, chain.RoleTail, chain.RoleAlone}
	successorStates = []string{"none", "unknown", "syncing", "live"}

	roleDesc          = desc("chain_role", "The node's part in the chain, 1 for the current role: none (not a member), waiting (first, but may not lead), joining (catching up), head, middle, tail, head+tail.", "role")
	positionDesc      = desc("chain_position", "The node's index in its view of the chain, head 0; -1 when it is not in it.")
	membersDesc       = desc("chain_members", "Members in the node's view of the chain (0 when it is not in it).")
	servingDesc       = desc("chain_serving", "1 while the node can serve its role (as /healthz answers 200): a member that holds a lease, not leaving, taking writes at the head, answering reads as the tail, caught up elsewhere.")
	appliedDesc       = desc("chain_applied_sequence", "Sequence number of the last write the node applied.")
	committedDesc     = desc("chain_committed_sequence", "Sequence number up to which the node knows writes are committed (applied at the tail).")
	inFlightDesc      = desc("chain_writes_in_flight", "Writes the node applied that are not yet committed.")
	leaseDesc         = desc("chain_lease", "1 while the node holds the lease: session (ZooKeeper cannot have expired its session yet) or predecessor (read lease granted over the link).", "kind")
	successorDesc     = desc("chain_successor_state", "What the node knows of its successor, 1 for the current state: none (it is the tail), unknown (not yet handshaken), syncing (catching up), live.", "state")
	batchDesc         = desc("chain_replication_batch_writes", "Writes carried by each replication frame sent to the successor.")
	writeDurationDesc = desc("chain_write_duration_seconds", "At the head: time from taking a client write to answering it, once committed at the tail (or refused).")
	linkConnectsDesc  = desc("chain_link_connects_total", "Links to a successor that passed their handshake.")
	linkBreaksDesc    = desc("chain_link_breaks_total", "Links to a successor that ended or failed to open (each is retried).")
	snapBytesDesc     = desc("chain_snapshot_bytes_total", "Bytes of keys and values in snapshots, by direction: sent to a joining successor, or received from the predecessor.", "direction")
	snapsDesc         = desc("chain_snapshots_total", "Snapshots streamed to the end, by direction.", "direction")
	chainCollectorAll = []*prometheus.Desc{roleDesc, positionDesc, membersDesc, servingDesc, appliedDesc, committedDesc, inFlightDesc,
		leaseDesc, successorDesc, batchDesc, writeDurationDesc, linkConnectsDesc, linkBreaksDesc, snapBytesDesc, snapsDesc}
)

// Describe sends the descriptions of every metric the collector makes.
func (c *chainCollector) Describe(ch chan<- *prometheus.Desc) { emit(ch, chainCollectorAll...) }

// Collect reads the node's status.
func (c *chainCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.node.Status()
	stateSet(ch, roleDesc, roles, st.Role)
	ch <- gauge(positionDesc, float64(st.Position))
	ch <- gauge(membersDesc, float64(st.Members))
	ch <- gauge(servingDesc, bool01(st.Serving))
	ch <- gauge(appliedDesc, float64(st.Applied))
	ch <- gauge(committedDesc, float64(st.Committed))
	ch <- gauge(inFlightDesc, float64(st.Applied-min(st.Committed, st.Applied)))
	ch <- gauge(leaseDesc, bool01(st.SessionLease), "session")
	ch <- gauge(leaseDesc, bool01(st.PredLease), "predecessor")
	stateSet(ch, successorDesc, successorStates, st.SuccessorState)
	ch <- batchHistogram(batchDesc, st.Batches)
	ch <- durationHistogram(writeDurationDesc, st.WriteTime)
	ch <- counter(linkConnectsDesc, st.LinkConnects)
	ch <- counter(linkBreaksDesc, st.LinkBreaks)
	ch <- counter(snapBytesDesc, st.SnapshotBytesSent, "sent")
	ch <- counter(snapBytesDesc, st.SnapshotBytesReceived, "received")
	ch <- counter(snapsDesc, st.SnapshotsSent, "sent")
	ch <- counter(snapsDesc, st.SnapshotsReceived, "received")
}

// zkCollector reads a ZooKeeper client's session.
type zkCollector struct{ zc *zkwatch.Client }

var (
	sessionStates = []string{zkwatch.Disconnected.String(), zkwatch.Connected.String(), zkwatch.Expired.String(), zkwatch.Closed.String()}

	sessionDesc        = desc("zk_session_state", "The ZooKeeper session's state, 1 for the current one.", "state")
	sessionTimeoutDesc = desc("zk_session_timeout_seconds", "The session timeout ZooKeeper granted.")
	reconnectsDesc     = desc("zk_reconnects_total", "Times the client got a session back after losing contact with ZooKeeper.")
	expiriesDesc       = desc("zk_session_expiries_total", "ZooKeeper sessions that expired (the node then lost its place and registered again).")
	zkCollectorAll     = []*prometheus.Desc{sessionDesc, sessionTimeoutDesc, reconnectsDesc, expiriesDesc}
)

// Describe sends the descriptions of every metric the collector makes.
func (c *zkCollector) Describe(ch chan<- *prometheus.Desc) { emit(ch, zkCollectorAll...) }

// Collect reads the session.
func (c *zkCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.zc.Session()
	stateSet(ch, sessionDesc, sessionStates, s.State.String())
	ch <- gauge(sessionTimeoutDesc, s.Timeout.Seconds())
	reconnects, expiries := c.zc.Counts()
	ch <- counter(reconnectsDesc, reconnects)
	ch <- counter(expiriesDesc, expiries)
}
