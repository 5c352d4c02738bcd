package wal

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
)

// countingFS counts the syncs of the files it opens, and their time.
type countingFS struct {
	diskfs.FS
	syncs, nanos atomic.Int64
}

type countingFile struct {
	diskfs.File
	fs *countingFS
}

func (c *countingFS) Create(name string) (diskfs.File, error) {
	f, err := c.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return countingFile{f, c}, nil
}

func (c *countingFS) OpenWrite(name string) (diskfs.File, error) {
	f, err := c.FS.OpenWrite(name)
	if err != nil {
		return nil, err
	}
	return countingFile{f, c}, nil
}

func (f countingFile) Sync() error {
	start := time.Now()
	err := f.File.Sync()
	f.fs.nanos.Add(int64(time.Since(start)))
	f.fs.syncs.Add(1)
	return err
}

// BenchmarkAppend measures appends made durable as each mode promises,
// on the real disk (the test's temporary directory), by conc appenders
// that each wait for their write before the next, as clients waiting for
// their acknowledgement do. It reports the writes each fsync carried and
// an fsync's mean latency.
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		mode       Mode
		conc       int
		noPrealloc bool
	}{
		{Always, 1, false},
		{Always, 1, true},
		{Batch, 1, false},
		{Batch, 16, false},
		{Batch, 64, false},
		{Batch, 64, true},
		{Always, 64, false},
		{None, 64, false},
	} {
		layout := "prealloc"
		if tc.noPrealloc {
			layout = "grow"
		}
		b.Run(fmt.Sprintf("%s/%s/conc=%d", tc.mode, layout, tc.conc), func(b *testing.B) {
			fsys := &countingFS{FS: diskfs.OS{}}
			w, err := Create(fsys, filepath.Join(b.TempDir(), "wal"), 1, Options{NoPreallocate: tc.noPrealloc})
			if err != nil {
				b.Fatal(err)
			}
			s := NewSyncer(w, tc.mode, nil)
			base := fsys.syncs.Load()
			baseNanos := fsys.nanos.Load()
			value := make([]byte, 100)
			var mu sync.Mutex
			next := uint64(1)
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ResetTimer()
			var wg sync.WaitGroup
			for range tc.conc {
				wg.Go(func() {
					for left.Add(-1) >= 0 {
						mu.Lock()
						seq := next
						next++
						_, err := s.Append([]*codec.WriteT{{Seq: seq, Op: codec.OpPut, Key: "key-0000000000", Value: value, ClientId: 1, RequestId: seq}})
						mu.Unlock()
						if err == nil {
							err = s.Wait(seq)
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			syncs := fsys.syncs.Load() - base
			if syncs > 0 {
				b.ReportMetric(float64(b.N)/float64(syncs), "writes/fsync")
				b.ReportMetric(float64(fsys.nanos.Load()-baseNanos)/float64(syncs)/1e3, "µs/fsync")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
			s.Close()
			w.Close()
		})
	}
}

// BenchmarkOpenReplay measures a restart's log work on the real disk:
// OpenReplay, which checks every record, then hands each over,
// for a log of 1,000,000 writes of 100-byte values in preallocated
// segments, the tail's space mostly unwritten.
func BenchmarkOpenReplay(b *testing.B) {
	d := filepath.Join(b.TempDir(), "wal")
	w, err := Create(diskfs.OS{}, d, 1, Options{})
	if err != nil {
		b.Fatal(err)
	}
	const n = 1_000_000
	value := make([]byte, 100)
	batch := make([]*codec.WriteT, 0, 1000)
	for seq := uint64(1); seq <= n; seq++ {
		batch = append(batch, &codec.WriteT{Seq: seq, Op: codec.OpPut, Key: fmt.Sprintf("key-%010d", seq), Value: value, ClientId: 1, RequestId: seq})
		if len(batch) == cap(batch) {
			if err := w.Append(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		count := 0
		w, err := OpenReplay(diskfs.OS{}, d, 1, Options{}, Replay{Write: func(*codec.WriteT) error {
			count++
			return nil
		}})
		if err != nil {
			b.Fatal(err)
		}
		if count != n {
			b.Fatalf("replayed %d records, want %d", count, n)
		}
		w.Close()
	}
	b.ReportMetric(float64(n), "records")
}
