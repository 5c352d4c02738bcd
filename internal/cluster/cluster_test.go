package cluster

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/chaintable/chaintable/zkwatch"
)

// TestCluster drives a two-node chain through the harness's whole life
// cycle: kill, restart as a new tail, freeze past the session timeout and
// resume, graceful leave.
func TestCluster(t *testing.T) {
	c := Start(t, Options{Nodes: 2})
	n0, n1 := c.Nodes()[0], c.Nodes()[1]
	if c.Head() != n0 || c.Tail() != n1 {
		t.Fatalf("chain is %s, want node0 -> node1", c.describe(c.View()))
	}
	if got := c.WaitTailServes(10 * time.Second); got != n1 {
		t.Fatalf("WaitTailServes = %v, want %v", got, n1)
	}
	cl := c.Client()
	ctx := context.Background()
	if err := cl.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}

	// A killed tail leaves the chain once its session expires; restarted,
	// it joins as a new tail and catches up.
	n1.Kill()
	if n1.Running() || n1.PID() != 0 {
		t.Fatalf("%v still running after Kill", n1)
	}
	c.WaitGone(n1, 10*time.Second)
	if got := c.WaitTailServes(10 * time.Second); got != n0 {
		t.Fatalf("tail after killing node1 = %v, want node0", got)
	}
	n1.Restart()
	c.WaitView(func(v zkwatch.View) bool { return len(v.Members) == 2 }, 10*time.Second)
	if got := c.WaitTailServes(10 * time.Second); got != n1 {
		t.Fatalf("tail after restarting node1 = %v, want node1", got)
	}
	if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Fatalf("get k at the restarted tail = %q, %v; want \"v\"", v, err)
	}

	// A node frozen past its session timeout loses its place; resumed, it
	// registers again.
	old, _ := n0.Member()
	n0.Stop()
	c.WaitView(func(v zkwatch.View) bool { return v.Index(old.Name) < 0 }, 10*time.Second)
	n0.Cont()
	v := c.WaitView(func(v zkwatch.View) bool {
		m, ok := memberAt(v, n0.Addr)
		return ok && m.Seq > old.Seq
	}, 10*time.Second)
	if tail, _ := v.Tail(); tail.Addr != n0.Addr {
		t.Fatalf("chain after node0 came back is %s, want node0 at the tail", c.describe(v))
	}
	if got := c.WaitTailServes(10 * time.Second); got != n0 {
		t.Fatalf("tail after node0 came back = %v, want node0", got)
	}

	if code := n1.Term(); code != 0 {
		t.Fatalf("node1 exited with status %d after SIGTERM, want 0", code)
	}
	c.WaitGone(n1, 5*time.Second)
	if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Fatalf("get k after node1 left = %q, %v; want \"v\"", v, err)
	}
}

// TestLoad runs a short load on a healthy chain and checks its history.
func TestLoad(t *testing.T) {
	c := Start(t, Options{Nodes: 3})
	c.WaitTailServes(10 * time.Second)
	l := StartLoad(t, c.ZKAddr(), LoadOptions{Clients: 3, Keys: 3})
	time.Sleep(2 * time.Second)
	h := l.Stop()
	s := l.Stats()
	t.Logf("%d operations: %d ok (%d writes, %d reads), %d indefinite; longest gap %v",
		s.Ops, s.OK, s.Writes, s.Reads, s.Indefinite, s.LongestGap)
	if s.Indefinite > 0 || s.Writes == 0 || s.Reads == 0 {
		t.Errorf("healthy chain: %d indefinite, %d writes, %d reads; want none, some, some", s.Indefinite, s.Writes, s.Reads)
	}
	final := l.ReadFinal()
	CheckFinal(t, h, final)
	CheckLinearizable(t, h, c.Dir())
}

// TestNodePartition cuts the tail of a two-node chain behind its proxy off
// from clients and its predecessor, both ways, and heals it.
func TestNodePartition(t *testing.T) {
	c := Start(t, Options{Nodes: 2, NodeProxies: true})
	tail := c.WaitTailServes(10 * time.Second)
	if host, _, _ := net.SplitHostPort(tail.Addr); host != "127.0.0.1" {
		t.Fatalf("%v advertises %s, want its proxy on 127.0.0.1", tail, tail.Addr)
	}
	cl := c.Client()
	ctx := context.Background()
	if err := cl.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []PartitionMode{Reset, Silent} {
		tail.Partition(mode)
		if err := probeRead(tail.Addr); err == nil {
			t.Errorf("%s partition: %v answered a read", mode, tail)
		}
		tail.Heal()
		if got := c.WaitTailServes(10 * time.Second); got != tail {
			t.Fatalf("after healing a %s partition the tail is %v, want %v", mode, got, tail)
		}
		if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "v" {
			t.Fatalf("after healing a %s partition, get k = %q, %v; want \"v\"", mode, v, err)
		}
	}
	if len(c.View().Members) != 2 {
		t.Errorf("chain is %s, want both nodes still in it", c.describe(c.View()))
	}
}
