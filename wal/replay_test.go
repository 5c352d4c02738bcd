package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"google.golang.org/protobuf/proto"
)

// holeFS is a Mem that maps files lazily and reports holes as boldly as a
// file system could: every 512-byte block of zeros is a hole. A scan that
// trusts the holes so reads only the blocks that hold data, and one that
// trusts them wrongly misses damage the tests put past them.
type holeFS struct{ *diskfs.Mem }

func (h holeFS) MapLazy(name string) (diskfs.Mapping, error) {
	b, err := h.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return holeMapping(b), nil
}

type holeMapping []byte

const holeBlock = 512

func (m holeMapping) Bytes() []byte { return m }
func (m holeMapping) Close() error  { return nil }

func (m holeMapping) block(off int) []byte {
	return m[off:min(len(m), (off/holeBlock+1)*holeBlock)]
}

func (m holeMapping) DataAt(off int) (start, end int) {
	start = off
	for start < len(m) && allZero(m.block(start)) {
		start = (start/holeBlock + 1) * holeBlock
	}
	if start >= len(m) {
		return len(m), len(m)
	}
	end = start
	for end < len(m) && !allZero(m.block(end)) {
		end = (end/holeBlock + 1) * holeBlock
	}
	return start, end
}

// replayed opens the log with OpenReplay from from and returns it and
// copies of the records Write got. It fails the test unless Check saw the
// same records, all of them before Write got any, and unless Write got
// nothing when OpenReplay fails.
func replayed(t *testing.T, fsys diskfs.FS, from uint64, o Options) (*WAL, []*codec.WriteT, error) {
	t.Helper()
	var checked, got []*codec.WriteT
	w, err := OpenReplay(fsys, dir, from, o, Replay{
		Check: func(w *codec.WriteT) {
			if len(got) > 0 {
				t.Errorf("Check got record %d after Write got %d", w.Seq, len(got))
			}
			checked = append(checked, proto.Clone(w).(*codec.WriteT))
		},
		Write: func(w *codec.WriteT) error {
			got = append(got, proto.Clone(w).(*codec.WriteT))
			return nil
		},
	})
	if err != nil {
		if len(got) > 0 {
			t.Errorf("OpenReplay failed (%v) after Write got %d records", err, len(got))
		}
		return w, got, err
	}
	if len(checked) != len(got) {
		t.Fatalf("Check saw %d records, Write got %d", len(checked), len(got))
	}
	for i := range got {
		if !proto.Equal(checked[i], got[i]) {
			t.Fatalf("Check saw %v, Write got %v", checked[i], got[i])
		}
	}
	return w, got, err
}

