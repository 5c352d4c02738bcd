package srv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// MaxLists is the largest number of stripes a Table may have.
const MaxLists = 65536

// Table is a hash table split into independently locked stripes, so that
// operations on different keys rarely contend. Values are copied on the way
// in; callers never share memory with the table.
//
// A stripe keeps its entries, key and value side by side, in one byte
// slice, and finds them through an open-addressed index of 8-byte slots
// (see tagBits). Neither holds a pointer, so the garbage collector has
// nothing to trace in a table of any size, a put allocates nothing once
// the stripe has grown, a lookup costs one cache line of index and one of
// entry, and a key and its value share a cache line. Replaced and deleted
// entries leave garbage in the slice, which is compacted once it is half
// of it.
type Table struct {
	seed    maphash.Seed
	mask    uint64 // applied to every hash: all ones, but tests force collisions
	tagHome int    // tagBits, but tests lower it to make index growth rehash keys
	stripes []stripe
}

type stripeState struct {
	mu    sync.RWMutex
	slots []uint64 // the index, a power of two long (or empty); see tagBits
	keys  int      // slots in use
	data  []byte   // entries (see appendEntry)
	dead  int      // bytes of data taken by entries replaced or deleted
	// hint is where slots is, for Prefetch to read without the lock
	// (see publishIndex).
	hint atomic.Uint64
}

type stripe struct {
	stripeState
	// Stripes sit next to each other in one slice; keep each lock on its
	// own cache lines so stripes do not contend through false sharing.
	_ [(64 - unsafe.Sizeof(stripeState{})%64) % 64]byte
}

// An index slot holds, for one key, the top tagBits bits of its hash (the
// tag) and one more than the offset of its entry in data; 0 is an empty
// slot. A key's probe starts at the top bits of its hash and goes forward
// (linear probing); the tag tells, mostly without reading the entry,
// which slots are not the key. While the index has at most 2^tagBits
// slots, the tag alone gives a slot's home, and growing or deleting
// never rereads a key. The stripe is chosen by the low 32 bits of the
// hash, so tag and home are spread evenly within a stripe.
const (
	tagBits  = 24
	offBits  = 64 - tagBits
	offMask  = 1<<offBits - 1
	minSlots = 8
)

// compactMin is the least garbage, in bytes, worth compacting a stripe for.
const compactMin = 4 << 10

// Entry is one key and its value.
type Entry struct {
	Key   string
	Value []byte
}

// NewTable returns an empty table with n stripes, 1 <= n <= MaxLists.
func NewTable(n int) (*Table, error) {
	if n < 1 || n > MaxLists {
		return nil, fmt.Errorf("srv: number of lists must be between 1 and %d, got %d", MaxLists, n)
	}
	return &Table{seed: maphash.MakeSeed(), mask: ^uint64(0), tagHome: tagBits, stripes: make([]stripe, n)}, nil
}

// hashOf returns the hash of key.
func (t *Table) hashOf(key string) uint64 { return maphash.String(t.seed, key) & t.mask }

// locate returns the hash of key and its stripe.
func (t *Table) locate(key string) (uint64, *stripe) {
	h := t.hashOf(key)
	return h, &t.stripes[uint64(uint32(h))*uint64(len(t.stripes))>>32]
}

// appendEntry appends an entry to data: the key's length and the value's
// as uvarints, then the key, then the value.
func appendEntry[K string | []byte](data []byte, key K, value []byte) []byte {
	data = binary.AppendUvarint(data, uint64(len(key)))
	data = binary.AppendUvarint(data, uint64(len(value)))
	data = append(data, key...)
	return append(data, value...)
}

// entryAt decodes the entry at off in data: its key, its value (data's
// own memory, with no room to grow) and its size in bytes.
func entryAt(data []byte, off int) (key, value []byte, size int) {
	b := data[off:]
	klen, n1 := binary.Uvarint(b)
	vlen, n2 := binary.Uvarint(b[n1:])
	start := n1 + n2
	size = start + int(klen) + int(vlen)
	return b[start : start+int(klen)], b[start+int(klen) : size : size], size
}

func (s *stripe) entry(off int) (key, value []byte, size int) { return entryAt(s.data, off) }

// slotOf packs the slot of an entry at off whose key hashes to h.
func slotOf(h uint64, off int) uint64 { return h>>offBits<<offBits | uint64(off+1) }

// offsetOf returns the offset of the entry of a used slot.
func offsetOf(slot uint64) int { return int(slot&offMask) - 1 }

// homeOf returns where the probe for a key with hash h starts.
func (s *stripe) homeOf(h uint64) int {
	return int(h >> (64 - bits.TrailingZeros(uint(len(s.slots)))))
}

