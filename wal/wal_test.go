package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"google.golang.org/protobuf/proto"
)

const dir = "data/wal"

// write returns the write of seq the tests append: its key and value
// derive from seq, so that any record read back can be checked.
func write(seq uint64) *codec.WriteT {
	w := &codec.WriteT{Seq: seq, Op: codec.OpPut, Key: fmt.Sprintf("key-%d", seq%97),
		Value: bytes.Repeat([]byte{byte(seq)}, int(seq%50)), ClientId: seq % 7, RequestId: seq}
	if seq%5 == 0 {
		w.Op, w.Value = codec.OpDel, nil
	}
	return w
}

func writes(from, to uint64) []*codec.WriteT {
	var ws []*codec.WriteT
	for s := from; s <= to; s++ {
		ws = append(ws, write(s))
	}
	return ws
}

// logBuffer returns a logger that writes to the returned buffer.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// quiet are the options of tests that expect no notices.
func quiet(t testing.TB, o Options) Options {
	l, b := logBuffer()
	t.Cleanup(func() {
		if b.Len() > 0 && !t.Failed() {
			t.Errorf("unexpected log: %s", b)
		}
	})
	o.Logger = l
	return o
}

// readAll returns every record from seq on.
func readAll(t testing.TB, w *WAL, seq uint64) []*codec.WriteT {
	t.Helper()
	r, err := w.ReadFrom(seq)
	if err != nil {
		t.Fatalf("ReadFrom(%d): %v", seq, err)
	}
	var got []*codec.WriteT
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatalf("ReadFrom(%d): Next: %v", seq, err)
		}
		got = append(got, rec)
	}
}

// checkRecords fails unless got are the writes from..to.
func checkRecords(t testing.TB, got []*codec.WriteT, from, to uint64) {
	t.Helper()
	if uint64(len(got)) != to+1-from {
		t.Fatalf("read %d records, want %d (seq %d to %d)", len(got), to+1-from, from, to)
	}
	for i, g := range got {
		if want := write(from + uint64(i)); !proto.Equal(g, want) {
			t.Fatalf("record %d = %v, want %v", i, g, want)
		}
	}
}

func mustCreate(t testing.TB, fsys diskfs.FS, first uint64, o Options) *WAL {
	t.Helper()
	w, err := Create(fsys, dir, first, o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestRoundTrip appends in batches, reopens, and reads everything back,
// with and without preallocation, across segment sizes that make one
// segment or many.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"one segment", Options{SegmentSize: 1 << 20}},
		{"small segments", Options{SegmentSize: 300}},
		{"tiny segments, not preallocated", Options{SegmentSize: 1, NoPreallocate: true}},
		{"not preallocated", Options{NoPreallocate: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := diskfs.NewMem()
			o := quiet(t, tc.opts)
			w := mustCreate(t, fsys, 10, o)
			if got := w.LastSeq(); got != 9 {
				t.Errorf("LastSeq of an empty log from 10 = %d, want 9", got)
			}
			for from := uint64(10); from < 200; from += 19 {
				if err := w.Append(writes(from, from+18)); err != nil {
					t.Fatal(err)
				}
			}
			checkRecords(t, readAll(t, w, 10), 10, 199)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w, err := Open(fsys, dir, o)
			if err != nil {
				t.Fatal(err)
			}
			if w.LastSeq() != 199 || w.SyncedSeq() != 199 {
				t.Errorf("reopened: LastSeq %d, SyncedSeq %d, want 199", w.LastSeq(), w.SyncedSeq())
			}
			checkRecords(t, readAll(t, w, 10), 10, 199)
			// It appends where it left off, and reads the lot back again.
			if err := w.Append(writes(200, 210)); err != nil {
				t.Fatal(err)
			}
			w.Close()
			w, err = Open(fsys, dir, o)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, readAll(t, w, 10), 10, 210)
			checkRecords(t, readAll(t, w, 150), 150, 210)
			checkRecords(t, readAll(t, w, 211), 211, 210)
		})
	}
}

