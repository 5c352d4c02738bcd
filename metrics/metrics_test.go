package metrics_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/metrics"
	"github.com/chaintable/chaintable/srv"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// serve starts a server for h over store and metrics for src on free
// loopback ports, both stopped when the test ends.
func serve(t *testing.T, h srv.Handler, store *srv.Store, src metrics.Sources) (addr, metricsAddr string) {
	t.Helper()
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: h, Stats: store.Stats, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	m, err := metrics.Listen("127.0.0.1:0", src, false, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return s.Addr(), m.Addr()
}

func client(t *testing.T, addr string) *cli.Client {
	t.Helper()
	c, err := cli.Dial(context.Background(), cli.Direct(addr), cli.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestChainNodeMetrics runs a chain member alone in the process: its
// counters move with the requests it serves, and /healthz follows its
// place in the chain.
func TestChainNodeMetrics(t *testing.T) {
	store, err := srv.NewStore(4)
	if err != nil {
		t.Fatal(err)
	}
	node := chain.NewNode(chain.NodeConfig{Store: store, Logger: quiet})
	t.Cleanup(node.Close)
	addr, maddr := serve(t, node, store, metrics.Sources{Stats: store.Stats, Table: store.Table, Node: node})

	if code, body := health(t, maddr); code != http.StatusServiceUnavailable || !strings.Contains(body, "role=none") {
		t.Errorf("healthz before the node has a place: %d %q, want 503 with role=none", code, body)
	}
	const self = "node0000000001"
	node.Rejoin(self)
	if err := node.SetView([]chain.Member{{Name: self, Addr: addr}}); err != nil {
		t.Fatal(err)
	}
	if code, body := health(t, maddr); code != http.StatusOK || !strings.Contains(body, "role=head+tail") {
		t.Errorf("healthz of the only member: %d %q, want 200 with role=head+tail", code, body)
	}

	before := scrape(t, maddr)
	checkConventions(t, before)
	c := client(t, addr)
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c"} {
		if err := c.Put(ctx, k, []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "missing"); err == nil {
		t.Fatal("get of a missing key succeeded")
	}
	after := scrape(t, maddr)

	moved := []struct {
		name   string
		labels []string
		by     float64
	}{
		{"chaintable_requests_total", []string{"op", "put", "status", "ok"}, 3},
		{"chaintable_requests_total", []string{"op", "get", "status", "ok"}, 1},
		{"chaintable_requests_total", []string{"op", "get", "status", "not_found"}, 1},
		{"chaintable_chain_write_duration_seconds", nil, 3},
		{"chaintable_table_operation_duration_seconds", nil, 5},
		{"chaintable_chain_applied_sequence", nil, 3},
		{"chaintable_chain_committed_sequence", nil, 3},
		{"chaintable_table_keys", nil, 3},
		{"chaintable_connections_opened_total", nil, 1},
	}
	for _, m := range moved {
		was, _ := before.value(m.name, m.labels...)
		if now := after.must(t, m.name, m.labels...); now-was != m.by {
			t.Errorf("%s%v went from %v to %v, want up by %v", m.name, m.labels, was, now, m.by)
		}
	}
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"chaintable_chain_role", []string{"role", "head+tail"}, 1},
		{"chaintable_chain_role", []string{"role", "head"}, 0},
		{"chaintable_chain_serving", nil, 1},
		{"chaintable_chain_position", nil, 0},
		{"chaintable_chain_members", nil, 1},
		{"chaintable_chain_writes_in_flight", nil, 0},
		{"chaintable_chain_lease", []string{"kind", "session"}, 1},
		{"chaintable_connections_open", nil, 1},
	} {
		if got := after.must(t, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}

	// Dropped from the view, as when its session expired.
	if err := node.SetView(nil); err != nil {
		t.Fatal(err)
	}
	if code, body := health(t, maddr); code != http.StatusServiceUnavailable || !strings.Contains(body, "role=none") {
		t.Errorf("healthz after losing its place: %d %q, want 503 with role=none", code, body)
	}
	dropped := scrape(t, maddr)
	if got := dropped.must(t, "chaintable_chain_serving"); got != 0 {
		t.Errorf("chaintable_chain_serving = %v after losing its place, want 0", got)
	}
	if got := dropped.must(t, "chaintable_chain_position"); got != -1 {
		t.Errorf("chaintable_chain_position = %v after losing its place, want -1", got)
	}
}

// TestStandaloneMetrics checks a server outside any chain: no chain or
// ZooKeeper metrics, and always healthy.
func TestStandaloneMetrics(t *testing.T) {
	store, err := srv.NewStore(4)
	if err != nil {
		t.Fatal(err)
	}
	addr, maddr := serve(t, store, store, metrics.Sources{Stats: store.Stats, Table: store.Table})
	c := client(t, addr)
	if err := c.Put(context.Background(), "k", make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	f := scrape(t, maddr)
	checkConventions(t, f)
	for name := range f {
		if strings.HasPrefix(name, "chaintable_chain_") || strings.HasPrefix(name, "chaintable_zk_") {
			t.Errorf("standalone server exports %s", name)
		}
	}
	if got := f.must(t, "chaintable_requests_total", "op", "put", "status", "ok"); got != 1 {
		t.Errorf("puts counted: %v, want 1", got)
	}
	if got := f.must(t, "chaintable_table_bytes", "kind", "entries"); got < 101 {
		t.Errorf("entry bytes %v for a 1-byte key and a 100-byte value", got)
	}
	if code, body := health(t, maddr); code != http.StatusOK || body != "ok standalone" {
		t.Errorf("healthz: %d %q, want 200 ok standalone", code, body)
	}
}

// TestScrapesDuringLoad scrapes a chain member over and over while
// clients write and read: no data race (under -race), and once the load
// stops the counters hold every request, none lost or counted twice.
func TestScrapesDuringLoad(t *testing.T) {
	store, err := srv.NewStore(4)
	if err != nil {
		t.Fatal(err)
	}
	node := chain.NewNode(chain.NodeConfig{Store: store, Logger: quiet})
	t.Cleanup(node.Close)
	addr, maddr := serve(t, node, store, metrics.Sources{Stats: store.Stats, Table: store.Table, Node: node})
	node.Rejoin("node0000000001")
	if err := node.SetView([]chain.Member{{Name: "node0000000001", Addr: addr}}); err != nil {
		t.Fatal(err)
	}
	const clients, each = 4, 200
	stop, done := make(chan struct{}), make(chan error, 1)
	scrapes := 0
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := fetch(maddr); err != nil {
				done <- err
				return
			}
			scrapes++
		}
	}()
	errs := make(chan error, clients)
	for i := range clients {
		c := client(t, addr)
		go func() {
			var err error
			for j := 0; j < each && err == nil; j++ {
				key := fmt.Sprintf("c%d-%d", i, j)
				if err = c.Put(context.Background(), key, []byte("v")); err == nil {
					_, err = c.Get(context.Background(), key)
				}
			}
			errs <- err
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("scrape during the load: %v", err)
	}
	f := scrape(t, maddr)
	for _, op := range []string{"put", "get"} {
		if got := f.must(t, "chaintable_requests_total", "op", op, "status", "ok"); got != clients*each {
			t.Errorf("%ss counted: %v, want %d", op, got, clients*each)
		}
	}
	if got := f.must(t, "chaintable_chain_applied_sequence"); got != clients*each {
		t.Errorf("applied sequence %v, want %d", got, clients*each)
	}
	t.Logf("%d scrapes during the load", scrapes)
}

// TestProfiles: the Go runtime's profiles are served next to the metrics
// only when asked for, and the metrics and health check stay as they are.
func TestProfiles(t *testing.T) {
	store, err := srv.NewStore(4)
	if err != nil {
		t.Fatal(err)
	}
	src := metrics.Sources{Stats: store.Stats, Table: store.Table}
	for _, tt := range []struct {
		profiling bool
		want      int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		t.Run(fmt.Sprintf("profiling=%v", tt.profiling), func(t *testing.T) {
			m, err := metrics.Listen("127.0.0.1:0", src, tt.profiling, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for path, want := range map[string]int{"/debug/pprof/cmdline": tt.want, "/debug/pprof/heap?debug=1": tt.want, "/metrics": http.StatusOK, "/healthz": http.StatusOK} {
				resp, err := http.Get("http://" + m.Addr() + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("GET %s: %s, want %d", path, resp.Status, want)
				}
			}
		})
	}
}
