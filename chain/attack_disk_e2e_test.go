package chain_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/internal/cluster"
)

// TestE2EDiskFailedOnlyHolder: the only node of a chain, the only holder
// in the holders record, has its disk fail. It leaves and exits, as it
// should; but it leaves as a draining node does, taking its own entry off
// the record, so the record no longer says that a node out of the chain
// holds the acknowledged writes. A node killed instead stays listed, and a
// new node waits for it (TestE2EHoldersGone); after the disk failure a
// new node leads the chain with an empty table, without -force-start, and
// every acknowledged write is gone (and, once its disk is fixed, the old
// node, restarted on its data dir, is no longer listed: it catches up
// with the new node's empty table). A node whose disk failed holds every
// write it acknowledged in its data dir; it should leave the record as it
// is, as a crashed node would.
func TestE2EDiskFailedOnlyHolder(t *testing.T) {
	ctx := context.Background()
	c, old := oneHolder(t)
	quick := failDiskOfHead(t, c, old)

	fresh := c.Add()
	if err := quick.Put(ctx, "k2", []byte("v2")); err == nil {
		t.Errorf("%v, new, started the chain empty after the only holder's disk failed", fresh)
	}
	var se *cli.ServerError
	if v, err := quick.Get(ctx, "k"); err == nil && string(v) != "v" || errors.As(err, &se) && se.Status == codec.Status_STATUS_NOT_FOUND {
		t.Errorf("k = %q, %v after the only holder's disk failed and a new node started: an acknowledged write is lost", v, err)
	}
	// Started again on its data dir (its disk fixed), the old node leads
	// with every write it acknowledged.
	old.Restart()
	c.WaitTailServes(recoverTimeout)
	if v, err := c.Client().Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("k = %q, %v once the old node is back on its data dir", v, err)
	}
}

// TestE2EDiskFailsWhileZKCut: the middle node's disk fails while it is
// cut off from ZooKeeper. It cannot leave the chain (its session expires
// in its own time), but it must still exit, within its session timeout
// and the time it gives ZooKeeper to answer, and the chain must go on
// without it, with every acknowledged write.
func TestE2EDiskFailsWhileZKCut(t *testing.T) {
	ctx := context.Background()
	c := cluster.Start(t, cluster.Options{Nodes: 3, DataDirs: true})
	c.WaitTailServes(recoverTimeout)
	cl := c.Client()
	if err := cl.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put: %v", err)
	}
	mid := c.At(1)
	mid.CutZK()
	mid.FailDisk()
	quick := c.ClientWith(cli.Options{RetryFor: 2 * time.Second, AttemptTimeout: 500 * time.Millisecond})
	quick.Put(ctx, "trigger", []byte("x")) // the middle's log fails on it
	bound := c.SessionTimeout() + 3*time.Second + 5*time.Second
	if how, ok := mid.WaitExit(bound); !ok || how != "exit status 1" {
		t.Errorf("%v, cut off from ZooKeeper, after its disk failed: ended %v (%q) within %v; its log ends:\n%s", mid, ok, how, bound, mid.LogTail(20))
	}
	c.WaitGone(mid, recoverTimeout)
	c.WaitTailServes(recoverTimeout)
	if err := cl.Put(ctx, "k2", []byte("v2")); err != nil {
		t.Fatalf("put after the middle left: %v", err)
	}
	if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("k = %q, %v: an acknowledged write is lost", v, err)
	}
}

