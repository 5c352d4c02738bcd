package snap

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/srv"
)

// BenchmarkSaveLoad measures a snapshot of a table of 1,000,000 keys
// (16-byte keys, 100-byte values) on the real disk: Save, fed stripe by
// stripe, and Load into a new table.
func BenchmarkSaveLoad(b *testing.B) {
	const n = 1_000_000
	tb, err := srv.NewTable(64)
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 100)
	for i := range n {
		tb.Put(fmt.Sprintf("key-%012d", i), value)
	}
	d := filepath.Join(b.TempDir(), "snap")
	for b.Loop() {
		if err := Save(diskfs.OS{}, d, 1, stripes(tb), nil); err != nil {
			b.Fatal(err)
		}
		into, _ := srv.NewTable(64)
		if _, err := Load(diskfs.OS{}, d, Handler{Entry: func(k string, v []byte) error { into.Put(k, v); return nil }}, nil); err != nil {
			b.Fatal(err)
		}
		if into.Size() != n {
			b.Fatalf("loaded %d keys, want %d", into.Size(), n)
		}
	}
}

// BenchmarkLoad measures Load alone, of the same snapshot: into a new
// table, and into nothing (the snapshot's own cost: reading, checking,
// decoding).
func BenchmarkLoad(b *testing.B) {
	const n = 1_000_000
	tb, _ := srv.NewTable(64)
	value := make([]byte, 100)
	for i := range n {
		tb.Put(fmt.Sprintf("key-%012d", i), value)
	}
	d := filepath.Join(b.TempDir(), "snap")
	if err := Save(diskfs.OS{}, d, 1, stripes(tb), nil); err != nil {
		b.Fatal(err)
	}
	b.Run("into-table", func(b *testing.B) {
		for b.Loop() {
			into, _ := srv.NewTable(64)
			if _, err := Load(diskfs.OS{}, d, Handler{Entry: func(k string, v []byte) error { into.Put(k, v); return nil }}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-only", func(b *testing.B) {
		for b.Loop() {
			count := 0
			if _, err := Load(diskfs.OS{}, d, Handler{Entry: func(string, []byte) error { count++; return nil }}, nil); err != nil || count != n {
				b.Fatal(count, err)
			}
		}
	})
}