// homeOfSlot returns where the probe for the key of a used slot starts:
// from its tag while that has enough bits, else from its key's hash.
func (t *Table) homeOfSlot(s *stripe, slot uint64) int {
	if bits.TrailingZeros(uint(len(s.slots))) <= t.tagHome {
		return s.homeOf(slot)
	}
	k, _, _ := s.entry(offsetOf(slot))
	return s.homeOf(t.hashOf(string(k)))
}

// lookup returns the slot of key, whose hash is h, and the offset of its
// entry; or, when key is absent, -1 and the empty slot where it would go
// (-1 too when the index is empty).
func (s *stripe) lookup(h uint64, key string) (i, off int) {
	if len(s.slots) == 0 {
		return -1, -1
	}
	mask := len(s.slots) - 1
	tag := h >> offBits
	for i = s.homeOf(h); ; i = (i + 1) & mask {
		slot := s.slots[i]
		if slot == 0 {
			return i, -1
		}
		if slot>>offBits == tag {
			if k, _, _ := s.entry(offsetOf(slot)); string(k) == key {
				return i, offsetOf(slot)
			}
		}
	}
}

// insert indexes a new entry at off for a key with hash h that lookup
// placed at slot i, growing the index when it is three quarters full.
func (t *Table) insert(s *stripe, i int, h uint64, off int) {
	if i < 0 || 4*(s.keys+1) > 3*len(s.slots) {
		t.grow(s)
		i = s.free(s.homeOf(h))
	}
	s.slots[i] = slotOf(h, off)
	s.keys++
}

// free returns the first empty slot from i on.
func (s *stripe) free(i int) int {
	for mask := len(s.slots) - 1; s.slots[i] != 0; i = (i + 1) & mask {
	}
	return i
}

// grow doubles the index.
func (t *Table) grow(s *stripe) { t.resize(s, max(minSlots, 2*len(s.slots))) }

// resize rebuilds the index with n slots, a power of two that holds its
// keys.
func (t *Table) resize(s *stripe, n int) {
	old := s.slots
	s.slots = make([]uint64, n)
	defer s.publishIndex()
	// Touching every page of the new index at once takes its page faults
	// here, where Reserve runs them in parallel, rather than one by one as
	// keys arrive.
	for i := 0; i < n; i += pageSize / 8 {
		s.slots[i] = 0
	}
	for _, slot := range old {
		if slot != 0 {
			s.slots[s.free(t.homeOfSlot(s, slot))] = slot
		}
	}
}

// Reserve makes room for keys more keys whose keys and values take bytes
// bytes in all, so that putting them grows nothing: a node about to load
// a snapshot calls it with the snapshot's counts (see snap.Handler.Size).
// Filling a table of 1,000,000 keys so costs a fraction of growing it
// there one doubling after another, each of which copies what the
// stripe held. Each stripe gets its share of both, with room for the
// unevenness of hashing; a stripe that gets more than its share grows as
// usual, so the counts need only be close. Reserve never shrinks a
// stripe.
//
// It also touches the memory it reserves, from one goroutine per CPU:
// the kernel's page faults on fresh memory, most of the cost of loading
// a large table into a new process (on a VM above all), then run in
// parallel instead of one by one during the puts. It is safe to call at
// any time; it takes each stripe's lock in turn.
func (t *Table) Reserve(keys, bytes int) {
	if keys <= 0 {
		return
	}
	n := len(t.stripes)
	mean := (keys + n - 1) / n
	// Four standard deviations of a stripe's binomial share of the keys
	// (about the square root of the mean): one stripe in 30,000 gets more.
	perKeys := mean + 4*int(math.Sqrt(float64(mean))) + 1
	// Its bytes in proportion, and each entry's two lengths, which take
	// a byte each below 128 and little beside a larger key or value.
	perBytes := int(float64(max(bytes, 0))/float64(keys)*float64(perKeys)) + 2*perKeys
	workers := min(runtime.GOMAXPROCS(0), n)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				t.reserve(&t.stripes[i], perKeys, perBytes)
			}
		})
	}
	wg.Wait()
}

// reserve makes room in s for keys more keys of bytes more bytes.
func (t *Table) reserve(s *stripe, keys, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if want := s.keys + keys; 4*want > 3*len(s.slots) {
		// The least power of two that keeps the index at most three
		// quarters full, as insert does.
		t.resize(s, max(minSlots, 1<<bits.Len(uint(4*want/3))))
	}
	if len(s.data)+bytes > cap(s.data) {
		s.data = append(make([]byte, 0, len(s.data)+bytes), s.data...)
	}
	// One write a page of the room for the entries, as resize does for
	// the index.
	free := s.data[len(s.data):cap(s.data)]
	for i := 0; i < len(free); i += pageSize {
		free[i] = 0
	}
}

