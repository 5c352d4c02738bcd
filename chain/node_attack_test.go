package chain

import (
	"testing"
	"time"
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
