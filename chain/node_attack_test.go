package chain

import (
	"fmt"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// TestNodeJoinWhileDroppedTailHoldsLease: A→B with B cut off ZooKeeper.
// ZooKeeper drops B, and D joins at once: A installs [A], then [A, D].
// A must not commit through D while B, on A's grant, still answers reads.
func TestNodeJoinWhileDroppedTailHoldsLease(t *testing.T) {
	a, b := startNode(t, "node0000000001"), startNode(t, "node0000000002")
	setViews(a, b)
	put(t, a, "k", "before")
	time.Sleep(testLease / 2) // a few heartbeats: leases granted
	b.zkDown.Store(true)
	time.Sleep(testSession) // B's session lease ran out; A's grants go on
	d := startNode(t, "node0000000003")
	a.node.SetView([]Member{{Name: a.name, Addr: a.server.Addr()}}) // ZooKeeper dropped B
	setViews(a, d)                                                  // and D joined
	put(t, a, "k", "after")
	acked := time.Now()
	for time.Since(acked) < 2*testLease {
		if v, err := get(t, b, "k"); err == nil && v == "before" {
			t.Fatalf("%s answered k=%q %v after k=after was acknowledged (%s)", b.name, v, time.Since(acked), b.node.State())
		}
	}
	if v, err := get(t, d, "k"); err != nil || v != "after" {
		t.Fatalf("the new tail: k=%q, %v", v, err)
	}
}

// TestNodeStaleAckAcrossHistories: A→B→C; C dies, so B's acknowledgement
// of A's write w waits. ZooKeeper drops A (A does not learn it) and C;
// B leads [B, D]. A, still believing it leads, takes writes lost1 and
// lost2 (B refuses them, but replies on a connection in order, so the
// refusal waits behind the acknowledgement it owes for w); B commits x1
// and x2 under the same sequence numbers. When w commits at B, its
// acknowledgement must not tell A that lost1 and lost2 did.
func TestNodeStaleAckAcrossHistories(t *testing.T) {
	a, b, c := startNode(t, "node0000000001"), startNode(t, "node0000000002"), startNode(t, "node0000000003")
	setViews(a, b, c)
	put(t, a, "k", "before")
	c.stop()
	wa := dialWire(t, a.server.Addr())
	send := func(key, value string) {
		frame, _ := codec.AppendMessage(nil, codec.PutRequest(key, []byte(value)))
		if _, err := wa.conn.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	send("k", "w")
	eventually(t, "B applies w", func() error {
		if v, _ := b.store.Table.Get("k"); string(v) != "w" {
			return fmt.Errorf("B has k=%q (%s)", v, b.node.State())
		}
		return nil
	})
	d := startNode(t, "node0000000004")
	setViews(b, d) // A, cut off ZooKeeper, keeps [A, B, C]
	send("lost", "1")
	send("lost", "2")
	eventually(t, "A applies lost1 and lost2", func() error {
		if v, _ := a.store.Table.Get("lost"); string(v) != "2" {
			return fmt.Errorf("A has lost=%q (%s)", v, a.node.State())
		}
		return nil
	})
	put(t, b, "x", "1")
	put(t, b, "x", "2")
	// w is committed: its reply may come. lost1 and lost2 never are.
	wa.conn.SetReadDeadline(time.Now().Add(3 * testLease))
	for i := range 3 {
		reply := new(codec.MessageT)
		if err := codec.ReadMessage(wa.r, codec.DefaultMaxFrame, reply); err != nil {
			if i == 0 {
				t.Logf("no reply for w either: %v", err)
			}
			return
		}
		if i > 0 && reply.GetOpcode() == codec.OpPut+1 {
			t.Fatalf("A acknowledged write %d (lost=%d), which no other node has: %s; B %s", i, i, a.node.State(), b.node.State())
		}
	}
}