// TestOS runs a log on the real disk, preallocated: appends, syncs
// across a rotation, and reads back after reopening.
func TestOS(t *testing.T) {
	d := filepath.Join(t.TempDir(), "wal")
	o := quiet(t, Options{SegmentSize: 8 << 20})
	w, err := Create(diskfs.OS{}, d, 1, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(writes(1, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	// The third big write no longer fits in the first segment.
	var bigs []*codec.WriteT
	for s := uint64(1001); s <= 1003; s++ {
		big := write(s)
		big.Value = bytes.Repeat([]byte{byte(s)}, 3<<20)
		bigs = append(bigs, big)
	}
	if err := w.Append(bigs); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(writes(1004, 1010)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w, err = Open(diskfs.OS{}, d, o)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got := readAll(t, w, 1)
	if len(got) != 1010 {
		t.Fatalf("read back %d records, want 1010", len(got))
	}
	for i, big := range bigs {
		if !proto.Equal(got[1000+i], big) {
			t.Errorf("big record %d differs", big.Seq)
		}
	}
	checkRecords(t, got[:1000], 1, 1000)
	checkRecords(t, got[1003:], 1004, 1010)
	names, _ := diskfs.OS{}.ReadDir(d)
	if want := []string{segmentName(1), segmentName(1003)}; fmt.Sprint(names) != fmt.Sprint(want) {
		t.Errorf("segments %v, want %v", names, want)
	}
}

// TestAppendRefused checks that writes out of sequence are refused whole
// and that a second Create in the same dir fails.
func TestAppendRefused(t *testing.T) {
	fsys := diskfs.NewMem()
	w := mustCreate(t, fsys, 1, quiet(t, Options{SegmentSize: 1 << 16}))
	if err := w.Append(writes(1, 3)); err != nil {
		t.Fatal(err)
	}
	for _, ws := range [][]*codec.WriteT{
		{write(5)},
		{write(3)},
		{write(4), write(6)},
		{write(4), write(4)},
	} {
		if err := w.Append(ws); err == nil || !strings.Contains(err.Error(), "sequence number") {
			t.Errorf("Append(seqs %d..) = %v, want a sequence error", ws[0].Seq, err)
		}
	}
	// A record may hold 1<<24 bytes: the value that fills it exactly is
	// taken, one byte more is refused, with the write before it.
	fits := &codec.WriteT{Seq: 4, Op: codec.OpPut, Key: "k"}
	fits.Value = make([]byte, maxRecord-codec.WriteSize(fits)-5) // its tag and length take 5 bytes
	if n := codec.WriteSize(fits); n != maxRecord {
		t.Fatalf("a write of %d bytes, want %d", n, maxRecord)
	}
	tooLarge := &codec.WriteT{Seq: 5, Op: codec.OpPut, Key: "k", Value: make([]byte, len(fits.Value)+1)}
	if err := w.Append([]*codec.WriteT{write(4), tooLarge}); err == nil || !strings.Contains(err.Error(), "more than the limit") {
		t.Errorf("Append of a write of %d bytes = %v, want a size error", codec.WriteSize(tooLarge), err)
	}
	if w.LastSeq() != 3 {
		t.Errorf("LastSeq after refused appends = %d, want 3", w.LastSeq())
	}
	if err := w.Append([]*codec.WriteT{fits}); err != nil {
		t.Errorf("Append of a write of %d bytes: %v", maxRecord, err)
	}
	if _, err := Create(fsys, dir, 1, Options{SegmentSize: 1 << 16}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over a log = %v, want ErrExist", err)
	}
	if _, err := Create(fsys, "other", 0, Options{}); err == nil {
		t.Error("Create from seq 0: no error")
	}
	if _, err := Open(fsys, "empty", Options{}); err == nil {
		t.Error("Open of a missing dir: no error")
	}
	fsys.MkdirAll("empty")
	if _, err := Open(fsys, "empty", Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of an empty dir = %v, want ErrNotExist", err)
	}
}

// segments returns the names of the log's segment files.
func segments(t testing.TB, fsys diskfs.FS) []string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestRotateRelease checks segment names, ReleaseBefore's choice of
// segments, and ReadFrom before and across released ones.
func TestRotateRelease(t *testing.T) {
	fsys := diskfs.NewMem()
	o := quiet(t, Options{SegmentSize: 200})
	w := mustCreate(t, fsys, 1, o)
	for s := uint64(1); s <= 100; s++ {
		if err := w.Append(writes(s, s)); err != nil {
			t.Fatal(err)
		}
	}
	w.Sync()
	names := segments(t, fsys)
	if len(names) < 5 || names[0] != "0000000000000001.wal" {
		t.Fatalf("segments %v: want several, the first 0000000000000001.wal", names)
	}
	var firsts []uint64
	for _, n := range names {
		var f uint64
		fmt.Sscanf(n, "%016x.wal", &f)
		firsts = append(firsts, f)
	}
	// Release up to a point inside the third segment: the first two go.
	mid := firsts[2] + 1
	if err := w.ReleaseBefore(mid); err != nil {
		t.Fatal(err)
	}
	if got := segments(t, fsys); len(got) != len(names)-2 || got[0] != names[2] {
		t.Errorf("after ReleaseBefore(%d): %v, want %v", mid, got, names[2:])
	}
	if w.FirstSeq() != firsts[2] {
		t.Errorf("FirstSeq = %d, want %d", w.FirstSeq(), firsts[2])
	}
	if _, err := w.ReadFrom(firsts[2] - 1); !errors.Is(err, ErrReleased) {
		t.Errorf("ReadFrom a released seq = %v, want ErrReleased", err)
	}
	for s := firsts[2]; s <= 101; s++ {
		checkRecords(t, readAll(t, w, s), s, 100)
	}
	// Releasing everything keeps the tail.
	if err := w.ReleaseBefore(1000); err != nil {
		t.Fatal(err)
	}
	if got := segments(t, fsys); len(got) != 1 || got[0] != names[len(names)-1] {
		t.Errorf("after ReleaseBefore(1000): %v, want the tail %s only", got, names[len(names)-1])
	}
	w.Close()
	w, err := Open(fsys, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, readAll(t, w, firsts[len(firsts)-1]), firsts[len(firsts)-1], 100)
}

// TestReleaseWhileReading checks that a Reader whose next segment is
// released meanwhile says so rather than skipping records.
func TestReleaseWhileReading(t *testing.T) {
	fsys := diskfs.NewMem()
	w := mustCreate(t, fsys, 1, quiet(t, Options{SegmentSize: 100}))
	for s := uint64(1); s <= 40; s++ {
		w.Append(writes(s, s))
	}
	r, err := w.ReadFrom(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if err := w.ReleaseBefore(40); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := r.Next()
		if errors.Is(err, ErrReleased) {
			return
		}
		if err != nil {
			t.Fatalf("Next after a release = %v, want ErrReleased", err)
		}
	}
}

// TestCrashRecovery is the property test: a log appended to, synced now
// and then, rotated, released and truncated, then crashed at a random point,
// recovers a prefix of the writes that holds every synced one; and the
// recovered log takes appends and survives another crash.
func TestCrashRecovery(t *testing.T) {
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	for seed := range uint64(rounds) {
		rng := rand.New(rand.NewPCG(seed, 2))
		fsys := diskfs.NewMem()
		o := Options{SegmentSize: int64(100 + rng.IntN(2000)), NoPreallocate: rng.IntN(2) == 0}
		l, logs := logBuffer()
		o.Logger = l
		w := mustCreate(t, fsys, 1, o)
		var synced, released uint64
		for range 1 + rng.IntN(3) { // crash, recover, go on
			next := appendAtRandom(t, w, rng, seed, true, &synced, &released)
			fsys = fsys.Crash(rng)
			var err error
			w, err = Open(fsys, dir, o)
			if err != nil {
				t.Fatalf("seed %d: Open after a crash: %v\nlog: %s", seed, err, logs)
			}
			last := w.LastSeq()
			if last < synced || last >= next {
				t.Fatalf("seed %d: recovered up to %d; %d were synced, %d appended", seed, last, synced, next-1)
			}
			first := w.FirstSeq()
			if first > max(released, 1) {
				t.Fatalf("seed %d: the log starts at %d, but only records before %d were released", seed, first, released)
			}
			checkRecords(t, readAll(t, w, first), first, last)
			synced = last // Open syncs what it found
		}
		w.Close()
	}
}

// appendAtRandom appends a random run of writes to w, syncing, flushing,
// releasing and, if truncate, truncating now and then, as the crash tests
// do between crashes. It keeps synced and released up to date and returns
// the next seq to append.
func appendAtRandom(t *testing.T, w *WAL, rng *rand.Rand, seed uint64, truncate bool, synced, released *uint64) uint64 {
	t.Helper()
	ops := 6
	if truncate {
		ops = 7
	}
	next := w.LastSeq() + 1
	for range rng.IntN(60) {
		n := uint64(1 + rng.IntN(8))
		if err := w.Append(writes(next, next+n-1)); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		next += n
		switch op := rng.IntN(ops); {
		case op == 0:
			if err := w.Sync(); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			*synced = next - 1
		case op == 1:
			w.Flush()
		case op == 2:
			at := uint64(rng.IntN(int(*synced) + 1))
			*released = max(*released, at)
			if err := w.ReleaseBefore(at); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		case op == 3 && truncate:
			// A restart's truncation to the committed point; the
			// writes after it come again (write(seq) is the same).
			first := w.FirstSeq()
			at := first - 1 + uint64(rng.IntN(int(next-first)+1))
			if err := w.TruncateAfter(at); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			next, *synced = at+1, min(*synced, at)
		}
	}
	return next
}

// TestTornTail checks that each kind of damage a crash can leave at the
// end of the last segment is truncated, with a log line, and that the
// log then appends after the last whole record.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name     string
		prealloc bool
		// tear damages the last record, which starts at off and ends at
		// end, in the file's content b.
		tear func(b []byte, off, end int) []byte
	}{
		{"short frame", false, func(b []byte, off, end int) []byte { return b[:off+3] }},
		{"short payload", false, func(b []byte, off, end int) []byte { return b[:end-1] }},
		{"short payload, preallocated", true, func(b []byte, off, end int) []byte { clear(b[end-1:]); return b }},
		{"bad crc at the end", false, func(b []byte, off, end int) []byte { b[end-1] ^= 0xff; return b }},
		{"bad crc, preallocated", true, func(b []byte, off, end int) []byte { b[end-1] ^= 0xff; return b }},
		{"zero sector, then written data", true, func(b []byte, off, end int) []byte {
			// The record is long; one of its sectors never reached the
			// disk, though later ones did.
			sec := (off + frameSize + sectorSize) / sectorSize * sectorSize
			clear(b[sec : sec+sectorSize])
			copy(b[end+10:], "later data")
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := diskfs.NewMem()
			l, logs := logBuffer()
			o := Options{NoPreallocate: !tc.prealloc, Logger: l, SegmentSize: 1 << 16}
			w := mustCreate(t, fsys, 1, o)
			w.Append(writes(1, 20))
			big := write(21)
			big.Value = bytes.Repeat([]byte("v"), 3000)
			w.Append([]*codec.WriteT{big})
			w.Close()
			name := filepath.Join(dir, segmentName(1))
			b, _ := fsys.ReadFile(name)
			off, end := recordBounds(t, b, 21)
			b = tc.tear(b, off, end)
			rewrite(t, fsys, name, b)

			w, err := Open(fsys, dir, o)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if w.LastSeq() != 20 {
				t.Errorf("LastSeq = %d, want 20", w.LastSeq())
			}
			if !strings.Contains(logs.String(), "truncating a torn record") || !strings.Contains(logs.String(), fmt.Sprint(off)) {
				t.Errorf("log %q: want a line about the truncation at %d", logs, off)
			}
			if err := w.Append(writes(21, 25)); err != nil {
				t.Fatal(err)
			}
			w.Close()
			logs.Reset()
			w, err = Open(fsys, dir, o)
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, readAll(t, w, 1), 1, 25)
			if logs.Len() > 0 {
				t.Errorf("second Open logged %s", logs)
			}
		})
	}
}

// recordOffsets returns where each record of the segment b begins, and
// where the last one ends.
func recordOffsets(b []byte) []int {
	_, prev, _ := parseHeader(b)
	s := scanner{data: b, off: headerSize, crc: prev}
	offs := []int{s.off}
	for {
		if p, _ := s.next(); p == nil {
			return offs
		}
		offs = append(offs, s.off)
	}
}

// recordBounds returns where the nth record (from 1) of the segment b
// begins and ends.
func recordBounds(t testing.TB, b []byte, n int) (off, end int) {
	t.Helper()
	offs := recordOffsets(b)
	if n >= len(offs) {
		t.Fatalf("the segment has %d records, not %d", len(offs)-1, n)
	}
	return offs[n-1], offs[n]
}

// rewrite replaces the content of name with b, synced.
func rewrite(t testing.TB, fsys *diskfs.Mem, name string, b []byte) {
	t.Helper()
	if err := fsys.Remove(name); err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(b, 0)
	f.Sync()
	f.Close()
	fsys.SyncDir(filepath.Dir(name))
}

// TestCorruption checks that damage anywhere but at the tail is an error
// that names the file and the offset, and that Open changes nothing.
func TestCorruption(t *testing.T) {
	for _, tc := range []struct {
		name string
		seg  int // which segment to damage
		// damage returns the offset it damaged in b.
		damage func(b []byte, t *testing.T) int
		reason string
	}{
		{"bad crc in the middle of the last segment", -1, func(b []byte, t *testing.T) int {
			off, end := recordBounds(t, b, 3)
			b[end-1] ^= 1
			return off
		}, "checksum"},
		{"bad length in the middle of the last segment", -1, func(b []byte, t *testing.T) int {
			off, _ := recordBounds(t, b, 2)
			b[off+3] = 0x7f
			return off
		}, "limit"},
		{"bad crc in an earlier segment", 0, func(b []byte, t *testing.T) int {
			off, end := recordBounds(t, b, 2)
			b[end-1] ^= 1
			return off
		}, "checksum"},
		{"torn end of an earlier segment", 0, func(b []byte, t *testing.T) int {
			offs := recordOffsets(b)
			b[len(b)-1] ^= 1
			return offs[len(offs)-2]
		}, "checksum"},
		{"bad header", 1, func(b []byte, t *testing.T) int { b[9] ^= 1; return 0 }, "header checksum"},
		{"not a segment", 1, func(b []byte, t *testing.T) int { b[0] = 'x'; return 0 }, "not a segment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := diskfs.NewMem()
			o := quiet(t, Options{SegmentSize: 150})
			w := mustCreate(t, fsys, 1, o)
			for s := uint64(1); s <= 30; s++ {
				w.Append(writes(s, s))
			}
			w.Close()
			// The tail, with larger segments, takes several records.
			w, err := Open(fsys, dir, Options{SegmentSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			w.Append(writes(31, 40))
			w.Close()
			names := segments(t, fsys)
			i := tc.seg
			if i < 0 {
				i += len(names)
			}
			name := filepath.Join(dir, names[i])
			b, _ := fsys.ReadFile(name)
			off := tc.damage(b, t)
			rewrite(t, fsys, name, b)
			_, err = Open(fsys, dir, o)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Open = %v, want a CorruptError", err)
			}
			if ce.File != name || ce.Offset != int64(off) || !strings.Contains(ce.Reason, tc.reason) {
				t.Errorf("Open = %v, want damage in %s at offset %d (%s)", err, name, off, tc.reason)
			}
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), fmt.Sprint(off)) {
				t.Errorf("error %q does not name the file and offset", err)
			}
			if after, _ := fsys.ReadFile(name); !bytes.Equal(after, b) {
				t.Error("Open changed a damaged segment")
			}
		})
	}
}