// TestE2EDiskFailedHeadBeforeSuccessorCaughtUp: the head's disk fails
// while its only successor, restarted from its data dir, has not yet
// caught up (here its links are cut, so it cannot). The head leaves and
// takes itself off the holders record; the successor, first in the chain
// now and listed nowhere, finds a record that names no other node and
// leads with what its data dir held before the write the head took
// alone: that acknowledged write is lost. Had the head been killed, it
// would have stayed listed and the successor would have waited for it.
func TestE2EDiskFailedHeadBeforeSuccessorCaughtUp(t *testing.T) {
	ctx := context.Background()
	c := cluster.Start(t, cluster.Options{Nodes: 2, DataDirs: true, NodeProxies: true})
	c.WaitTailServes(recoverTimeout)
	cl := c.Client()
	if err := cl.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatalf("put: %v", err)
	}
	head, succ := c.At(0), c.At(1)
	succ.Kill()
	c.WaitGone(succ, recoverTimeout)
	if err := cl.Put(ctx, "k2", []byte("v2")); err != nil {
		t.Fatalf("put at the head alone: %v", err)
	}
	succ.Partition(cluster.Reset)
	succ.Restart()

	quick := failDiskOfHead(t, c, head)
	succ.Heal()
	// The successor must wait for the head (it may not lead without k2),
	// so reads and writes fail for now; what must not come is an answer
	// without k2.
	v, err := quick.Get(ctx, "k2")
	var se *cli.ServerError
	if errors.As(err, &se) && se.Status == codec.Status_STATUS_NOT_FOUND {
		t.Errorf("k2 not found at %v, which leads the chain without it: an acknowledged write is lost", succ)
	} else if err == nil && string(v) != "v2" {
		t.Errorf("k2 = %q", v)
	}
}

// failDiskOfHead fails the disk of n, the head: a put must not be
// acknowledged, n must exit 1 and leave the chain. It returns the quick
// client that tried the put, for the test's later requests.
func failDiskOfHead(t *testing.T, c *cluster.Cluster, n *cluster.Node) *cli.Client {
	t.Helper()
	n.FailDisk()
	quick := c.ClientWith(cli.Options{RetryFor: 2 * time.Second, AttemptTimeout: 500 * time.Millisecond})
	if err := quick.Put(context.Background(), "trigger", []byte("x")); err == nil {
		t.Fatalf("a put was acknowledged by %v after its disk failed", n)
	}
	if how, ok := n.WaitExit(recoverTimeout); !ok || how != "exit status 1" {
		t.Fatalf("%v after its disk failed: ended %v (%q); its log ends:\n%s", n, ok, how, n.LogTail(20))
	}
	c.WaitGone(n, recoverTimeout)
	return quick
}

// TestE2ELastHolderLeavesGracefully: the only node of a chain with a data
// dir is stopped with SIGTERM. Its data dir holds every acknowledged
// write, so it stays in the holders record: a new node started meanwhile
// waits rather than lead with an empty table, and the old node, started
// again on its data dir, leads with its writes.
func TestE2ELastHolderLeavesGracefully(t *testing.T) {
	ctx := context.Background()
	c, old := oneHolder(t)
	if code := old.Term(); code != 0 {
		t.Fatalf("%v exited %d after SIGTERM", old, code)
	}
	c.WaitGone(old, recoverTimeout)
	fresh := c.Add()
	quick := c.ClientWith(cli.Options{RetryFor: 2 * time.Second, AttemptTimeout: 500 * time.Millisecond})
	if err := quick.Put(ctx, "k2", []byte("v2")); err == nil {
		t.Errorf("%v, new, started the chain empty after the only holder left gracefully", fresh)
	}
	old.Restart()
	c.WaitTailServes(recoverTimeout)
	if v, err := c.Client().Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Errorf("k = %q, %v once the old node is back on its data dir", v, err)
	}
}

// oneHolder starts a chain of one node with a data dir, which takes the
// write k=v, and returns it.
func oneHolder(t *testing.T) (*cluster.Cluster, *cluster.Node) {
	t.Helper()
	c := cluster.Start(t, cluster.Options{Nodes: 1, DataDirs: true})
	c.WaitTailServes(recoverTimeout)
	if err := c.Client().Put(context.Background(), "k", []byte("v")); err != nil {
		t.Fatalf("put on a chain of one: %v", err)
	}
	return c, c.At(0)
}