// segmentedLog makes a log of writes 1 to 40 in segments of a few records
// each (the tail, with a larger size, takes the last ten), and returns the
// first seq of each segment.
func segmentedLog(t *testing.T, fsys *diskfs.Mem, o Options) []uint64 {
	t.Helper()
	small := o
	small.SegmentSize = 150
	w := mustCreate(t, fsys, 1, small)
	for s := uint64(1); s <= 30; s++ {
		w.Append(writes(s, s))
	}
	w.Close()
	w, err := Open(fsys, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	w.Append(writes(31, 40))
	w.Close()
	var firsts []uint64
	for _, n := range segments(t, fsys) {
		var f uint64
		fmt.Sscanf(n, "%016x.wal", &f)
		firsts = append(firsts, f)
	}
	if len(firsts) < 4 {
		t.Fatalf("segments %v: want at least four", firsts)
	}
	return firsts
}

// TestOpenReplay checks what OpenReplay hands over from each point of a
// log of several segments, on a disk that reads files and one that maps
// them and tells their holes.
func TestOpenReplay(t *testing.T) {
	for _, mapped := range []bool{false, true} {
		t.Run(fmt.Sprintf("mapped=%v", mapped), func(t *testing.T) {
			mem := diskfs.NewMem()
			var fsys diskfs.FS = mem
			if mapped {
				fsys = holeFS{mem}
			}
			o := quiet(t, Options{SegmentSize: 1 << 16})
			firsts := segmentedLog(t, mem, o)
			for from := uint64(1); from <= 42; from++ {
				w, got, err := replayed(t, fsys, from, o)
				if err != nil {
					t.Fatalf("OpenReplay from %d: %v", from, err)
				}
				if from <= 40 {
					checkRecords(t, got, from, 40)
				} else if len(got) > 0 {
					t.Errorf("OpenReplay from %d, after the end: handed over %d records", from, len(got))
				}
				if w.LastSeq() != 40 || w.FirstSeq() != 1 {
					t.Errorf("OpenReplay from %d: seqs %d to %d, want 1 to 40", from, w.FirstSeq(), w.LastSeq())
				}
				if err := w.Append(writes(41, 41)); err != nil {
					t.Fatal(err)
				}
				checkRecords(t, readAll(t, w, firsts[1]), firsts[1], 41)
				if err := w.TruncateAfter(40); err != nil {
					t.Fatal(err)
				}
				w.Close()
			}
			if err := mem.Remove(filepath.Join(dir, segmentName(1))); err != nil {
				t.Fatal(err)
			}
			if _, _, err := replayed(t, fsys, 1, o); !errors.Is(err, ErrReleased) {
				t.Errorf("OpenReplay from a released seq = %v, want ErrReleased", err)
			}
		})
	}
}

// TestReplaySkipsOnlyWhatItNeedsNot checks which damage OpenReplay finds:
// all of it from the segment that holds the replay's first record on,
// none in the segments before, whose records it does not need, and which
// a reader of them is told of when it reads them.
func TestReplaySkipsOnlyWhatItNeedsNot(t *testing.T) {
	for _, tc := range []struct {
		name string
		seg  int // the segment damaged
		from func(firsts []uint64) uint64
		// damage damages the segment b and returns the offset of the
		// damaged record.
		damage func(t *testing.T, b []byte) int
		// found: OpenReplay reports it
		found bool
	}{
		{"bad crc in a segment before the replay's", 0, func(f []uint64) uint64 { return f[2] + 1 }, flipCRC(2), false},
		{"bad header of a segment before the replay's", 1, func(f []uint64) uint64 { return f[2] }, badHeader, false},
		{"bad crc in the replay's segment, before its first record", 2, func(f []uint64) uint64 { return f[2] + 1 }, flipCRC(1), true},
		{"bad crc in the replay's first record", 2, func(f []uint64) uint64 { return f[2] }, flipCRC(1), true},
		{"bad crc in a later segment", 2, func(f []uint64) uint64 { return f[1] + 1 }, flipCRC(2), true},
		{"bad header of a later segment", 3, func(f []uint64) uint64 { return f[1] }, badHeader, true},
		{"bad crc in the middle of the tail", -1, func(f []uint64) uint64 { return f[len(f)-1] }, flipCRC(3), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mapped := range []bool{false, true} {
				mem := diskfs.NewMem()
				var fsys diskfs.FS = mem
				if mapped {
					fsys = holeFS{mem}
				}
				o := quiet(t, Options{SegmentSize: 1 << 16})
				firsts := segmentedLog(t, mem, o)
				i := tc.seg
				if i < 0 {
					i += len(firsts)
				}
				name := filepath.Join(dir, segmentName(firsts[i]))
				b, _ := mem.ReadFile(name)
				off := tc.damage(t, b)
				rewrite(t, mem, name, b)
				from := tc.from(firsts)

				w, got, err := replayed(t, fsys, from, o)
				var ce *CorruptError
				if tc.found {
					if !errors.As(err, &ce) || ce.File != name || ce.Offset != int64(off) {
						t.Fatalf("mapped=%v: OpenReplay from %d = %v, want damage in %s at %d", mapped, from, err, name, off)
					}
					continue
				}
				if err != nil {
					t.Fatalf("mapped=%v: OpenReplay from %d = %v; the damage is in records it does not need", mapped, from, err)
				}
				checkRecords(t, got, from, 40)
				// A successor's reader of the damaged segment is told.
				r, err := w.ReadFrom(firsts[i])
				if err != nil {
					t.Fatal(err)
				}
				for err == nil {
					var rec *codec.WriteT
					if rec, err = r.Next(); err == nil && !proto.Equal(rec, write(rec.Seq)) {
						t.Fatalf("mapped=%v: read a damaged record: %v", mapped, rec)
					}
				}
				if !errors.As(err, &ce) || ce.File != name {
					t.Errorf("mapped=%v: reading the damaged segment = %v, want its damage", mapped, err)
				}
				w.Close()
				// Open, which checks everything, still refuses the log.
				if _, err := Open(fsys, dir, o); !errors.As(err, &ce) || ce.File != name {
					t.Errorf("mapped=%v: Open = %v, want the damage in %s", mapped, err, name)
				}
			}
		})
	}
}