// pageSize is the smallest page the kernel maps memory in.
const pageSize = 4096

// remove empties slot i, moving back the slots after it that would no
// longer be found past the hole (backward-shift deletion: no tombstones).
func (t *Table) remove(s *stripe, i int) {
	mask := len(s.slots) - 1
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		// The slot at j may fill the hole at i if its home is not in
		// (i, j], cyclically.
		if home := t.homeOfSlot(s, s.slots[j]); (j-home)&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = 0
	s.keys--
}

// Put stores a copy of value under key, replacing any previous value.
func (t *Table) Put(key string, value []byte) {
	h, s := t.locate(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, off := s.lookup(h, key)
	if off < 0 {
		t.insert(s, i, h, s.add(key, value))
		return
	}
	if _, v, size := s.entry(off); len(v) == len(value) {
		copy(v, value) // readers copy under the lock: none sees it change
	} else {
		s.dead += size
		s.slots[i] = slotOf(h, s.add(key, value))
		s.compactIfWasteful()
	}
}

// Prefetch asks the CPU to bring into its caches the index slots and the
// entries that a Put of each of n keys (key(i), 0 <= i < n) will read, so
// that a caller about to apply many writes (a replication frame) waits
// for their cache misses together rather than one after the other: in a
// table larger than the caches, a put is mostly two misses, one for its
// slot and one for its entry, each waiting for the other before it. It
// changes nothing, and what it fetches may be stale by the time it is
// used, which costs only the time.
func (t *Table) Prefetch(n int, key func(i int) string) {
	// Two rounds: the slots first, then, once they have arrived, the
	// entries they point to. The first needs only the index's address,
	// which it reads without the lock; the second reads slots, under it.
	// Prefetches are not waited for by the locked instructions of the
	// stripes' locks, so the misses overlap.
	for i := range n {
		h, s := t.locate(key(i))
		if hint := s.hint.Load(); hint != 0 {
			home := h >> (64 - hint>>hintShift)
			prefetch(uintptr(hint&(1<<hintShift-1)) + uintptr(home)*8)
		}
	}
	for i := range n {
		h, s := t.locate(key(i))
		s.mu.RLock()
		s.prefetchEntry(h)
		s.mu.RUnlock()
	}
}

// hintShift splits a stripe's index hint: the address of its first slot
// below it, log2 of its number of slots above it (0 for no index).
const hintShift = 56

// publishIndex records, with the lock held for writing, where the index
// is, for the first round of Prefetch, which reads it without the lock.
// The hint is one word, so it is never torn; it holds no pointer, so it
// may outlive the index it describes, but it is only ever used as the
// address of a prefetch, which never faults: a stale one costs a wasted
// fetch.
func (s *stripe) publishIndex() {
	if len(s.slots) == 0 {
		s.hint.Store(0)
		return
	}
	s.hint.Store(uint64(uintptr(unsafe.Pointer(unsafe.SliceData(s.slots)))) | uint64(bits.TrailingZeros(uint(len(s.slots))))<<hintShift)
}

// prefetchEntry prefetches the entry of the first slot from the home of
// hash h on whose tag is h's, if any: most likely the key's.
func (s *stripe) prefetchEntry(h uint64) {
	if len(s.slots) == 0 {
		return
	}
	mask, tag := len(s.slots)-1, h>>offBits
	for i := s.homeOf(h); ; i = (i + 1) & mask {
		slot := s.slots[i]
		if slot == 0 {
			return
		}
		if slot>>offBits == tag {
			prefetch(uintptr(unsafe.Pointer(&s.data[offsetOf(slot)])))
			return
		}
	}
}

// add appends an entry and returns its offset.
func (s *stripe) add(key string, value []byte) int {
	off := len(s.data)
	if off >= offMask {
		panic(fmt.Sprintf("srv: a stripe of the table holds %d bytes, more than %d: use more lists", off, offMask-1))
	}
	s.data = appendEntry(s.data, key, value)
	return off
}

// find returns the value stored under key, whose hash is h.
func (s *stripe) find(h uint64, key string) ([]byte, bool) {
	_, off := s.lookup(h, key)
	if off < 0 {
		return nil, false
	}
	_, v, _ := s.entry(off)
	return v, true
}

// Get returns a copy of the value stored under key.
func (t *Table) Get(key string) ([]byte, bool) {
	return t.AppendValue(nil, key)
}

// AppendValue appends the value stored under key to dst. It lets a caller
// copy a value straight into an output buffer without an allocation.
func (t *Table) AppendValue(dst []byte, key string) ([]byte, bool) {
	h, s := t.locate(key)
	s.mu.RLock()
	v, ok := s.find(h, key)
	if ok {
		if dst == nil {
			dst = make([]byte, 0, len(v))
		}
		dst = append(dst, v...)
	}
	s.mu.RUnlock()
	return dst, ok
}

// AppendEncoded appends to dst what enc makes of the value stored under
// key, and reports whether key is present. The value is the table's own
// memory, lent to enc under the stripe's lock: enc must copy what it keeps
// and must not call back into the table. Looking key up as bytes, and
// handing the value straight to an encoder, serves a get without an
// allocation.
func (t *Table) AppendEncoded(dst, key []byte, enc func(dst, value []byte) []byte) ([]byte, bool) {
	// The string is only looked up with, never kept.
	k := unsafe.String(unsafe.SliceData(key), len(key))
	h, s := t.locate(k)
	s.mu.RLock()
	v, ok := s.find(h, k)
	if ok {
		dst = enc(dst, v)
	}
	s.mu.RUnlock()
	return dst, ok
}

// Del removes key and reports whether it was present.
func (t *Table) Del(key string) bool {
	h, s := t.locate(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, off := s.lookup(h, key)
	if off < 0 {
		return false
	}
	_, _, size := s.entry(off)
	s.dead += size
	t.remove(s, i)
	s.compactIfWasteful()
	return true
}

// compactIfWasteful rewrites the stripe's entries without their garbage
// once the garbage is half of the stripe.
func (s *stripe) compactIfWasteful() {
	if s.dead < compactMin || s.dead < len(s.data)/2 {
		return
	}
	old := s.data
	s.data = make([]byte, 0, len(old)-s.dead)
	for i, slot := range s.slots {
		if slot != 0 {
			k, v, _ := entryAt(old, offsetOf(slot))
			s.slots[i] = slot&^offMask | uint64(len(s.data)+1)
			s.data = appendEntry(s.data, k, v)
		}
	}
	s.dead = 0
}

// Size returns the number of keys. Under concurrent writes it is the sum
// of each stripe's size at slightly different moments.
func (t *Table) Size() int {
	n := 0
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.RLock()
		n += s.keys
		s.mu.RUnlock()
	}
	return n
}

// Usage is the memory a Table's contents take, in bytes.
type Usage struct {
	Keys    int // keys held
	Entries int // bytes of the entries held: keys, values and their lengths
	Garbage int // bytes of replaced and deleted entries not yet compacted
	Index   int // bytes of the index slots
}

// Usage returns the table's key count and memory, stripe by stripe at
// slightly different moments under concurrent writes, like Size.
func (t *Table) Usage() Usage {
	var u Usage
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.RLock()
		u.Keys += s.keys
		u.Entries += len(s.data) - s.dead
		u.Garbage += s.dead
		u.Index += 8 * len(s.slots)
		s.mu.RUnlock()
	}
	return u
}

