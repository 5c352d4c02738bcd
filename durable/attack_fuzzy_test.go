package durable_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"testing"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/durable"
	"github.com/chaintable/chaintable/wal"
)

// TestAttackFuzzyPendingThenLead: b installed a fuzzy snapshot (as of
// 10, its table ahead to 14) and the link broke; then its predecessor h
// is gone from the view and b, first and allowed to lead (no holders
// record here; -force-start in table_server), becomes the head. No node
// is left to send writes 11 to 14. b is live (it answers reads), but the
// machine still counts it as not consistent, so it refuses every client
// write (ErrUnavailable: the client is held, then cut off), and its log
// still waits to append write 14 before it saves the snapshot and
// reports anything durable, so even a write it took would never commit;
// nor do writes 1 to 10 (committed stays 0), so every read waits for
// them (ReadNeed) and is cut off too.
// The chain is stuck for good. Leading must either be refused or accept
// the table as it is (DataLost) in both the machine and the log.
func TestAttackFuzzyPendingThenLead(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch}
	_, b, _ := fuzzyPending(t, diskfs.NewMem(), diskfs.NewMem(), opts, false)
	b.node.SetView([]chain.Member{{Name: "b", Addr: b.server.Addr()}})
	if v, err := get(t, b, "k1"); err != nil || v != "v" {
		t.Errorf("k1 = %q, %v at b, leading after a fuzzy install", v, err)
	}
	r, err := do(t, b.server.Addr(), codec.PutRequest("after", []byte("lead")))
	if err != nil || r.Opcode != codec.OpPut+1 {
		t.Fatalf("put at b, leading after a fuzzy install: %v %v (%s)", r, err, b.node.State())
	}
	if v, err := get(t, b, "after"); err != nil || v != "lead" {
		t.Errorf("get at b: %q %v", v, err)
	}
}

// TestAttackFuzzyPendingThenReset: b waits, after a fuzzy install, for
// writes that never come on its broken link; its predecessor links to
// it again and sends a new snapshot (a reset while the first save is
// pending), while clients keep writing to h. b must end up caught up,
// with its snapshot saved and the incomplete marker gone, and after a
// power cut come back with h's table.
func TestAttackFuzzyPendingThenReset(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch}
	memB := diskfs.NewMem()
	h, b, _ := fuzzyPending(t, diskfs.NewMem(), memB, opts, false)
	done := lateWrites(h, 200)
	view := []chain.Member{{Name: "h", Addr: h.server.Addr()}, {Name: "b", Addr: b.server.Addr()}}
	h.node.SetView(view)
	b.node.SetView(view)
	<-done
	caughtUpSurvivesPowerCut(t, h, b, memB, opts, 14+200)
}

// lateWrites puts n keys at h, one every 2 ms, each on a connection of
// its own, and closes the channel it returns once all are sent. h's disk
// is stuck (see fuzzyPending), so none is acknowledged: each is held
// until its connection is cut.
func lateWrites(h *member, n int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			go do(nil, h.server.Addr(), codec.PutRequest(fmt.Sprintf("late%d", i), []byte("x")))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return done
}

// caughtUpSurvivesPowerCut waits until h applied write total and b, on
// memB, is live with every write up to it on its disk (b, the tail,
// commits only what is) and its snapshot saved (no incomplete marker),
// then cuts b's power and checks that b, restarted, has h's table.
func caughtUpSurvivesPowerCut(t *testing.T, h, b *member, memB *diskfs.Mem, opts durable.Options, total uint64) {
	t.Helper()
	eventually(t, "b caught up and saved", func() error {
		if hs, bs := h.node.State(), b.node.State(); appliedOf(hs) != total || !b.node.Live() || stateNumber(bs, "committed") != total {
			return fmt.Errorf("want both at %d; h: %s; b: %s", total, hs, bs)
		}
		if _, err := memB.ReadFile("/data/incomplete"); err == nil {
			return fmt.Errorf("the incomplete marker is still there (b: %s)", b.node.State())
		}
		return nil
	})
	want := tableOf(h.table)
	if d := diffTables(want, tableOf(b.table)); d != "[]" {
		t.Fatalf("h vs b: %s", d)
	}
	after := memB.Crash(rand.New(zeroSource{}))
	b.stop()
	b2 := openOn(t, after, "/data", "b2", opts)
	if d := diffTables(want, tableOf(b2.table)); d != "[]" {
		t.Errorf("h vs b2, b after a power cut: %s (b2: %s)", d, b2.node.State())
	}
}

// appliedOf returns the last write applied that a node's State tells.
func appliedOf(state string) uint64 { return stateNumber(state, "applied") }

// stateNumber returns the number a node's State tells as name=N.
func stateNumber(state, name string) uint64 {
	_, rest, _ := strings.Cut(state, " "+name+"=")
	n, _ := strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
	return n
}