// flipCRC damages the nth record's checksum.
func flipCRC(n int) func(t *testing.T, b []byte) int {
	return func(t *testing.T, b []byte) int {
		off, _ := recordBounds(t, b, n)
		b[off+4] ^= 1
		return off
	}
}

func badHeader(t *testing.T, b []byte) int { b[9] ^= 1; return 0 }

// TestReplayMissingSegment checks that a segment gone after the one the
// replay starts in is refused, and one gone before it is not (its records
// are not needed), though a reader of them is told.
func TestReplayMissingSegment(t *testing.T) {
	mem := diskfs.NewMem()
	o := quiet(t, Options{SegmentSize: 1 << 16})
	firsts := segmentedLog(t, mem, o)
	mem.Remove(filepath.Join(dir, segmentName(firsts[2])))
	if _, _, err := replayed(t, mem, firsts[1], o); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("OpenReplay from before a missing segment = %v, want an error about missing records", err)
	}
	w, got, err := replayed(t, mem, firsts[3], o)
	if err != nil {
		t.Fatalf("OpenReplay from after a missing segment: %v", err)
	}
	checkRecords(t, got, firsts[3], 40)
	r, err := w.ReadFrom(firsts[1])
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = r.Next()
	}
	if err == io.EOF {
		t.Error("a reader across the missing segment reached the end")
	}
	w.Close()
}

// TestReplayTornTail checks that OpenReplay truncates a torn tail, with a
// log line, and hands over only the whole records before it.
func TestReplayTornTail(t *testing.T) {
	for _, mapped := range []bool{false, true} {
		mem := diskfs.NewMem()
		var fsys diskfs.FS = mem
		if mapped {
			fsys = holeFS{mem}
		}
		l, logs := logBuffer()
		o := Options{SegmentSize: 1 << 16, Logger: l}
		w := mustCreate(t, mem, 1, o)
		w.Append(writes(1, 20))
		w.Close()
		name := filepath.Join(dir, segmentName(1))
		b, _ := mem.ReadFile(name)
		off, end := recordBounds(t, b, 20)
		b[end-1] ^= 0xff
		rewrite(t, mem, name, b)
		w, got, err := replayed(t, fsys, 5, o)
		if err != nil {
			t.Fatalf("mapped=%v: %v", mapped, err)
		}
		checkRecords(t, got, 5, 19)
		if w.LastSeq() != 19 || !strings.Contains(logs.String(), fmt.Sprintf("offset=%d", off)) {
			t.Errorf("mapped=%v: LastSeq %d, log %q: want 19 and the truncation at %d", mapped, w.LastSeq(), logs, off)
		}
		w.Close()
	}
}

