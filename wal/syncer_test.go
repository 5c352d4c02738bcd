package wal

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
)

func TestParseMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mode
		ok   bool
	}{
		{"batch", Batch, true},
		{"always", Always, true},
		{"none", None, true},
		{"Batch", 0, false},
		{"", 0, false},
	} {
		got, err := ParseMode(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseMode(%q) = %v, %v", tc.in, got, err)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

// slowSyncs makes every sync of fsys take d, as a disk's would.
func slowSyncs(fsys *diskfs.Mem, d time.Duration) {
	fsys.Fault = func(op, name string) error {
		if op == "sync" {
			time.Sleep(d)
		}
		return nil
	}
}

// appenders runs n goroutines that each append count writes through s,
// one at a time (taking the next seq under a lock, as a chain node's
// single writer would), and wait for each to be durable. It returns the
// highest seq acknowledged, and the first error, once every goroutine
// has stopped.
func appenders(s *Syncer, first uint64, n, count int) (acked uint64, err error) {
	var mu sync.Mutex
	next := first
	var maxAcked atomic.Uint64
	var firstErr error
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for range count {
				mu.Lock()
				seq := next
				_, aerr := s.Append([]*codec.WriteT{write(seq)})
				if aerr == nil {
					next++
				}
				mu.Unlock()
				if aerr == nil {
					aerr = s.Wait(seq)
				}
				if aerr != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = aerr
					}
					mu.Unlock()
					return
				}
				for {
					m := maxAcked.Load()
					if seq <= m || maxAcked.CompareAndSwap(m, seq) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	return maxAcked.Load(), firstErr
}

// TestGroupCommit checks batch mode: many appenders, every write
// acknowledged durable, and far fewer fsyncs than writes; and that a
// crash then loses none of them.
func TestGroupCommit(t *testing.T) {
	fsys := diskfs.NewMem()
	o := quiet(t, Options{SegmentSize: 1 << 16})
	w := mustCreate(t, fsys, 1, o)
	slowSyncs(fsys, time.Millisecond)
	var notified atomic.Uint64
	s := NewSyncer(w, Batch, func(durable uint64, err error) {
		if err != nil {
			t.Errorf("notify: %v", err)
		}
		if durable <= notified.Load() {
			t.Errorf("notify(%d) after notify(%d)", durable, notified.Load())
		}
		notified.Store(durable)
	})
	before := fsys.Syncs()
	const n, count = 16, 100
	acked, err := appenders(s, 1, n, count)
	if err != nil {
		t.Fatal(err)
	}
	syncs := fsys.Syncs() - before
	if acked != n*count || s.Durable() != n*count {
		t.Errorf("acknowledged %d, durable %d; want %d", acked, s.Durable(), n*count)
	}
	// 16 appenders each wait for their write before the next: one
	// fsync covers most of them. Segment rotations add a few syncs.
	if syncs > n*count/4 {
		t.Errorf("%d fsyncs for %d writes from %d appenders: group commit is not grouping", syncs, n*count, n)
	}
	t.Logf("%d writes, %d fsyncs: %.1f writes per fsync", n*count, syncs, float64(n*count)/float64(syncs))
	s.Close()
	if notified.Load() != n*count {
		t.Errorf("notified up to %d, want %d", notified.Load(), n*count)
	}
	fsys = fsys.Crash(rand.New(rand.NewPCG(1, 1)))
	w, err = Open(fsys, dir, o)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, readAll(t, w, 1), 1, n*count)
}

// TestCrashDuringGroupCommit crashes the disk while appenders run, at a
// random moment: every write acknowledged before the crash is recovered.
func TestCrashDuringGroupCommit(t *testing.T) {
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 3))
		fsys := diskfs.NewMem()
		o := Options{SegmentSize: int64(500 + rng.IntN(5000)), NoPreallocate: seed%2 == 0}
		l, logs := logBuffer()
		o.Logger = l
		w := mustCreate(t, fsys, 1, o)
		slowSyncs(fsys, 200*time.Microsecond)
		s := NewSyncer(w, Batch, nil)
		after := make(chan *diskfs.Mem)
		go func() {
			time.Sleep(time.Duration(rng.IntN(20_000)) * time.Microsecond)
			after <- fsys.Crash(rng)
		}()
		acked, err := appenders(s, 1, 8, 1_000_000)
		if err == nil {
			t.Fatalf("seed %d: the appenders ran through a crash without an error", seed)
		}
		s.Close()
		fsys = <-after
		w, err = Open(fsys, dir, o)
		if err != nil {
			t.Fatalf("seed %d: %v\nlog: %s", seed, err, logs)
		}
		if w.LastSeq() < acked {
			t.Fatalf("seed %d: recovered up to %d, but %d was acknowledged", seed, w.LastSeq(), acked)
		}
		checkRecords(t, readAll(t, w, 1), 1, w.LastSeq())
	}
}

