package srv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// MaxLists is the largest number of stripes a Table may have.
const MaxLists = 65536

// Table is a hash table split into independently locked stripes, so that
// operations on different keys rarely contend. Values are copied on the way
// in; callers never share memory with the table.
//
// A stripe keeps its entries, key and value side by side, in one byte
// slice, and finds them through a map from the key's 64-bit hash to the
// entry's offset. Neither holds a pointer, so the garbage collector has
// nothing to trace in a table of any size, a put allocates nothing once
// the stripe has grown, and a key and its value share a cache line.
// Replaced and deleted entries leave garbage in the slice, which is
// compacted once it is half of it.
type Table struct {
	seed    maphash.Seed
	mask    uint64 // applied to every hash: all ones, but tests force collisions
	stripes []stripe
}

type stripeState struct {
	mu    sync.RWMutex
	index map[uint64]int    // hash of a key -> offset of its entry in data
	spill map[string][]byte // keys whose hash another key holds in index: rare
	data  []byte            // entries (see appendEntry)
	dead  int               // bytes of data taken by entries replaced or deleted
}

type stripe struct {
	stripeState
	// Stripes sit next to each other in one slice; keep each lock on its
	// own cache lines so stripes do not contend through false sharing.
	_ [(64 - unsafe.Sizeof(stripeState{})%64) % 64]byte
}

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
	t := &Table{seed: maphash.MakeSeed(), mask: ^uint64(0), stripes: make([]stripe, n)}
	for i := range t.stripes {
		t.stripes[i].index = make(map[uint64]int)
	}
	return t, nil
}

// hashOf returns the hash of key.
func (t *Table) hashOf(key string) uint64 { return maphash.String(t.seed, key) & t.mask }

// locate returns the hash of key and its stripe.
func (t *Table) locate(key string) (uint64, *stripe) {
	h := t.hashOf(key)
	return h, &t.stripes[h%uint64(len(t.stripes))]
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

// add appends an entry and returns its offset.
func (s *stripe) add(key string, value []byte) int {
	off := len(s.data)
	s.data = appendEntry(s.data, key, value)
	return off
}

// find returns the value stored under key, whose hash is h.
func (s *stripe) find(h uint64, key string) ([]byte, bool) {
	off, ok := s.index[h]
	if !ok {
		return nil, false
	}
	if k, v, _ := s.entry(off); string(k) == key {
		return v, true
	}
	v, ok := s.spill[key]
	return v, ok
}

// Put stores a copy of value under key, replacing any previous value.
func (t *Table) Put(key string, value []byte) {
	h, s := t.locate(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	off, ok := s.index[h]
	if !ok {
		s.index[h] = s.add(key, value)
		return
	}
	k, v, size := s.entry(off)
	switch {
	case string(k) != key:
		if s.spill == nil {
			s.spill = make(map[string][]byte)
		}
		// The key is copied only here, so that callers may keep theirs
		// on the stack.
		s.spill[strings.Clone(key)] = append(make([]byte, 0, len(value)), value...)
	case len(v) == len(value):
		copy(v, value) // readers copy under the lock: none sees it change
	default:
		s.dead += size
		s.index[h] = s.add(key, value)
		s.compactIfWasteful()
	}
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
	off, ok := s.index[h]
	if !ok {
		return false
	}
	k, _, size := s.entry(off)
	if string(k) != key {
		_, ok := s.spill[key]
		delete(s.spill, key)
		return ok
	}
	s.dead += size
	delete(s.index, h)
	// A spilled key with the same hash takes the freed place in the index.
	for sk, sv := range s.spill {
		if t.hashOf(sk) == h {
			s.index[h] = s.add(sk, sv)
			delete(s.spill, sk)
			break
		}
	}
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
	for h, off := range s.index {
		k, v, _ := entryAt(old, off)
		s.index[h] = len(s.data)
		s.data = appendEntry(s.data, k, v)
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
		n += len(s.index) + len(s.spill)
		s.mu.RUnlock()
	}
	return n
}

// Keys returns every key in ascending order.
func (t *Table) Keys() []string {
	keys := make([]string, 0, t.Size())
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.RLock()
		for _, off := range s.index {
			k, _, _ := s.entry(off)
			keys = append(keys, string(k))
		}
		for k := range s.spill {
			keys = append(keys, k)
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
	for _, off := range s.index {
		k, v, _ := s.entry(off)
		dst = append(dst, Entry{Key: string(k), Value: bytes.Clone(v)})
	}
	for k, v := range s.spill {
		dst = append(dst, Entry{Key: k, Value: bytes.Clone(v)})
	}
	s.mu.RUnlock()
	return dst
}

// Clear removes every entry.
func (t *Table) Clear() {
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.Lock()
		s.index, s.spill, s.data, s.dead = make(map[uint64]int), nil, nil, 0
		s.mu.Unlock()
	}
}