// TestDamagePastHoles checks the damage that only reading past the zeros
// of preallocated space finds: a bad record at the end of the tail is a
// torn write only when nothing was written after it, and an earlier
// segment has nothing after its records. Trusting the holes of a file
// must not hide data that lies after them.
func TestDamagePastHoles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		seg    int
		damage func(t *testing.T, b []byte) (off int, grown []byte)
		torn   bool
	}{
		{"bad crc at the end of the tail, nothing after", -1, func(t *testing.T, b []byte) (int, []byte) {
			offs := recordOffsets(b)
			off := offs[len(offs)-2]
			b[off+4] ^= 1
			return off, b
		}, true},
		{"bad crc at the end of the tail, data after the zeros", -1, func(t *testing.T, b []byte) (int, []byte) {
			offs := recordOffsets(b)
			off := offs[len(offs)-2]
			b[off+4] ^= 1
			copy(b[len(b)-100:], "written later")
			return off, b
		}, false},
		{"an earlier segment with zeros, then data", 0, func(t *testing.T, b []byte) (int, []byte) {
			end := len(b)
			b = append(b, make([]byte, 8*holeBlock)...)
			return end, append(b, "data after the zeros"...)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mapped := range []bool{false, true} {
				mem := diskfs.NewMem()
				var fsys diskfs.FS = mem
				if mapped {
					fsys = holeFS{mem}
				}
				l, logs := logBuffer()
				o := Options{SegmentSize: 1 << 16, Logger: l}
				firsts := segmentedLog(t, mem, o)
				i := tc.seg
				if i < 0 {
					i += len(firsts)
				}
				name := filepath.Join(dir, segmentName(firsts[i]))
				b, _ := mem.ReadFile(name)
				off, b := tc.damage(t, b)
				rewrite(t, mem, name, b)
				w, err := Open(fsys, dir, o)
				if tc.torn {
					if err != nil || !strings.Contains(logs.String(), fmt.Sprintf("offset=%d", off)) {
						t.Errorf("mapped=%v: Open = %v, log %q: want the torn record at %d truncated", mapped, err, logs, off)
					}
					if w != nil {
						w.Close()
					}
					continue
				}
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.File != name || ce.Offset != int64(off) {
					t.Errorf("mapped=%v: Open = %v, want damage in %s at %d", mapped, err, name, off)
				}
			}
		})
	}
}

// TestCrashReplay is TestCrashRecovery's recovery by OpenReplay, from a
// random point, on a disk that maps files and tells their holes: what it
// hands over is the recovered log from that point, and each recovered log
// takes appends and survives the next crash.
func TestCrashReplay(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 40
	}
	for seed := range uint64(rounds) {
		rng := rand.New(rand.NewPCG(seed, 3))
		mem := diskfs.NewMem()
		o := Options{SegmentSize: int64(100 + rng.IntN(2000)), NoPreallocate: rng.IntN(2) == 0}
		l, logs := logBuffer()
		o.Logger = l
		w := mustCreate(t, mem, 1, o)
		var synced, released uint64
		for range 1 + rng.IntN(3) {
			next := appendAtRandom(t, w, rng, seed, false, &synced, &released)
			mem = mem.Crash(rng)
			// A snapshot holds what the log held up to some synced
			// point: the replay starts after it.
			low := max(released, 1)
			from := low + uint64(rng.IntN(int(synced)-int(low)+2))
			var err error
			var got []*codec.WriteT
			w, got, err = replayed(t, holeFS{mem}, from, o)
			if err != nil {
				t.Fatalf("seed %d: OpenReplay from %d after a crash: %v\nlog: %s", seed, from, err, logs)
			}
			last := w.LastSeq()
			if last < synced || last >= next {
				t.Fatalf("seed %d: recovered up to %d; %d were synced, %d appended", seed, last, synced, next-1)
			}
			if from <= last {
				checkRecords(t, got, from, last)
			} else if len(got) > 0 {
				t.Fatalf("seed %d: replay from %d past the end %d handed over %d records", seed, from, last, len(got))
			}
			first := w.FirstSeq()
			checkRecords(t, readAll(t, w, first), first, last)
			synced = last
		}
		w.Close()
	}
}

