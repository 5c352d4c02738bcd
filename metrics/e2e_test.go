package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/internal/cluster"
)

// waitHealth waits, at most timeout, until n's /healthz answers code, and
// returns the body it answered with.
func waitHealth(t *testing.T, n *cluster.Node, code int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, body := health(t, n.MetricsAddr)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /healthz still answers %d (%s) after %v, want %d", n, got, body, timeout, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestE2EMetrics runs a chain of three real table_server processes with
// metrics on: the counters of each node move with the requests it serves,
// every member reports the same sequence numbers, and the tail's /healthz
// turns 503 when it loses its place (cut off from ZooKeeper until its
// session expires) and 200 again once it has caught up.
func TestE2EMetrics(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Metrics: true})
	c.WaitTailServes(15 * time.Second)
	head, middle, tail := c.At(0), c.At(1), c.At(2)
	for _, n := range []*cluster.Node{head, middle, tail} {
		waitHealth(t, n, http.StatusOK, 15*time.Second)
	}
	headBefore, middleBefore, tailBefore := scrape(t, head.MetricsAddr), scrape(t, middle.MetricsAddr), scrape(t, tail.MetricsAddr)
	checkConventions(t, headBefore)

	cl := c.Client()
	ctx := context.Background()
	const puts, gets = 20, 10
	for i := range puts {
		if err := cl.Put(ctx, fmt.Sprintf("key%d", i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range gets {
		if _, err := cl.Get(ctx, fmt.Sprintf("key%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	headAfter, middleAfter, tailAfter := scrape(t, head.MetricsAddr), scrape(t, middle.MetricsAddr), scrape(t, tail.MetricsAddr)
	// Reads go to any member: together they answered every get.
	var answered float64
	for _, f := range [][2]families{{headBefore, headAfter}, {middleBefore, middleAfter}, {tailBefore, tailAfter}} {
		was, _ := f[0].value("chaintable_requests_total", "op", "get", "status", "ok")
		now, _ := f[1].value("chaintable_requests_total", "op", "get", "status", "ok")
		answered += now - was
	}
	if answered != gets {
		t.Errorf("the members counted %v gets answered, want %d", answered, gets)
	}
	for _, m := range []struct {
		node          string
		before, after families
		name          string
		labels        []string
		by            float64
	}{
		{"head", headBefore, headAfter, "chaintable_requests_total", []string{"op", "put", "status", "ok"}, puts},
		{"head", headBefore, headAfter, "chaintable_chain_write_duration_seconds", nil, puts},
		{"head", headBefore, headAfter, "chaintable_chain_applied_sequence", nil, puts},
		{"tail", tailBefore, tailAfter, "chaintable_chain_committed_sequence", nil, puts},
		{"tail", tailBefore, tailAfter, "chaintable_table_keys", nil, puts},
	} {
		was, _ := m.before.value(m.name, m.labels...)
		if now := m.after.must(t, m.name, m.labels...); now-was != m.by {
			t.Errorf("%s: %s%v went from %v to %v, want up by %v", m.node, m.name, m.labels, was, now, m.by)
		}
	}
	if n := headAfter.must(t, "chaintable_chain_replication_batch_writes"); n < 1 {
		t.Errorf("head: %v replication frames counted after %d puts", n, puts)
	}
	for _, m := range []struct {
		f      families
		name   string
		labels []string
		want   float64
	}{
		{headAfter, "chaintable_chain_role", []string{"role", "head"}, 1},
		{tailAfter, "chaintable_chain_role", []string{"role", "tail"}, 1},
		{tailAfter, "chaintable_chain_position", nil, 2},
		{headAfter, "chaintable_chain_members", nil, 3},
		{headAfter, "chaintable_zk_session_state", []string{"state", "connected"}, 1},
		{tailAfter, "chaintable_chain_successor_state", []string{"state", "none"}, 1},
	} {
		if got := m.f.must(t, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}
	// Every member applied the same writes.
	for _, n := range []*cluster.Node{head, middle, tail} {
		f := scrape(t, n.MetricsAddr)
		if a, cm := f.must(t, "chaintable_chain_applied_sequence"), f.must(t, "chaintable_chain_committed_sequence"); a != puts || cm != puts {
			t.Errorf("%s: applied %v, committed %v, want %d and %d", n, a, cm, puts, puts)
		}
	}

	// Every member takes every request (a put at the tail goes to the
	// head), and counts it by the status it answered.
	for _, any := range []struct {
		n          *cluster.Node
		req        *codec.MessageT
		op, status string
	}{
		{tail, codec.PutRequest("key0", []byte("v")), "put", "ok"},
		{head, codec.GetRequest("key0"), "get", "ok"},
		{middle, codec.GetRequest("missing"), "get", "not_found"},
	} {
		was, _ := scrape(t, any.n.MetricsAddr).value("chaintable_requests_total", "op", any.op, "status", any.status)
		cn, err := cli.DialConn(ctx, any.n.Addr)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cn.Do(ctx, any.req)
		if notFound := errors.Is(err, cli.ErrServer); err != nil && !(notFound && any.status == "not_found") {
			t.Fatalf("%s at %s: %v", any.op, any.n, err)
		}
		cn.Close()
		if now := scrape(t, any.n.MetricsAddr).must(t, "chaintable_requests_total", "op", any.op, "status", any.status); now != was+1 {
			t.Errorf("%s: %s answered %s counted %v times, want %v", any.n, any.op, any.status, now, was+1)
		}
	}

	// The tail loses its place: cut off from ZooKeeper, its session
	// expires, the chain drops it, and its leases run out.
	tail.CutZK()
	body := waitHealth(t, tail, http.StatusServiceUnavailable, 15*time.Second)
	t.Logf("cut-off tail: /healthz 503 %q", body)
	tail.HealZK()
	body = waitHealth(t, tail, http.StatusOK, 30*time.Second)
	t.Logf("healed tail: /healthz 200 %q", body)
	back := scrape(t, tail.MetricsAddr)
	for _, m := range []struct {
		name   string
		labels []string
		least  float64
	}{
		{"chaintable_zk_session_expiries_total", nil, 1},
		{"chaintable_zk_reconnects_total", nil, 1},
		{"chaintable_chain_snapshots_total", []string{"direction", "received"}, 2}, // its first join, and this one
		{"chaintable_chain_snapshot_bytes_total", []string{"direction", "received"}, float64(puts * len("key0value"))},
		{"chaintable_chain_applied_sequence", nil, puts},
	} {
		if got := back.must(t, m.name, m.labels...); got < m.least {
			t.Errorf("tail back in the chain: %s%v = %v, want at least %v", m.name, m.labels, got, m.least)
		}
	}
	if got := back.must(t, "chaintable_chain_role", "role", "tail"); got != 1 {
		t.Errorf("the node back in the chain is not its tail (chaintable_chain_role{role=tail} %v)", got)
	}
}
