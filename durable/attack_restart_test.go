package durable_test

import (
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"fmt"
	"testing"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/durable"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/wal"
)

// reserveRecorder recovers a Log into a table, and remembers what the
// Log asked the table to reserve.
type reserveRecorder struct {
	table       *srv.Table
	keys, bytes int
}

func (r *reserveRecorder) recovery() chain.Recovery {
	return chain.Recovery{
		Reserve: func(keys, bytes int) {
			r.keys, r.bytes = r.keys+keys, r.bytes+bytes
			r.table.Reserve(keys, bytes)
		},
		Entry:    func(key string, value []byte) { r.table.Put(key, value) },
		Snapshot: func(chain.Point, []*codec.DedupT) {},
		Write: func(w *codec.WriteT) error {
			if w.Op == codec.OpDel {
				r.table.Del(w.Key)
			} else {
				r.table.Put(w.Key, w.Value)
			}
			return nil
		},
	}
}

// TestAttackRestartReservesDeletedKeys: the table is sized before the
// replay for the log's distinct put keys, less the keys the snapshot
// holds, on the grounds that "the table ends with more keys than
// either". A log of puts that later writes delete (a queue: put a job,
// del it once done) breaks that: the table ends empty, yet the restart
// reserves room for every key the log ever put, and the bytes of all
// their values. Here 2,000 jobs of 4 KiB, each deleted, make the
// restart reserve about 8 MiB for a table that holds nothing; with the
// default snapshot interval (2^20 writes), by the same arithmetic, a log
// of 4 KiB jobs reserves (and touches: Table.Reserve writes a byte a
// page) about 2 GiB at start for an empty table, where the running node never
// needed more than a few jobs' worth. The reserve must not exceed what
// the table holds once replayed by more than the estimate's error.
func TestAttackRestartReservesDeletedKeys(t *testing.T) {
	const jobs, size = 2000, 4096
	mem := diskfs.NewMem()
	opts := durable.Options{Mode: wal.Batch, WAL: wal.Options{SegmentSize: 1 << 20}}
	open := func() (*durable.Log, *reserveRecorder) {
		table, err := srv.NewTable(8)
		if err != nil {
			t.Fatal(err)
		}
		l, err := durable.Open(mem, "/data", table, opts)
		if err != nil {
			t.Fatal(err)
		}
		rec := &reserveRecorder{table: table}
		if _, err := l.Recover(rec.recovery()); err != nil {
			t.Fatal(err)
		}
		return l, rec
	}
	l, _ := open()
	value := make([]byte, size)
	seq := uint64(0)
	for i := range jobs {
		key := fmt.Sprintf("job-%d", i)
		seq++
		put := &codec.WriteT{Seq: seq, Op: codec.OpPut, Key: key, Value: value}
		seq++
		del := &codec.WriteT{Seq: seq, Op: codec.OpDel, Key: key}
		l.Append([]*codec.WriteT{put, del})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l, rec := open()
	defer l.Close()
	if n := rec.table.Size(); n != 0 {
		t.Fatalf("the replayed table holds %d keys, want 0", n)
	}
	if slack := 10; rec.keys > rec.table.Size()+slack {
		t.Errorf("the restart reserved %d keys and %d bytes for a table that holds %d keys once replayed", rec.keys, rec.bytes, rec.table.Size())
	}
}

// TestAttackRestartKeysOutliveMapping: a restart on a real disk replays
// the log through read-only mappings of its segments, handing over keys
// and values that lie in them (valid only during the call); the mappings
// are gone once the node runs. If the table, the exactly-once records or
// the machine kept any of them, reading them after the restart would
// fault or read other data. Here a node with a snapshot and a log after
// it (several small segments) restarts, takes writes that make its table
// move entries, and every key must still read as it was written.
func TestAttackRestartKeysOutliveMapping(t *testing.T) {
	dir := t.TempDir()
	opts := durable.Options{Mode: wal.Batch, SnapshotEvery: 150, WAL: wal.Options{SegmentSize: 4096}}
	h := start(t, "h", dir, opts)
	setViews(h)
	want := map[string]string{}
	for i := range 400 {
		k, v := fmt.Sprintf("key-%d", i%170), fmt.Sprintf("value-%d-%s", i, strings.Repeat("x", i%37))
		put(t, h, k, v)
		want[k] = v
	}
	h.stop()
	h2 := start(t, "h2", dir, opts)
	setViews(h2)
	runtime.GC()
	for i := range 100 {
		// Other lengths than before: the table appends and compacts.
		k := fmt.Sprintf("other-%d", i)
		put(t, h2, k, strings.Repeat("y", 200))
		want[k] = strings.Repeat("y", 200)
	}
	if d := diffTables(want, tableOf(h2.table)); d != "[]" {
		t.Errorf("after the restart: %s", d)
	}
	for k, v := range want {
		if got, err := get(t, h2, k); err != nil || got != v {
			t.Errorf("get %s = %q, %v; want %q", k, got, err, v)
		}
	}
}

// keepSegmentsFS refuses to delete log segments, as a data dir does
// whose node was killed between saving a snapshot and releasing the log
// before it (or whose release failed): segments wholly before the
// snapshot stay.
type keepSegmentsFS struct{ diskfs.FS }

func (k keepSegmentsFS) Remove(name string) error {
	if strings.HasSuffix(name, ".wal") {
		return fmt.Errorf("remove %s: refused by the test", name)
	}
	return k.FS.Remove(name)
}

// TestAttackDeltaFromSkippedSegment: a restart skips, unchecked, the log
// segments wholly before the snapshot (they are not replayed), but they
// stay until the next release, and a successor that restarted behind is
// sent the writes it lacks from them (a delta, Log.ReadFrom). Here one of
// them is damaged: h2 restarts fine (before the fast restart, it refused
// to start and said where the damage was), the delta to b2 fails at the
// damaged record, the link ends (logged at debug level only), and the
// next link sends the same delta again: b2 never catches up, for good,
// and nothing says why. A delta that cannot be read must fall back to a
// snapshot (or the node must check what it may send).
func TestAttackDeltaFromSkippedSegment(t *testing.T) {
	opts := durable.Options{Mode: wal.Batch, SnapshotEvery: 40, WAL: wal.Options{SegmentSize: 1024}}
	memH, memB := diskfs.NewMem(), diskfs.NewMem()
	h := openOn(t, keepSegmentsFS{memH}, "/data", "h", opts)
	b := openOn(t, memB, "/data", "b", opts)
	setViews(h, b)
	putKeys(t, h, "early", 20, "v")
	eventually(t, "b has the first 20", func() error {
		if st := b.node.State(); appliedOf(st) != 20 || !b.node.Live() {
			return fmt.Errorf("b: %s", st)
		}
		return nil
	})
	b.stop()
	setViews(h)
	putKeys(t, h, "late", 100, strings.Repeat("x", 40))
	eventually(t, "h saved snapshots", func() error {
		if n := h.log.SnapshotsSaved(); n < 2 {
			return fmt.Errorf("h saved %d snapshots", n)
		}
		return nil
	})
	h.stop()

	// Damage the first record of a segment after write 21 that lies
	// wholly before h's last snapshot (at 80 or later).
	names, err := memH.ReadDir("/data/log")
	if err != nil {
		t.Fatal(err)
	}
	var firsts []uint64
	for _, name := range names {
		if hex, ok := strings.CutSuffix(name, ".wal"); ok {
			first, err := strconv.ParseUint(hex, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			firsts = append(firsts, first)
		}
	}
	slices.Sort(firsts)
	damaged := ""
	for i := 0; i+1 < len(firsts); i++ {
		if firsts[i] > 21 && firsts[i+1] <= 60 {
			damaged = fmt.Sprintf("/data/log/%016x.wal", firsts[i])
			break
		}
	}
	if damaged == "" {
		t.Fatalf("no segment from after 21 to before 60 among %v", firsts)
	}
	if err := memH.Corrupt(damaged, 24+8+2, []byte{0xff}); err != nil {
		t.Fatal(err)
	}

	h2 := openOn(t, memH, "/data", "h2", opts)
	b2 := openOn(t, memB, "/data", "b2", opts)
	setViews(h2, b2)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !b2.node.Live(); {
		time.Sleep(20 * time.Millisecond)
	}
	if !b2.node.Live() {
		t.Fatalf("b2 never caught up from h2, whose log is damaged in %s (segments %v): h2 %s; b2 %s", damaged, firsts, h2.node.State(), b2.node.State())
	}
	if d := diffTables(tableOf(h2.table), tableOf(b2.table)); d != "[]" {
		t.Errorf("h2 vs b2: %s", d)
	}
}