// TestAttackFuzzyPendingThenRejoin: b waits, after a fuzzy install (as
// of 10, ahead to 14), for writes that never come; its session expires
// and it registers again as b2 (Rejoin), first in the new view, and may
// lead with its table (no holders record here; the whole chain lost its
// sessions at once, or -force-start). Rejoin forgets that the table is
// ahead of its seq, so b2 takes a client write, as write 11; but its log
// still holds the first install's save until it has appended write 14,
// and reports nothing durable before, so the write never commits: b2's
// clients are held, then cut off, until three more writes come.
func TestAttackFuzzyPendingThenRejoin(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch}
	_, b, _ := fuzzyPending(t, diskfs.NewMem(), diskfs.NewMem(), opts, false)
	b.node.Rejoin("b2")
	b.node.SetView([]chain.Member{{Name: "b2", Addr: b.server.Addr()}})
	r, err := do(t, b.server.Addr(), codec.PutRequest("after", []byte("rejoin")))
	if err != nil || r.Opcode != codec.OpPut+1 {
		t.Fatalf("put at b2, leading after a rejoin with a fuzzy install pending: %v %v (%s)", r, err, b.node.State())
	}
}

// TestAttackFuzzyCatchUpWithPeriodicSnapshots: b installs a fuzzy
// snapshot (as of 10, ahead to 14) on a link that stays up, so it goes
// on to apply 11 to 14 and saves the install then; its log takes a
// periodic snapshot every 3 writes, from the first writes after the
// install on (when a save may still be pending or running), while
// clients keep writing to h. b must end up caught up and saved, and after
// a power cut come back with h's table.
func TestAttackFuzzyCatchUpWithPeriodicSnapshots(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch, SnapshotEvery: 3}
	memB := diskfs.NewMem()
	h, b, _ := fuzzyPending(t, diskfs.NewMem(), memB, opts, true)
	<-lateWrites(h, 200)
	caughtUpSurvivesPowerCut(t, h, b, memB, opts, 14+200)
	if n := b.log.SnapshotsSaved(); n < 2 {
		t.Errorf("b saved %d snapshots, want the install's and periodic ones", n)
	}
}

// TestAttackFuzzyInstallPowerCutSweep: b installs a fuzzy snapshot (as
// of 10, ahead to 14) on a link that stays up, applies 11 to 14 and
// saves the install. The power is cut at each file creation and sync b's
// log makes from the moment it marks the dir incomplete (the reset) to
// the end of the save, one point a run, and in a last run once the save
// is done. Restarted, b must hold either nothing (the marker made it
// start empty) or h's table as of 14 (h takes no other write), never a
// table of no history, nor one as of 10 with the writes after it; after
// the save, h's table as of 14. (The marker's removal and the directory
// syncs are not points: gateFS sees only creations and file syncs.)
func TestAttackFuzzyInstallPowerCutSweep(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch}
	for point := 1; ; point++ {
		if point > 20 {
			t.Fatalf("more than 20 operations from the reset to the save")
		}
		memB := diskfs.NewMem()
		var ops atomic.Int32
		var armed atomic.Bool
		crashed := make(chan *diskfs.Mem, 1)
		fsysB := &gateFS{FS: memB, gate: func(op, name string) {
			if op == "create" && strings.Contains(name, "incomplete") {
				armed.Store(true)
			}
			if armed.Load() && int(ops.Add(1)) == point {
				crashed <- memB.Crash(rand.New(zeroSource{}))
			}
		}}
		h, b, _ := fuzzyPending(t, diskfs.NewMem(), fsysB, opts, true)
		var image *diskfs.Mem
		saved := false // the last run: every point passed, the cut comes after the save
		for deadline := time.Now().Add(5 * time.Second); image == nil && time.Now().Before(deadline); {
			select {
			case image = <-crashed:
			case <-time.After(20 * time.Millisecond):
			}
			if image == nil && b.log.SnapshotsSaved() > 0 {
				if _, err := memB.ReadFile("/data/incomplete"); err != nil {
					saved = true
					image = memB.Crash(rand.New(zeroSource{}))
				}
			}
		}
		if image == nil {
			t.Fatalf("power cut at point %d: b neither reached it nor saved the install: %s", point, b.node.State())
		}
		want := tableOf(h.table)
		b.stop()
		b2 := openOn(t, image, "/data", fmt.Sprintf("b2-%d", point), opts)
		got, st := tableOf(b2.table), b2.node.State()
		t.Logf("power cut at point %d: b2 restarted with %d keys, at %d", point, len(got), appliedOf(st))
		switch {
		case saved && appliedOf(st) != 14:
			t.Errorf("power cut after the save: b2 restarted at %d, want 14: %s", appliedOf(st), st)
		case len(got) == 0 && appliedOf(st) == 0:
		case appliedOf(st) == 14:
			if d := diffTables(want, got); d != "[]" {
				t.Errorf("power cut at point %d: b2 at 14 differs from h: %s", point, d)
			}
		default:
			t.Errorf("power cut at point %d: b2 restarted with %d keys: %s", point, len(got), st)
		}
		b2.stop() // h stops at the cleanup, once its stuck disk is let go
		if saved {
			t.Logf("%d points from the reset to the save", point-1)
			return
		}
	}
}