// TestMissingSegment checks that a log with a segment gone from its
// middle is refused.
func TestMissingSegment(t *testing.T) {
	fsys := diskfs.NewMem()
	o := quiet(t, Options{SegmentSize: 150})
	w := mustCreate(t, fsys, 1, o)
	for s := uint64(1); s <= 30; s++ {
		w.Append(writes(s, s))
	}
	w.Close()
	names := segments(t, fsys)
	fsys.Remove(filepath.Join(dir, names[1]))
	if _, err := Open(fsys, dir, o); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Open with a segment missing = %v, want an error about missing records", err)
	}
}

// TestWriteFailure checks that a failed write or sync breaks the log for
// good: nothing later is accepted, and nothing is reported synced.
func TestWriteFailure(t *testing.T) {
	for _, op := range []string{"write", "sync"} {
		t.Run(op, func(t *testing.T) {
			fsys := diskfs.NewMem()
			w := mustCreate(t, fsys, 1, quiet(t, Options{SegmentSize: 1 << 16}))
			w.Append(writes(1, 5))
			w.Sync()
			errDisk := errors.New("no space left on device")
			fsys.Fault = func(o, name string) error {
				if o == op {
					return errDisk
				}
				return nil
			}
			w.Append(writes(6, 8))
			if err := w.Sync(); !errors.Is(err, errDisk) {
				t.Fatalf("Sync under a %s fault = %v, want %v", op, err, errDisk)
			}
			fsys.Fault = nil
			if err := w.Append(writes(9, 9)); !errors.Is(err, errDisk) {
				t.Errorf("Append after the failure = %v, want the sticky error", err)
			}
			if err := w.Sync(); !errors.Is(err, errDisk) {
				t.Errorf("Sync after the failure = %v, want the sticky error", err)
			}
			if w.SyncedSeq() != 5 {
				t.Errorf("SyncedSeq = %d, want 5", w.SyncedSeq())
			}
		})
	}
}