// TestModes checks what Always and None promise of each Append, and what
// they cost in fsyncs.
func TestModes(t *testing.T) {
	for _, m := range []Mode{Always, None} {
		t.Run(m.String(), func(t *testing.T) {
			fsys := diskfs.NewMem()
			w := mustCreate(t, fsys, 1, quiet(t, Options{SegmentSize: 1 << 16}))
			var notified uint64
			s := NewSyncer(w, m, func(durable uint64, err error) { notified = durable })
			before := fsys.Syncs()
			for seq := uint64(1); seq <= 50; seq++ {
				got, err := s.Append([]*codec.WriteT{write(seq)})
				if err != nil || got != seq {
					t.Fatalf("Append(%d) = %d, %v", seq, got, err)
				}
				if s.Durable() != seq || notified != seq {
					t.Fatalf("after Append(%d): Durable %d, notified %d", seq, s.Durable(), notified)
				}
				if err := s.Wait(seq); err != nil {
					t.Fatal(err)
				}
				// Under Always the write is on disk already; under None
				// with the operating system, which a process crash spares.
				if m == Always && w.SyncedSeq() != seq {
					t.Fatalf("Always: SyncedSeq %d after Append(%d)", w.SyncedSeq(), seq)
				}
			}
			syncs := fsys.Syncs() - before
			if want := map[Mode]int{Always: 50, None: 0}[m]; syncs != want {
				t.Errorf("%d fsyncs for 50 appends, want %d", syncs, want)
			}
			if m == None {
				// Flushed: in the file, though not synced.
				b, _ := fsys.ReadFile(w.segs[0].name)
				if offs := recordOffsets(b); len(offs)-1 != 50 {
					t.Errorf("the file holds %d records, want 50", len(offs)-1)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if w.SyncedSeq() != 50 {
				t.Errorf("after Close, SyncedSeq = %d, want 50", w.SyncedSeq())
			}
		})
	}
}

// TestSyncerFailure checks that a failed fsync reaches every waiter and
// the notify function, and that the Syncer then refuses appends.
func TestSyncerFailure(t *testing.T) {
	for _, m := range []Mode{Batch, Always} {
		t.Run(m.String(), func(t *testing.T) {
			fsys := diskfs.NewMem()
			w := mustCreate(t, fsys, 1, quiet(t, Options{SegmentSize: 1 << 16}))
			errIO := errors.New("input/output error")
			fsys.Fault = func(op, name string) error {
				if op == "sync" {
					return errIO
				}
				return nil
			}
			notified := make(chan error, 1)
			s := NewSyncer(w, m, func(durable uint64, err error) {
				if err != nil {
					notified <- err
				}
			})
			_, err := s.Append(writes(1, 3))
			if m == Batch {
				if err != nil {
					t.Fatal(err)
				}
				err = s.Wait(3)
			}
			if !errors.Is(err, errIO) {
				t.Fatalf("the write's result = %v, want %v", err, errIO)
			}
			if err := <-notified; !errors.Is(err, errIO) {
				t.Errorf("notified %v, want %v", err, errIO)
			}
			if _, err := s.Append(writes(4, 4)); err == nil {
				t.Error("Append after a failed fsync: no error")
			}
			if s.Durable() != 0 {
				t.Errorf("Durable = %d after a failed fsync, want 0", s.Durable())
			}
			s.Close()
		})
	}
}

// TestSyncerClose checks that Close wakes a waiter for a write that will
// never come, and that Append after Close fails.
func TestSyncerClose(t *testing.T) {
	fsys := diskfs.NewMem()
	w := mustCreate(t, fsys, 1, quiet(t, Options{SegmentSize: 1 << 16}))
	s := NewSyncer(w, Batch, nil)
	if _, err := s.Append(writes(1, 2)); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error)
	go func() { waited <- s.Wait(10) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; !errors.Is(err, errClosed) {
		t.Errorf("Wait across Close = %v, want %v", err, errClosed)
	}
	if err := s.Wait(2); err != nil {
		t.Errorf("Wait(2) after Close = %v: Close syncs what was appended", err)
	}
	if _, err := s.Append(writes(3, 3)); !errors.Is(err, errClosed) {
		t.Errorf("Append after Close = %v, want %v", err, errClosed)
	}
	if err := s.Close(); !errors.Is(err, errClosed) {
		t.Errorf("second Close = %v, want %v", err, errClosed)
	}
}

// TestNotifyInOrder checks that notify hears of durable seqs in
// increasing order when concurrent Appends advance them (Always, None),
// and hears of the last one.
func TestNotifyInOrder(t *testing.T) {
	for _, m := range []Mode{Always, None, Batch} {
		t.Run(m.String(), func(t *testing.T) {
			fsys := diskfs.NewMem()
			w := mustCreate(t, fsys, 1, quiet(t, Options{SegmentSize: 1 << 16}))
			var mu sync.Mutex
			var last uint64
			s := NewSyncer(w, m, func(durable uint64, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil || durable <= last {
					t.Errorf("notify(%d, %v) after notify(%d)", durable, err, last)
				}
				last = durable
			})
			if _, err := appenders(s, 1, 8, 200); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if last != 8*200 {
				t.Errorf("last notified %d, want %d", last, 8*200)
			}
		})
	}
}