// Keys returns every key in ascending order.
func (t *Table) Keys() []string {
	keys := make([]string, 0, t.Size())
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.RLock()
		for _, slot := range s.slots {
			if slot != 0 {
				k, _, _ := s.entry(offsetOf(slot))
				keys = append(keys, string(k))
			}
		}
		s.mu.RUnlock()
	}
	slices.Sort(keys)
	return keys
}

// Entries returns a copy of every entry in ascending key order.
func (t *Table) Entries() []Entry {
	entries := make([]Entry, 0, t.Size())
	for i := range t.stripes {
		entries = t.AppendStripe(entries, i)
	}
	slices.SortFunc(entries, func(a, b Entry) int { return strings.Compare(a.Key, b.Key) })
	return entries
}

// Stripes returns the number of stripes, for AppendStripe.
func (t *Table) Stripes() int { return len(t.stripes) }

// AppendStripe appends a copy of every entry of stripe i to dst, in no
// particular order. Copying one stripe at a time lets a caller walk a
// large table without holding any lock for long.
func (t *Table) AppendStripe(dst []Entry, i int) []Entry {
	s := &t.stripes[i]
	s.mu.RLock()
	for _, slot := range s.slots {
		if slot != 0 {
			k, v, _ := s.entry(offsetOf(slot))
			dst = append(dst, Entry{Key: string(k), Value: bytes.Clone(v)})
		}
	}
	s.mu.RUnlock()
	return dst
}

// Clear removes every entry.
func (t *Table) Clear() {
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.Lock()
		s.slots, s.keys, s.data, s.dead = nil, 0, nil, 0
		s.publishIndex()
		s.mu.Unlock()
	}
}
