package wal

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
)

// FuzzOpen feeds arbitrary bytes to Open as the log's only segment. Open
// must not panic; when it accepts them, the records read back in
// sequence, a second Open finds the same log, it takes appends, and
// OpenReplay hands over its records from any point.
func FuzzOpen(f *testing.F) {
	fsys := diskfs.NewMem()
	w, _ := Create(fsys, dir, 1, Options{SegmentSize: 1 << 12, NoPreallocate: true})
	w.Append(writes(1, 6))
	w.Close()
	valid, _ := fsys.ReadFile(filepath.Join(dir, segmentName(1)))
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(append(valid[:len(valid):len(valid)], make([]byte, 600)...))
	f.Add(valid[:headerSize])
	f.Add(valid[:10])
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys := diskfs.NewMem()
		fsys.MkdirAll(dir)
		name := filepath.Join(dir, segmentName(1))
		g, _ := fsys.Create(name)
		g.WriteAt(b, 0)
		g.Sync()
		fsys.SyncDir(dir)
		l, _ := logBuffer()
		o := Options{SegmentSize: 1 << 12, NoPreallocate: true, Logger: l}
		w, err := Open(fsys, dir, o)
		if err != nil {
			return
		}
		last := w.LastSeq()
		r, err := w.ReadFrom(1)
		if err != nil {
			t.Fatal(err)
		}
		for seq := uint64(1); ; seq++ {
			rec, err := r.Next()
			if err == io.EOF {
				if seq != last+1 {
					t.Fatalf("read %d records, LastSeq %d", seq-1, last)
				}
				break
			}
			if err != nil || rec.Seq != seq {
				t.Fatalf("record %d: %v, %v", seq, rec, err)
			}
		}
		if err := w.Append(writes(last+1, last+2)); err != nil {
			t.Fatal(err)
		}
		w.Close()
		w, err = Open(fsys, dir, o)
		if err != nil {
			t.Fatalf("reopening a log Open accepted: %v", err)
		}
		if w.LastSeq() != last+2 {
			t.Fatalf("reopened: LastSeq %d, want %d", w.LastSeq(), last+2)
		}
		w.Close()
		// The replay of a restart, from a point the content picks.
		from := 1 + uint64(len(b))%(last+3)
		next := from
		w, err = OpenReplay(fsys, dir, from, o, Replay{Write: func(rec *codec.WriteT) error {
			if rec.Seq != next {
				t.Fatalf("replay from %d: record %d where %d belongs", from, rec.Seq, next)
			}
			next++
			return nil
		}})
		if err != nil {
			t.Fatalf("replaying a log Open accepted: %v", err)
		}
		if next != max(from, last+3) {
			t.Fatalf("replay from %d ended before %d, want %d", from, next, max(from, last+3))
		}
		w.Close()
	})
}
