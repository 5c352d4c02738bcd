package snap

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/srv"
)

// benchKeys, benchLists: the table the benchmarks save and load, with
// 16-byte keys and 100-byte values, in as many stripes as make bench's
// table_servers have.
const (
	benchKeys  = 1_000_000
	benchLists = 1024
)

// benchTable returns a table of benchKeys keys "key-%012d" (16 bytes)
// with 100-byte values.
func benchTable(b *testing.B) *srv.Table {
	tb, err := srv.NewTable(benchLists)
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 100)
	for i := range benchKeys {
		tb.Put(fmt.Sprintf("key-%012d", i), value)
	}
	return tb
}

// into returns a Handler that loads a snapshot into tb as a restarting
// node does: sized first (Table.Reserve), then put key by key.
func into(tb *srv.Table) Handler {
	return Handler{
		Size:  tb.Reserve,
		Entry: func(k string, v []byte) error { tb.Put(k, v); return nil },
	}
}

// BenchmarkSaveLoad measures a snapshot of a table of 1,000,000 keys
// (16-byte keys, 100-byte values) on the real disk: Save, fed stripe by
// stripe, and Load into a new table.
func BenchmarkSaveLoad(b *testing.B) {
	tb := benchTable(b)
	d := filepath.Join(b.TempDir(), "snap")
	for b.Loop() {
		if err := Save(diskfs.OS{}, d, 1, 0, stripes(tb), nil); err != nil {
			b.Fatal(err)
		}
		loaded, _ := srv.NewTable(benchLists)
		if _, _, err := Load(diskfs.OS{}, d, into(loaded), nil); err != nil {
			b.Fatal(err)
		}
		if loaded.Size() != benchKeys {
			b.Fatalf("loaded %d keys, want %d", loaded.Size(), benchKeys)
		}
	}
}

// BenchmarkLoad measures Load alone, of the same snapshot: into a new
// table sized from the snapshot (as a node restarts), into one left to
// grow, and into nothing (the snapshot's own cost: reading, checking,
// decoding).
func BenchmarkLoad(b *testing.B) {
	d := filepath.Join(b.TempDir(), "snap")
	if err := Save(diskfs.OS{}, d, 1, 0, stripes(benchTable(b)), nil); err != nil {
		b.Fatal(err)
	}
	b.Run("into-table", func(b *testing.B) {
		for b.Loop() {
			tb, _ := srv.NewTable(benchLists)
			if _, _, err := Load(diskfs.OS{}, d, into(tb), nil); err != nil || tb.Size() != benchKeys {
				b.Fatal(tb.Size(), err)
			}
		}
	})
	b.Run("into-table-growing", func(b *testing.B) {
		for b.Loop() {
			tb, _ := srv.NewTable(benchLists)
			h := into(tb)
			h.Size = nil
			if _, _, err := Load(diskfs.OS{}, d, h, nil); err != nil || tb.Size() != benchKeys {
				b.Fatal(tb.Size(), err)
			}
		}
	})
	b.Run("decode-only", func(b *testing.B) {
		for b.Loop() {
			count := 0
			if _, _, err := Load(diskfs.OS{}, d, Handler{Entry: func(string, []byte) error { count++; return nil }}, nil); err != nil || count != benchKeys {
				b.Fatal(count, err)
			}
		}
	})
}

// restartChild names the snapshot directory a child process started by
// BenchmarkRestart loads (see TestMain).
const restartChild = "SNAP_BENCH_RESTART_DIR"

func TestMain(m *testing.M) {
	if d := os.Getenv(restartChild); d != "" {
		os.Exit(restart(d))
	}
	os.Exit(m.Run())
}

// restart is a restarting node's snapshot work in a process of its own:
// a new table, the snapshot loaded into it. It prints how long that took
// and how many keys it loaded.
func restart(d string) int {
	start := time.Now()
	tb, err := srv.NewTable(benchLists)
	if err == nil {
		_, _, err = Load(diskfs.OS{}, d, into(tb), nil)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%d %d\n", time.Since(start).Nanoseconds(), tb.Size())
	return 0
}

// BenchmarkRestart measures what BenchmarkLoad does as a restarting node
// meets it: in a new process each time, whose memory the kernel must
// first hand over (on this VM, faulting in fresh pages is most of the
// cost), from a snapshot in the page cache, as after a process crash. It
// reports the load inside the child (load-ns) and the child process from
// exec to exit (ns/op).
func BenchmarkRestart(b *testing.B) {
	d := filepath.Join(b.TempDir(), "snap")
	if err := Save(diskfs.OS{}, d, 1, 0, stripes(benchTable(b)), nil); err != nil {
		b.Fatal(err)
	}
	var loadNanos int64
	for b.Loop() {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), restartChild+"="+d)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		var ns, keys int64
		if _, err := fmt.Sscan(string(out), &ns, &keys); err != nil || keys != benchKeys {
			b.Fatalf("child said %q (%v); want its time and %d keys", out, err, benchKeys)
		}
		loadNanos += ns
	}
	b.ReportMetric(float64(loadNanos)/float64(b.N), "load-ns")
}
