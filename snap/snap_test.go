package snap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"iter"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"github.com/chaintable/chaintable/srv"
	"google.golang.org/protobuf/proto"
)

const dir = "data/snap"

// stripes yields every entry of t one stripe at a time, as a chain node
// would feed Save without holding a lock on the whole table.
func stripes(t *srv.Table) iter.Seq2[string, []byte] {
	return func(yield func(string, []byte) bool) {
		var buf []srv.Entry
		for i := range t.Stripes() {
			buf = t.AppendStripe(buf[:0], i)
			for _, e := range buf {
				if !yield(e.Key, e.Value) {
					return
				}
			}
		}
	}
}

func dedups(n int) []*codec.DedupT {
	var ds []*codec.DedupT
	for i := range n {
		ds = append(ds, &codec.DedupT{ClientId: uint64(i) << 40, RequestId: uint64(i * 3), Seq: uint64(i + 1), Found: i%2 == 0})
	}
	return ds
}

// table returns a table of n keys whose values derive from gen.
func table(t testing.TB, n, gen int) *srv.Table {
	tb, err := srv.NewTable(8)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		tb.Put(fmt.Sprintf("key-%d", i), bytes.Repeat([]byte{byte(i + gen)}, i%40))
	}
	return tb
}

// loaded is what Load passed to a Handler.
type loaded struct {
	entries map[string][]byte
	dedup   []*codec.DedupT
}

func load(t testing.TB, fsys diskfs.FS, logger *slog.Logger) (uint64, loaded, error) {
	t.Helper()
	l := loaded{entries: map[string][]byte{}}
	seq, _, err := Load(fsys, dir, Handler{
		Entry: func(k string, v []byte) error {
			if _, dup := l.entries[k]; dup {
				t.Errorf("key %q loaded twice", k)
			}
			l.entries[strings.Clone(k)] = bytes.Clone(v)
			return nil
		},
		Dedup: func(d *codec.DedupT) error {
			l.dedup = append(l.dedup, proto.Clone(d).(*codec.DedupT))
			return nil
		},
	}, logger)
	return seq, l, err
}

// check fails unless l holds exactly tb's entries and ds.
func check(t testing.TB, l loaded, tb *srv.Table, ds []*codec.DedupT) {
	t.Helper()
	if len(l.entries) != tb.Size() {
		t.Fatalf("loaded %d entries, want %d", len(l.entries), tb.Size())
	}
	for k, v := range l.entries {
		if want, ok := tb.Get(k); !ok || !bytes.Equal(v, want) {
			t.Fatalf("loaded %q = %q, want %q", k, v, want)
		}
	}
	if !slices.EqualFunc(l.dedup, ds, func(a, b *codec.DedupT) bool { return proto.Equal(a, b) }) {
		t.Fatalf("loaded dedup %v, want %v", l.dedup, ds)
	}
}

func quietLogger(t testing.TB) *slog.Logger {
	var b bytes.Buffer
	t.Cleanup(func() {
		if b.Len() > 0 && !t.Failed() {
			t.Errorf("unexpected log: %s", &b)
		}
	})
	return slog.New(slog.NewTextHandler(&b, nil))
}

// TestRoundTrip saves tables fed stripe by stripe, of several sizes, on
// Mem and on the real disk, and loads them back.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fsys   func(t *testing.T) (diskfs.FS, string)
		keys   int
		dedups int
	}{
		{"empty", mem, 0, 0},
		{"entries only", mem, 100, 0},
		{"dedup only", mem, 0, 5},
		{"both", mem, 3000, 50},
		{"real disk", real, 3000, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, d := tc.fsys(t)
			tb, ds := table(t, tc.keys, 0), dedups(tc.dedups)
			if err := Save(fsys, d, 42, 99, stripes(tb), slices.Values(ds)); err != nil {
				t.Fatal(err)
			}
			l := loaded{entries: map[string][]byte{}}
			seq, epoch, err := Load(fsys, d, Handler{
				Entry: func(k string, v []byte) error { l.entries[strings.Clone(k)] = bytes.Clone(v); return nil },
				Dedup: func(x *codec.DedupT) error { l.dedup = append(l.dedup, proto.Clone(x).(*codec.DedupT)); return nil },
			}, quietLogger(t))
			if err != nil || seq != 42 || epoch != 99 {
				t.Fatalf("Load = %d, %d, %v; want 42, 99", seq, epoch, err)
			}
			check(t, l, tb, ds)
		})
	}
}

// asV2 returns the snapshot b in version 2 of the format: its header
// without the epoch.
func asV2(b []byte) []byte {
	v2 := slices.Concat(magicV2[:], b[8:16], b[headerSize:])
	binary.LittleEndian.PutUint32(v2[len(v2)-4:], crc32.Checksum(v2[:len(v2)-4], crcTable))
	return v2
}

