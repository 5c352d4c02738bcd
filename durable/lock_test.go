package durable

import (
	"errors"
	"testing"

	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/srv"
)

// TestDataDirHeldByOneNode: a second table_server started on a data dir
// in use is refused (both would otherwise recover the same log and write
// into it), and the dir is free again once the first lets it go.
func TestDataDirHeldByOneNode(t *testing.T) {
	dir := t.TempDir()
	table, err := srv.NewTable(4)
	if err != nil {
		t.Fatal(err)
	}
	first, err := Open(diskfs.OS{}, dir, table, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(diskfs.OS{}, dir, table, Options{}); !errors.Is(err, diskfs.ErrLocked) {
		t.Fatalf("a second Open of a data dir in use: %v, want %v", err, diskfs.ErrLocked)
	}
	if err := first.release(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(diskfs.OS{}, dir, table, Options{})
	if err != nil {
		t.Fatalf("Open once the first let go: %v", err)
	}
	defer again.release()
	if again.ID() != first.ID() {
		t.Fatalf("identity %q, then %q", first.ID(), again.ID())
	}
}
