package srv

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
)

// MaxLists is the largest number of stripes a Table may have.
const MaxLists = 65536

// Table is a hash table split into independently locked stripes, so that
// operations on different keys rarely contend. Values are copied on the way
// in; callers never share memory with the table.
type Table struct {
	seed    maphash.Seed
	stripes []stripe
}

type stripe struct {
	mu sync.RWMutex
	m  map[string][]byte
	// Stripes sit next to each other in one slice; keep each lock on its
	// own cache line so stripes do not contend through false sharing.
	_ [64 - 32]byte
}

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
	t := &Table{seed: maphash.MakeSeed(), stripes: make([]stripe, n)}
	for i := range t.stripes {
		t.stripes[i].m = make(map[string][]byte)
	}
	return t, nil
}

func (t *Table) stripe(key string) *stripe {
	if len(t.stripes) == 1 {
		return &t.stripes[0]
	}
	return &t.stripes[maphash.String(t.seed, key)%uint64(len(t.stripes))]
}

// Put stores a copy of value under key, replacing any previous value.
func (t *Table) Put(key string, value []byte) {
	t.PutOwned(key, bytes.Clone(value))
}

// PutOwned stores value itself under key: the table takes it over, and
// the caller must never modify it again. It saves a copy when the value
// was made for the table anyway, as protobuf decoding makes it.
func (t *Table) PutOwned(key string, value []byte) {
	if value == nil {
		value = []byte{} // present and empty, not missing
	}
	s := t.stripe(key)
	s.mu.Lock()
	s.m[key] = value
	s.mu.Unlock()
}

// Get returns a copy of the value stored under key.
func (t *Table) Get(key string) ([]byte, bool) {
	return t.AppendValue(nil, key)
}

// AppendValue appends the value stored under key to dst. It lets a caller
// copy a value straight into an output buffer without an allocation.
func (t *Table) AppendValue(dst []byte, key string) ([]byte, bool) {
	s := t.stripe(key)
	s.mu.RLock()
	v, ok := s.m[key]
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
	s := t.stripe(string(key))
	s.mu.RLock()
	v, ok := s.m[string(key)]
	if ok {
		dst = enc(dst, v)
	}
	s.mu.RUnlock()
	return dst, ok
}

// Del removes key and reports whether it was present.
func (t *Table) Del(key string) bool {
	s := t.stripe(key)
	s.mu.Lock()
	_, ok := s.m[key]
	delete(s.m, key)
	s.mu.Unlock()
	return ok
}

// Size returns the number of keys. Under concurrent writes it is the sum
// of each stripe's size at slightly different moments.
func (t *Table) Size() int {
	n := 0
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.RLock()
		n += len(s.m)
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
		for k := range s.m {
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
	for k, v := range s.m {
		dst = append(dst, Entry{Key: k, Value: slices.Clone(v)})
	}
	s.mu.RUnlock()
	return dst
}

// Clear removes every entry.
func (t *Table) Clear() {
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.Lock()
		s.m = make(map[string][]byte)
		s.mu.Unlock()
	}
}