// TestLoadVersion2: a snapshot saved before snapshots kept their epoch
// loads whole, as of epoch 0 (unknown).
func TestLoadVersion2(t *testing.T) {
	fsys := diskfs.NewMem()
	tb, ds := table(t, 100, 0), dedups(3)
	if err := Save(fsys, dir, 9, 77, stripes(tb), slices.Values(ds)); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, fileName(9))
	b, _ := fsys.ReadFile(name)
	fsys.Remove(name)
	f, err := fsys.Create(name)
	if err == nil {
		_, err = f.WriteAt(asV2(b), 0)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	l := loaded{entries: map[string][]byte{}}
	seq, epoch, err := Load(fsys, dir, Handler{
		Entry: func(k string, v []byte) error { l.entries[strings.Clone(k)] = bytes.Clone(v); return nil },
		Dedup: func(x *codec.DedupT) error { l.dedup = append(l.dedup, proto.Clone(x).(*codec.DedupT)); return nil },
	}, quietLogger(t))
	if err != nil || seq != 9 || epoch != 0 {
		t.Fatalf("Load = %d, %d, %v; want 9, 0", seq, epoch, err)
	}
	check(t, l, tb, ds)
}

func mem(t *testing.T) (diskfs.FS, string)  { return diskfs.NewMem(), dir }
func real(t *testing.T) (diskfs.FS, string) { return diskfs.OS{}, filepath.Join(t.TempDir(), "snap") }

// TestNone checks that Load of a dir without snapshots says so.
func TestNone(t *testing.T) {
	fsys := diskfs.NewMem()
	if _, _, err := load(t, fsys, quietLogger(t)); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Load of a missing dir = %v, want ErrNoSnapshot", err)
	}
	fsys.MkdirAll(dir)
	if _, _, err := load(t, fsys, quietLogger(t)); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Load of an empty dir = %v, want ErrNoSnapshot", err)
	}
}

// TestPrune checks that Save keeps only the Keep newest snapshots.
func TestPrune(t *testing.T) {
	fsys := diskfs.NewMem()
	for seq := uint64(1); seq <= 5; seq++ {
		if err := Save(fsys, dir, seq*10, 0, stripes(table(t, 10, int(seq))), nil); err != nil {
			t.Fatal(err)
		}
	}
	names, _ := fsys.ReadDir(dir)
	if want := []string{fileName(40), fileName(50)}; !slices.Equal(names, want) {
		t.Errorf("after 5 saves: %v, want %v", names, want)
	}
}

// TestDamagedNewest checks that Load skips a torn or corrupt newest
// snapshot, with a log line, for the one before it, and that nothing of
// the damaged one reaches the handler.
func TestDamagedNewest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
		reason string
	}{
		{"torn", func(b []byte) []byte { return b[:len(b)/2] }, "checksum"},
		{"empty", func(b []byte) []byte { return nil }, "too short"},
		{"flipped bit", func(b []byte) []byte { b[len(b)/2] ^= 4; return b }, "checksum"},
		{"wrong magic", func(b []byte) []byte { b[0] = 'x'; return b }, "not a snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := diskfs.NewMem()
			old, new := table(t, 200, 1), table(t, 300, 2)
			Save(fsys, dir, 10, 0, stripes(old), slices.Values(dedups(3)))
			Save(fsys, dir, 20, 0, stripes(new), slices.Values(dedups(4)))
			name := filepath.Join(dir, fileName(20))
			b, _ := fsys.ReadFile(name)
			fsys.Remove(name)
			f, _ := fsys.Create(name)
			f.WriteAt(tc.damage(b), 0)
			f.Sync()
			var logs bytes.Buffer
			seq, l, err := load(t, fsys, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil || seq != 10 {
				t.Fatalf("Load = %d, %v; want the older snapshot, 10", seq, err)
			}
			check(t, l, old, dedups(3))
			if !strings.Contains(logs.String(), "skipping a damaged snapshot") || !strings.Contains(logs.String(), name) || !strings.Contains(logs.String(), tc.reason) {
				t.Errorf("log %q: want a line naming %s (%s)", &logs, name, tc.reason)
			}
		})
	}
}

