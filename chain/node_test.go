package chain

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/srv"
)

// testNode is a chain member on loopback whose membership the test feeds
// directly; the ZooKeeper side is tested in zkwatch and end to end.
type testNode struct {
	name   string
	node   *Node
	server *srv.Server
	store  *srv.Store

	zkDown    atomic.Bool // the node's ZooKeeper session stops being renewed
	zkLeaseMu sync.Mutex
	zkLease   time.Time
}

// sessionLease plays zkwatch.Client.Lease: a lease renewed on every call
// while ZooKeeper is up, and left to run out while it is down.
func (tn *testNode) sessionLease() time.Time {
	tn.zkLeaseMu.Lock()
	defer tn.zkLeaseMu.Unlock()
	if !tn.zkDown.Load() {
		tn.zkLease = time.Now().Add(testSession)
	}
	return tn.zkLease
}

// testLease is the nodes' lease term in these tests, and testSession
// their ZooKeeper session timeout.
const (
	testLease   = 400 * time.Millisecond
	testSession = 300 * time.Millisecond
)

func logger() *slog.Logger {
	if os.Getenv("CHAIN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startNode(t *testing.T, name string) *testNode { return startNodeTB(t, name) }

func startNodeTB(t testing.TB, name string) *testNode {
	t.Helper()
	store, _ := srv.NewStore(8)
	tn := &testNode{name: name, store: store}
	n := NewNode(NodeConfig{Store: store, Logger: logger().With("node", name), LeaseTerm: testLease, SessionLease: tn.sessionLease})
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: n, Stats: store.Stats, Logger: logger(), EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	tn.node, tn.server = n, s
	n.Rejoin(name)
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	if tn.server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tn.server.Stop(ctx)
	tn.node.Close()
	tn.server = nil
}

func setViews(nodes ...*testNode) {
	var members []Member
	for _, n := range nodes {
		members = append(members, Member{Name: n.name, Addr: n.server.Addr()})
	}
	for _, n := range nodes {
		n.node.SetView(members)
	}
}

type wire struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialWire(t *testing.T, addr string) *wire {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &wire{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (w *wire) do(req *codec.MessageT) *codec.MessageT {
	w.t.Helper()
	b, _ := codec.AppendMessage(nil, req)
	w.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.conn.Write(b); err != nil {
		w.t.Fatal(err)
	}
	reply := new(codec.MessageT)
	if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, reply); err != nil {
		w.t.Fatalf("reply: %v", err)
	}
	return reply
}

// eventually retries f until it returns nil or time runs out.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func put(t *testing.T, head *testNode, key, value string) {
	t.Helper()
	w := dialWire(t, head.server.Addr())
	if r := w.do(codec.PutRequest(key, []byte(value))); r.Opcode != codec.OpPut+1 {
		t.Fatalf("put %s at %s: %v (%s)", key, head.name, r, head.node.State())
	}
}

func get(t *testing.T, tail *testNode, key string) (string, error) {
	w := dialWire(t, tail.server.Addr())
	r := w.do(codec.GetRequest(key))
	if r.Opcode != codec.OpGet+1 {
		return "", fmt.Errorf("get %s at %s: %v (%s)", key, tail.name, r, tail.node.State())
	}
	return string(r.Value), nil
}

func TestNodeChainReplicatesAndFailsOver(t *testing.T) {
	a, b, c := startNode(t, "node0000000001"), startNode(t, "node0000000002"), startNode(t, "node0000000003")
	setViews(a, b, c)
	for i := range 50 {
		put(t, a, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
	}
	// A write is acknowledged only once the tail has it.
	for _, n := range []*testNode{a, b, c} {
		if v, _ := n.store.Table.Get("k49"); string(v) != "v49" {
			t.Fatalf("%s lacks an acknowledged write", n.name)
		}
	}
	// Reads go to the tail only; writes to the head only.
	if r := dialWire(t, a.server.Addr()).do(codec.GetRequest("k1")); r.Status != codec.Status_STATUS_NOT_TAIL {
		t.Fatalf("read at the head: %v", r)
	}
	if r := dialWire(t, c.server.Addr()).do(codec.PutRequest("x", nil)); r.Status != codec.Status_STATUS_NOT_HEAD {
		t.Fatalf("write at the tail: %v", r)
	}

	b.stop() // the middle dies
	setViews(a, c)
	for i := 50; i < 80; i++ {
		put(t, a, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
	}
	if v, err := get(t, c, "k79"); err != nil || v != "v79" {
		t.Fatalf("after the middle died: %q %v", v, err)
	}

	d := startNode(t, "node0000000004") // joins as the new tail
	setViews(a, c, d)
	eventually(t, "new tail serves reads", func() error {
		_, err := get(t, d, "k0")
		return err
	})
	for i := range 80 {
		if v, err := get(t, d, fmt.Sprintf("k%d", i)); err != nil || v != fmt.Sprintf("v%d", i) {
			t.Fatalf("new tail: k%d = %q, %v", i, v, err)
		}
	}

	c.stop() // the middle again
	setViews(a, d)
	put(t, a, "after", "c died")
	a.stop() // and the head
	setViews(d)
	put(t, d, "last", "one standing")
	if v, err := get(t, d, "after"); err != nil || v != "c died" {
		t.Fatalf("last node: %q %v", v, err)
	}
	if d.store.Table.Size() != 82 {
		t.Fatalf("last node holds %d keys, want 82", d.store.Table.Size())
	}
}

func TestNodeJoinUnderLoad(t *testing.T) {
	a, b := startNode(t, "node0000000001"), startNode(t, "node0000000002")
	setViews(a, b)
	big := strings.Repeat("x", 1000)
	for i := range 3000 {
		put(t, a, fmt.Sprintf("k%d", i), big)
	}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		w := dialWire(t, a.server.Addr())
		i := 0
		for {
			select {
			case <-stop:
				done <- i
				return
			default:
			}
			if r := w.do(codec.PutRequest(fmt.Sprintf("load%d", i), []byte(fmt.Sprint(i)))); r.Opcode != codec.OpPut+1 {
				t.Errorf("put under load: %v", r)
			}
			i++
		}
	}()
	c := startNode(t, "node0000000003")
	setViews(a, b, c)
	eventually(t, "joined node serves reads", func() error {
		_, err := get(t, c, "k1")
		return err
	})
	close(stop)
	n := <-done
	if n == 0 {
		t.Fatal("no writes ran during the join")
	}
	for i := range n {
		if v, err := get(t, c, fmt.Sprintf("load%d", i)); err != nil || v != fmt.Sprint(i) {
			t.Fatalf("write %d acknowledged during the join: %q %v", i, v, err)
		}
	}
	if c.store.Table.Size() != a.store.Table.Size() {
		t.Fatalf("joined node has %d keys, head %d", c.store.Table.Size(), a.store.Table.Size())
	}
}

func TestNodeRefusesStrayReplication(t *testing.T) {
	a, b := startNode(t, "node0000000001"), startNode(t, "node0000000002")
	setViews(a, b)
	put(t, a, "k", "v")
	stray := dialWire(t, b.server.Addr())
	w := &codec.WriteT{Seq: 2, Op: codec.OpPut, Key: "k", Value: []byte("forged")}
	tests := []struct {
		name string
		req  *codec.MessageT
	}{
		{"replicate without hello", &codec.MessageT{Opcode: codec.MessageT_OP_REPLICATE, From: a.name, To: b.name, Writes: []*codec.WriteT{w}}},
		{"snapshot without hello", &codec.MessageT{Opcode: codec.MessageT_OP_SNAPSHOT, From: a.name, To: b.name, Reset_: true, Done: true}},
		{"hello from a non-member", &codec.MessageT{Opcode: codec.MessageT_OP_HELLO, From: "node0000000099", To: b.name}},
		{"hello to someone else", &codec.MessageT{Opcode: codec.MessageT_OP_HELLO, From: a.name, To: "node0000000099"}},
		{"unknown chain opcode", &codec.MessageT{Opcode: 130, From: a.name, To: b.name}},
	}
	for _, tt := range tests {
		if r := stray.do(tt.req); r.Opcode != codec.OpError {
			t.Errorf("%s: %v", tt.name, r)
		}
	}
	if v, err := get(t, b, "k"); err != nil || v != "v" {
		t.Fatalf("after stray messages the tail has k=%q (%v)", v, err)
	}
}

func TestNodeServesWhileZooKeeperIsAway(t *testing.T) {
	a, b, c := startNode(t, "node0000000001"), startNode(t, "node0000000002"), startNode(t, "node0000000003")
	setViews(a, b, c)
	put(t, a, "k", "before")
	time.Sleep(testLease / 2) // a few heartbeats: leases granted
	for _, n := range []*testNode{a, b, c} {
		n.zkDown.Store(true) // ZooKeeper restarts: no session is renewed
	}
	deadline := time.Now().Add(4 * testLease)
	for i := 0; time.Now().Before(deadline); i++ {
		put(t, a, "k", fmt.Sprint(i))
		if v, err := get(t, c, "k"); err != nil || v != fmt.Sprint(i) {
			t.Fatalf("read %d without ZooKeeper: %q, %v", i, v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Cut off from its predecessor too, the tail stops within its lease.
	b.stop()
	start := time.Now()
	eventually(t, "isolated tail stops serving", func() error {
		if _, err := get(t, c, "k"); err == nil {
			return fmt.Errorf("still serving after %v", time.Since(start))
		}
		return nil
	})
	if d := time.Since(start); d > testLease+200*time.Millisecond {
		t.Fatalf("isolated tail served for %v, lease term %v", d, testLease)
	}
}

// BenchmarkChainPut measures pipelined puts through chains of one to
// three nodes in one process: the CPU per write of all roles together.
func BenchmarkChainPut(b *testing.B) {
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchmarkChainPut(b, n) })
	}
}

func benchmarkChainPut(b *testing.B, n int) {
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = startNodeTB(b, fmt.Sprintf("node%010d", i+1))
	}
	setViews(nodes...)
	const conns, depth = 50, 16
	var batch []byte
	for i := range depth {
		batch = append(batch, mustFrame(b, codec.PutRequest(fmt.Sprintf("key:%d", i), make([]byte, 32)))...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/(conns*depth) + 1
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", nodes[0].server.Addr())
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			for range per {
				if _, err := conn.Write(batch); err != nil {
					b.Error(err)
					return
				}
				for range depth {
					p, err := codec.ReadFrame(r, codec.DefaultMaxFrame)
					if err != nil || len(p) == 0 {
						b.Errorf("reply: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

func mustFrame(tb testing.TB, m *codec.MessageT) []byte {
	b, err := codec.AppendMessage(nil, m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
