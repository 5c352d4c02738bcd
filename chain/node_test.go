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

// testLease is the nodes' lease term in these tests, testSession their
// ZooKeeper session timeout, and testHold how long they hold a request
// they cannot answer yet.
const (
	testLease   = 300 * time.Millisecond
	testSession = 400 * time.Millisecond
	testHold    = 300 * time.Millisecond
)

func logger() *slog.Logger {
	if os.Getenv("CHAIN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startNode(t *testing.T, name string) *testNode { return startNodeTB(t, name) }

func startNodeTB(t testing.TB, name string) *testNode { return startNodeLease(t, name, testLease) }

// startNodeLease is startNode with lease term lease.
func startNodeLease(t testing.TB, name string, lease time.Duration) *testNode {
	t.Helper()
	store, _ := srv.NewStore(8)
	tn := &testNode{name: name, store: store}
	n := NewNode(NodeConfig{Store: store, Logger: logger().With("node", name), LeaseTerm: lease, HoldTimeout: testHold, SessionLease: tn.sessionLease})
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: n, Stats: store.Stats, Logger: logger(), EventLoops: 2})
	if err != nil {
		t.Fatal(err)
	}
	n.UseServer(s)
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
	reply, err := w.try(req)
	if err != nil {
		w.t.Fatal(err)
	}
	return reply
}

// try sends req and returns the reply, or why none came: a node that
// cannot answer correctly closes the connection instead.
func (w *wire) try(req *codec.MessageT) (*codec.MessageT, error) {
	b, _ := codec.AppendMessage(nil, req)
	w.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.conn.Write(b); err != nil {
		return nil, err
	}
	reply := new(codec.MessageT)
	if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, reply); err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	return reply, nil
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
	r, err := w.try(codec.GetRequest(key))
	if err != nil {
		return "", fmt.Errorf("get %s at %s: %w (%s)", key, tail.name, err, tail.node.State())
	}
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
	// Every node answers reads, and takes writes for the head.
	for _, n := range []*testNode{a, b, c} {
		if v, err := get(t, n, "k1"); err != nil || v != "v1" {
			t.Fatalf("read at %s: %q, %v", n.name, v, err)
		}
	}
	if r := dialWire(t, c.server.Addr()).do(codec.PutRequest("x", nil)); r.Opcode != codec.OpPut+1 {
		t.Fatalf("write at the tail: %v", r)
	}
	if r := dialWire(t, b.server.Addr()).do(codec.DelRequest("x")); r.Opcode != codec.OpDel+1 {
		t.Fatalf("del at the middle: %v", r)
	}
	if _, ok := a.store.Table.Get("x"); ok {
		t.Fatal("the del forwarded to the head was not applied there")
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
	// Reads at the new node are answered from the first moment: it passes
	// them to its predecessor until it has caught up.
	for i := range 20 {
		if v, err := get(t, c, fmt.Sprintf("k%d", i)); err != nil || v != big {
			t.Fatalf("read at the joining node: %d bytes, %v", len(v), err)
		}
	}
	eventually(t, "joined node catches up", func() error {
		if !c.node.Live() {
			return fmt.Errorf("not live: %s", c.node.State())
		}
		return nil
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
	down := time.Now()
	// The chain serves on as long as the head's session lease lasts: the
	// leases down the chain come from it.
	for i := 0; time.Since(down) < testSession/2; i++ {
		put(t, a, "k", fmt.Sprint(i))
		if v, err := get(t, c, "k"); err != nil || v != fmt.Sprint(i) {
			t.Fatalf("read %d %v after ZooKeeper went away: %q, %v", i, time.Since(down), v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Past it, no node may answer: ZooKeeper could have dropped the head,
	// and a new chain taken writes without it.
	time.Sleep(time.Until(down.Add(testSession + testLease + leaseMargin)))
	for _, n := range []*testNode{a, b, c} {
		if v, err := get(t, n, "k"); err == nil {
			t.Fatalf("%s answered %q %v after ZooKeeper went away, past every lease (%s)", n.name, v, time.Since(down), n.node.State())
		}
	}
	for _, n := range []*testNode{a, b, c} {
		n.zkDown.Store(false)
	}
	eventually(t, "tail serves once ZooKeeper is back", func() error {
		_, err := get(t, c, "k")
		return err
	})
}

// TestNodeDroppedNodesServeNothingStale cuts the middle and the tail, not
// the head, off ZooKeeper, while the link between them stays up.
// ZooKeeper drops both and the head goes on alone; the two never learn
// it. The middle must stop leasing reads to the tail once its own lease
// ends, so that neither answers a read with a value older than the head's
// next acknowledged write.
func TestNodeDroppedNodesServeNothingStale(t *testing.T) {
	a, b, c := startNode(t, "node0000000001"), startNode(t, "node0000000002"), startNode(t, "node0000000003")
	setViews(a, b, c)
	put(t, a, "k", "before")
	time.Sleep(testLease / 2)
	b.zkDown.Store(true)
	c.zkDown.Store(true)
	time.Sleep(testSession) // ZooKeeper expires their sessions
	a.node.SetView([]Member{{Name: a.name, Addr: a.server.Addr()}})
	put(t, a, "k", "after") // the head waits out its own grant to b first
	acked := time.Now()
	for time.Since(acked) < 4*testLease {
		for _, n := range []*testNode{b, c} {
			if v, err := get(t, n, "k"); err == nil && v == "before" {
				t.Fatalf("%s answered k=%q %v after k=after was acknowledged (%s)", n.name, v, time.Since(acked), n.node.State())
			}
		}
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