// TestCrashDuringSave stops a Save at every one of its file operations
// in turn, as a crash would, then crashes the disk: Load finds either
// the previous snapshot or the new one, whole.
func TestCrashDuringSave(t *testing.T) {
	old, new := table(t, 500, 1), table(t, 700, 2)
	for stop := 0; ; stop++ {
		fsys := diskfs.NewMem()
		if err := Save(fsys, dir, 10, 0, stripes(old), nil); err != nil {
			t.Fatal(err)
		}
		ops := 0
		errCrash := errors.New("crash")
		fsys.Fault = func(op, name string) error {
			if ops++; ops > stop {
				return errCrash
			}
			return nil
		}
		err := Save(fsys, dir, 20, 0, stripes(new), slices.Values(dedups(2)))
		fsys.Fault = nil
		after := fsys.Crash(rand.New(rand.NewPCG(uint64(stop), 4)))
		var logs bytes.Buffer
		seq, l, lerr := load(t, after, slog.New(slog.NewTextHandler(&logs, nil)))
		switch {
		case lerr != nil:
			t.Fatalf("stop %d: Load = %v", stop, lerr)
		case seq == 10:
			check(t, l, old, nil)
		case seq == 20:
			check(t, l, new, dedups(2))
		default:
			t.Fatalf("stop %d: Load found seq %d", stop, seq)
		}
		if err == nil {
			if seq != 20 {
				t.Fatalf("stop %d: Save succeeded, but the crash lost its snapshot", stop)
			}
			return // Save got through every operation
		}
	}
}

// TestHandlerError checks that an error from the handler stops Load.
func TestHandlerError(t *testing.T) {
	fsys := diskfs.NewMem()
	Save(fsys, dir, 1, 0, stripes(table(t, 10, 0)), nil)
	errFull := errors.New("table full")
	_, _, err := Load(fsys, dir, Handler{Entry: func(string, []byte) error { return errFull }}, quietLogger(t))
	if !errors.Is(err, errFull) {
		t.Errorf("Load = %v, want %v", err, errFull)
	}
}

// FuzzDecode feeds arbitrary bytes to the snapshot decoder: it must not
// panic, and what it accepts must be what Save makes of its contents.
func FuzzDecode(f *testing.F) {
	fsys := diskfs.NewMem()
	tb, _ := srv.NewTable(1)
	tb.Put("a", []byte("1"))
	tb.Put("bb", nil)
	Save(fsys, dir, 7, 0, stripes(tb), slices.Values(dedups(2)))
	valid, _ := fsys.ReadFile(filepath.Join(dir, fileName(7)))
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(valid[:headerSize+trailerSize])
	f.Add(asV2(valid))
	f.Fuzz(func(t *testing.T, b []byte) {
		type entry struct {
			k string
			v []byte
		}
		var es []entry
		var ds []*codec.DedupT
		c, err := decode(b, &Handler{
			Entry: func(k string, v []byte) error { es = append(es, entry{strings.Clone(k), bytes.Clone(v)}); return nil },
			Dedup: func(d *codec.DedupT) error { ds = append(ds, proto.Clone(d).(*codec.DedupT)); return nil },
		})
		if err != nil {
			return
		}
		fsys := diskfs.NewMem()
		entries := func(yield func(string, []byte) bool) {
			for _, e := range es {
				if !yield(e.k, e.v) {
					return
				}
			}
		}
		if err := Save(fsys, dir, c.seq, c.epoch, entries, slices.Values(ds)); err != nil {
			t.Fatal(err)
		}
		again, _ := fsys.ReadFile(filepath.Join(dir, fileName(c.seq)))
		if !c.current {
			again = asV2(again) // Save writes the current version
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("decoded %x, which Save makes into %x", b, again)
		}
	})
}

// TestFaultReadingMapping: a mapped snapshot whose pages cannot be read
// (here, the file was truncated under the mapping: the kernel raises
// SIGBUS, as for a page the disk cannot read) makes Load's decoding
// return an error rather than crash the node; a fault elsewhere, a bug
// in a handler, still panics.
func TestFaultReadingMapping(t *testing.T) {
	name := filepath.Join(t.TempDir(), fileName(1))
	tb := table(t, 2000, 0)
	if err := Save(diskfs.OS{}, filepath.Dir(name), 1, 0, stripes(tb), nil); err != nil {
		t.Fatal(err)
	}
	b, unmap, err := diskfs.OS{}.MapFile(name)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	if _, err := decodeGuarded(b, nil); err != nil {
		t.Fatalf("the whole mapped snapshot: %v", err)
	}

	t.Run("handler bug", func(t *testing.T) {
		defer func() {
			if r := recover(); r == nil {
				t.Error("a nil dereference in a handler did not panic")
			}
		}()
		var nowhere *int
		decodeGuarded(b, &Handler{Entry: func(string, []byte) error { *nowhere = 1; return nil }})
	})

	t.Run("truncated under the mapping", func(t *testing.T) {
		if err := os.Truncate(name, 0); err != nil {
			t.Fatal(err)
		}
		_, err := decodeGuarded(b, nil)
		if err == nil || !strings.Contains(err.Error(), "faulted") {
			t.Fatalf("decode of an unreadable mapping = %v; want an error saying it faulted", err)
		}
	})
}
