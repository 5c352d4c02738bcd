package durable

import (
	"hash/maphash"
	"math"
	"math/bits"

	"github.com/chaintable/chaintable/codec"
)

// keyEstimate estimates how many distinct keys the puts of a log replay
// write, by linear counting: each key sets one bit of a bitmap of its
// hash, and n keys leave about m·e^(-n/m) of the m bits unset. Its
// bitmap is 1 MiB (m = 2^23): within 1% for the few million keys a replay
// holds at most (a snapshot every DefaultSnapshotEvery writes).
type keyEstimate struct {
	seed  maphash.Seed
	set   []uint64
	puts  int // puts seen
	dels  int // dels seen
	bytes int // their keys' and values' bytes
}

const estimateBits = 1 << 23

func newKeyEstimate() *keyEstimate {
	return &keyEstimate{seed: maphash.MakeSeed(), set: make([]uint64, estimateBits/64)}
}

// add counts w.
func (e *keyEstimate) add(w *codec.WriteT) {
	if w.Op != codec.OpPut {
		e.dels++
		return
	}
	e.puts++
	e.bytes += len(w.Key) + len(w.Value)
	h := maphash.String(e.seed, w.Key) % estimateBits
	e.set[h/64] |= 1 << (h % 64)
}

// keys returns the estimate, less one key for every del: never more than
// the puts. A del of a key the snapshot holds, or one put again after,
// makes it count too few, which costs only the table's growth; counting
// deleted keys would reserve room no key takes.
func (e *keyEstimate) keys() int {
	unset := 0
	for _, b := range e.set {
		unset += 64 - bits.OnesCount64(b)
	}
	distinct := e.puts
	if unset > 0 {
		distinct = min(e.puts, int(math.Round(-estimateBits*math.Log(float64(unset)/estimateBits))))
	}
	return max(0, distinct-e.dels)
}
