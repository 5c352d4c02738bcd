package diskfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func readAll(t *testing.T, m *Mem, name string) ([]byte, error) {
	t.Helper()
	return m.ReadFile(name)
}

// TestMemCrash checks what a crash leaves: synced data and synced
// directory entries survive, a file whose entry was never synced is
// gone, and of unsynced writes only a prefix (the last possibly torn)
// survives.
func TestMemCrash(t *testing.T) {
	for seed := range uint64(200) {
		m := NewMem()
		if err := m.MkdirAll("d"); err != nil {
			t.Fatal(err)
		}
		f, err := m.Create("d/a")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("synced."), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := m.SyncDir("d"); err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("one."), 7)
		f.WriteAt([]byte("two."), 11)
		g, _ := m.Create("d/b") // never in a synced directory
		g.WriteAt([]byte("lost"), 0)
		g.Sync()

		old := m
		m = m.Crash(rand.New(rand.NewPCG(seed, 1)))
		got, err := readAll(t, m, "d/a")
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if full := "synced.one.two."; !bytes.HasPrefix([]byte(full), got) || len(got) < len("synced.") {
			t.Errorf("seed %d: after the crash d/a = %q, want a prefix of %q that keeps %q", seed, got, full, "synced.")
		}
		if _, err := readAll(t, m, "d/b"); err == nil {
			t.Errorf("seed %d: d/b survived the crash though its directory was never synced", seed)
		}
		if _, err := f.WriteAt([]byte("x"), 0); err == nil {
			t.Errorf("seed %d: a file opened before the crash still writes", seed)
		}
		if _, err := old.Create("d/c"); err == nil {
			t.Errorf("seed %d: the crashed disk still makes files", seed)
		}
	}
}

// TestMemRenameAndAllocate checks that a rename is undone by a crash
// until the directory is synced, and that Allocate extends with zeros.
func TestMemRenameAndAllocate(t *testing.T) {
	m := NewMem()
	m.MkdirAll("d")
	f, _ := m.Create("d/tmp")
	f.WriteAt([]byte("abc"), 0)
	if err := f.Allocate(8); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	m.SyncDir("d")
	if err := m.Rename("d/tmp", "d/final"); err != nil {
		t.Fatal(err)
	}
	if got, _ := readAll(t, m, "d/final"); !bytes.Equal(got, []byte("abc\x00\x00\x00\x00\x00")) {
		t.Errorf("d/final = %q", got)
	}
	m = m.Crash(rand.New(rand.NewPCG(1, 1)))
	if names, _ := m.ReadDir("d"); len(names) != 1 || names[0] != "tmp" {
		t.Errorf("after a crash before SyncDir, d holds %v, want [tmp]", names)
	}
}

// TestMemFault checks that an injected fault fails the operation and
// changes nothing.
func TestMemFault(t *testing.T) {
	m := NewMem()
	m.MkdirAll("d")
	f, _ := m.Create("d/a")
	errFull := errors.New("disk full")
	m.Fault = func(op, name string) error {
		if op == "write" {
			return errFull
		}
		return nil
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, errFull) {
		t.Errorf("WriteAt under a fault = %v, want %v", err, errFull)
	}
	if got, _ := m.ReadFile("d/a"); len(got) != 0 {
		t.Errorf("a failed write left %q", got)
	}
}