// TestTruncateAfter cuts the log at points inside a segment, at segment
// boundaries, and before every record, then appends different writes
// after the cut: a reopened log holds the kept records and the new ones.
func TestTruncateAfter(t *testing.T) {
	fsys := diskfs.NewMem()
	o := quiet(t, Options{SegmentSize: 200})
	w := mustCreate(t, fsys, 1, o)
	for s := uint64(1); s <= 60; s++ {
		w.Append(writes(s, s))
	}
	w.Close()
	var firsts []uint64
	for _, n := range segments(t, fsys) {
		var f uint64
		fmt.Sscanf(n, "%016x.wal", &f)
		firsts = append(firsts, f)
	}
	points := []uint64{0, 1, 30, 59, 60, 61, firsts[1] - 1, firsts[1], firsts[len(firsts)-1] - 1, firsts[len(firsts)-1]}
	for _, seq := range points {
		fsys := diskfs.NewMem()
		w := mustCreate(t, fsys, 1, o)
		for s := uint64(1); s <= 60; s++ {
			w.Append(writes(s, s))
		}
		if err := w.TruncateAfter(seq); err != nil {
			t.Fatalf("TruncateAfter(%d): %v", seq, err)
		}
		kept := min(seq, 60)
		if w.LastSeq() != kept || w.SyncedSeq() > kept {
			t.Fatalf("TruncateAfter(%d): LastSeq %d, SyncedSeq %d", seq, w.LastSeq(), w.SyncedSeq())
		}
		// Different writes after the cut: the seqs are reused.
		again := writes(kept+1, kept+5)
		for _, a := range again {
			a.Key = "again"
		}
		if err := w.Append(again); err != nil {
			t.Fatal(err)
		}
		w.Close()
		w, err := Open(fsys, dir, o)
		if err != nil {
			t.Fatalf("TruncateAfter(%d), reopened: %v", seq, err)
		}
		got := readAll(t, w, 1)
		checkRecords(t, got[:kept], 1, kept)
		if len(got) != int(kept)+5 || got[kept].Key != "again" {
			t.Fatalf("TruncateAfter(%d): read %d records, want %d ending with the new ones", seq, len(got), kept+5)
		}
	}
	// Not before the released records.
	w, _ = Open(fsys, dir, o)
	w.ReleaseBefore(firsts[2])
	if err := w.TruncateAfter(firsts[2] - 2); !errors.Is(err, ErrReleased) {
		t.Errorf("TruncateAfter into released records = %v, want ErrReleased", err)
	}
}
