package wal

import (
	"io"
	"math"
	"strings"
	"testing"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
	"google.golang.org/protobuf/proto"
)

// TestAttackEncRecordLimit attacks Append's size pre-check (WriteSize
// only when len(key)+len(value)+MaxWriteOverhead > maxRecord): for
// writes with the fewest and the most overhead bytes (sequence numbers
// near 1<<64, every other varint at its longest, the op negative), with
// the bytes in the value or in the key, a write of exactly maxRecord
// bytes is taken and one of maxRecord+1 refused, and writes right at the
// pre-check's threshold (where it stops skipping) are taken. Everything
// taken reads back.
func TestAttackEncRecordLimit(t *testing.T) {
	type shape struct {
		name string
		make func(seq uint64, n int) *codec.WriteT // n bytes of key and value
	}
	shapes := []shape{
		{"small fields, value", func(seq uint64, n int) *codec.WriteT {
			return &codec.WriteT{Seq: seq, Op: codec.OpPut, Key: "k", Value: make([]byte, n-1)}
		}},
		{"max fields, value", func(seq uint64, n int) *codec.WriteT {
			return &codec.WriteT{Seq: seq, Op: math.MinInt32, Key: "k", Value: make([]byte, n-1), ClientId: math.MaxUint64, RequestId: math.MaxUint64,
				Found: true, FirstUnacked: math.MaxUint64, ExpireSeq: math.MaxUint64, Epoch: math.MaxUint64}
		}},
		{"max fields, key only", func(seq uint64, n int) *codec.WriteT {
			return &codec.WriteT{Seq: seq, Op: -1, Key: strings.Repeat("k", n), ClientId: math.MaxUint64, RequestId: math.MaxUint64,
				Found: true, FirstUnacked: math.MaxUint64, ExpireSeq: math.MaxUint64, Epoch: math.MaxUint64}
		}},
		{"no key, value only", func(seq uint64, n int) *codec.WriteT {
			return &codec.WriteT{Seq: seq, Op: codec.OpPut, Value: make([]byte, n)}
		}},
	}
	for _, first := range []uint64{1, math.MaxUint64 - 20} {
		for _, sh := range shapes {
			fsys := diskfs.NewMem()
			w := mustCreate(t, fsys, first, quiet(t, Options{SegmentSize: 1 << 20, NoPreallocate: true}))
			var taken []*codec.WriteT
			seq := first
			// sized returns the write of this shape whose encoding is
			// exactly size bytes.
			sized := func(size int) *codec.WriteT {
				wr := sh.make(seq, 1)
				n := 1 + size - codec.WriteSize(wr)
				for range 4 {
					wr = sh.make(seq, n)
					n += size - codec.WriteSize(wr)
				}
				if codec.WriteSize(wr) != size {
					t.Fatalf("%s: no write of %d bytes (got %d)", sh.name, size, codec.WriteSize(wr))
				}
				return wr
			}
			accept := func(what string, wr *codec.WriteT) {
				t.Helper()
				if err := w.Append([]*codec.WriteT{wr}); err != nil {
					t.Fatalf("%s, first %d: %s (%d bytes, key+value %d): %v", sh.name, first, what, codec.WriteSize(wr), len(wr.Key)+len(wr.Value), err)
				}
				taken = append(taken, wr)
				seq++
			}
			refuse := func(what string, wr *codec.WriteT) {
				t.Helper()
				if err := w.Append([]*codec.WriteT{wr}); err == nil || !strings.Contains(err.Error(), "more than the limit") {
					t.Fatalf("%s, first %d: %s (%d bytes): %v, want a size error", sh.name, first, what, codec.WriteSize(wr), err)
				}
				if w.LastSeq() != seq-1 {
					t.Fatalf("%s: LastSeq %d after a refused append, want %d", sh.name, w.LastSeq(), seq-1)
				}
			}
			accept("exactly maxRecord", sized(maxRecord))
			refuse("maxRecord+1", sized(maxRecord+1))
			refuse("maxRecord+2", sized(maxRecord+2))
			// At the threshold: key+value+MaxWriteOverhead == maxRecord
			// is skipped, one more is sized; both are under the limit.
			for _, n := range []int{maxRecord - codec.MaxWriteOverhead, maxRecord - codec.MaxWriteOverhead + 1} {
				wr := sh.make(seq, n)
				if codec.WriteSize(wr) > maxRecord {
					t.Fatalf("%s: %d key and value bytes encode to %d, over the limit", sh.name, n, codec.WriteSize(wr))
				}
				accept("at the threshold", wr)
			}
			if err := w.Sync(); err != nil {
				t.Fatal(err)
			}
			r, err := w.ReadFrom(first)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range taken {
				got, err := r.Next()
				if err != nil || !proto.Equal(got, want) {
					t.Fatalf("%s: record %d: %v, or differs", sh.name, i, err)
				}
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("%s: after the last record: %v", sh.name, err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