// TestOSHoles checks the real disk's holes: a torn record at the end of a
// preallocated tail is truncated, but the same record with data written
// far past it, in space the file system may report as a hole before,
// stops Open.
func TestOSHoles(t *testing.T) {
	for _, later := range []bool{false, true} {
		d := filepath.Join(t.TempDir(), "wal")
		l, logs := logBuffer()
		o := Options{SegmentSize: 8 << 20, Logger: l}
		w, err := Create(diskfs.OS{}, d, 1, o)
		if err != nil {
			t.Fatal(err)
		}
		w.Append(writes(1, 100))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(d, segmentName(1))
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 8<<20 {
			t.Fatalf("segment of %d bytes, want it preallocated to %d", len(b), 8<<20)
		}
		off, _ := recordBounds(t, b, 100)
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{b[off+4] ^ 1}, int64(off+4))
		if later {
			f.WriteAt([]byte("written later"), 6<<20)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		w, err = Open(diskfs.OS{}, d, o)
		if !later {
			if err != nil || w.LastSeq() != 99 || !strings.Contains(logs.String(), "torn") {
				t.Fatalf("Open = %v, log %q: want the torn record 100 truncated", err, logs)
			}
			w.Close()
			continue
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Offset != int64(off) {
			t.Errorf("Open with data written past the zeros = %v, want damage at %d", err, off)
		}
		if after, _ := os.ReadFile(name); !bytes.Equal(after[:off], b[:off]) {
			t.Error("Open changed the damaged segment")
		}
	}
}

// TestReadWhileAppendingOS attacks the mapped reads of a successor's
// delta on the real disk: readers map segments that the appender is
// writing, cutting (truncating) and the releaser deleting, meanwhile.
// Each must read whole records up to where its ReadFrom began, or be
// told the records were released, and never fault.
func TestReadWhileAppendingOS(t *testing.T) {
	for _, prealloc := range []bool{true, false} {
		d := filepath.Join(t.TempDir(), "wal")
		o := quiet(t, Options{SegmentSize: 64 << 10, NoPreallocate: !prealloc})
		w, err := Create(diskfs.OS{}, d, 1, o)
		if err != nil {
			t.Fatal(err)
		}
		const total = 30000
		done := make(chan error, 1)
		go func() {
			for s := uint64(1); s <= total; s += 3 {
				if err := w.Append(writes(s, s+2)); err != nil {
					done <- err
					return
				}
				if s%60 == 1 {
					if err := w.Flush(); err != nil {
						done <- err
						return
					}
				}
				if s%6000 == 1 {
					if err := w.ReleaseBefore(s / 2); err != nil {
						done <- err
						return
					}
				}
			}
			done <- nil
		}()
		rng := rand.New(rand.NewPCG(1, 2))
		for reading := true; reading; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				reading = false
			default:
			}
			first, last := w.FirstSeq(), w.LastSeq()
			if last < first {
				continue
			}
			from := first + uint64(rng.IntN(int(last-first+1)))
			r, err := w.ReadFrom(from)
			if errors.Is(err, ErrReleased) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			for seq := from; ; seq++ {
				rec, err := r.Next()
				if err == io.EOF {
					if seq <= last {
						t.Fatalf("prealloc=%v: read from %d ended at %d, before %d", prealloc, from, seq, last)
					}
					break
				}
				if errors.Is(err, ErrReleased) {
					break
				}
				if err != nil {
					t.Fatalf("prealloc=%v: reading %d: %v", prealloc, seq, err)
				}
				if !proto.Equal(rec, write(seq)) {
					t.Fatalf("prealloc=%v: read %v, want %v", prealloc, rec, write(seq))
				}
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
