package diskfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var sink byte

// TestMapLazy checks a lazy mapping of a file with space reserved past
// its data: the bytes read back, DataAt never puts data in a hole, and a
// page that cannot be read (the file truncated under the mapping) is an
// error under Guard, not a crash.
func TestMapLazy(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	f, err := OS{}.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Allocate(1 << 20); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("far"), 600<<10)
	f.Close()
	m, err := OS{}.MapLazy(name)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := m.Bytes()
	if len(b) != 1<<20 || string(b[:4]) != "head" || string(b[600<<10:600<<10+3]) != "far" {
		t.Fatalf("mapped %d bytes, %q ... %q", len(b), b[:4], b[600<<10:600<<10+3])
	}
	// Walking the ranges from the start must meet both writes.
	var met []string
	for off := 0; off < len(b); {
		start, end := m.DataAt(off)
		if start < off || end < start || end > len(b) {
			t.Fatalf("DataAt(%d) = %d, %d", off, start, end)
		}
		if start == len(b) {
			break
		}
		for _, w := range []struct {
			at int
			s  string
		}{{0, "head"}, {600 << 10, "far"}} {
			if w.at >= start && w.at < end {
				met = append(met, w.s)
			}
		}
		off = max(end, start+1)
	}
	if strings.Join(met, ",") != "head,far" {
		t.Errorf("the data ranges hold %v, want head and far", met)
	}
	if start, _ := m.DataAt(1 << 20); start != 1<<20 {
		t.Errorf("DataAt(size) = %d, want the size", start)
	}

	if err := os.Truncate(name, 0); err != nil {
		t.Fatal(err)
	}
	err = Guard(b, func() error {
		sink = b[700<<10] // past the end of the file now: SIGBUS
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "faulted") {
		t.Errorf("reading a page past the file's end under Guard = %v, want a fault error", err)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Error("a panic of the reader itself was swallowed by Guard")
		}
	}()
	Guard(b, func() error { panic("the reader's own") })
}
