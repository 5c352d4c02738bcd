package srv

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestNewTableBounds(t *testing.T) {
	for _, n := range []int{-1, 0, MaxLists + 1} {
		if _, err := NewTable(n); err == nil {
			t.Errorf("NewTable(%d) succeeded", n)
		}
	}
	for _, n := range []int{1, 7, MaxLists} {
		if _, err := NewTable(n); err != nil {
			t.Errorf("NewTable(%d): %v", n, err)
		}
	}
}

func TestTableOperations(t *testing.T) {
	tb, _ := NewTable(4)
	val := []byte("hello")
	tb.Put("b", val)
	val[0] = 'J' // the table must have kept its own copy
	tb.Put("a", []byte{})
	tb.Put("c", []byte("3"))
	got, ok := tb.Get("b")
	if !ok || string(got) != "hello" {
		t.Fatalf("Get(b) = %q, %v", got, ok)
	}
	got[0] = 'X' // nor may a reader change it
	if again, _ := tb.Get("b"); string(again) != "hello" {
		t.Fatalf("table value changed through a returned slice: %q", again)
	}
	if v, ok := tb.Get("a"); !ok || v == nil || len(v) != 0 {
		t.Fatalf("Get(a) = %q (nil %v), %v; want a present empty value", v, v == nil, ok)
	}
	if _, ok := tb.Get("zz"); ok {
		t.Fatal("Get of a missing key succeeded")
	}
	if tb.Size() != 3 {
		t.Fatalf("Size = %d", tb.Size())
	}
	if keys := tb.Keys(); !slices.Equal(keys, []string{"a", "b", "c"}) {
		t.Fatalf("Keys = %q", keys)
	}
	entries := tb.Entries()
	if len(entries) != 3 || entries[0].Key != "a" || entries[2].Key != "c" || string(entries[1].Value) != "hello" {
		t.Fatalf("Entries = %v", entries)
	}
	if !tb.Del("b") || tb.Del("b") {
		t.Fatal("Del should succeed once")
	}
	if tb.Size() != 2 {
		t.Fatalf("Size after del = %d", tb.Size())
	}
}

func TestTableConcurrent(t *testing.T) {
	tb, _ := NewTable(8)
	const workers, perWorker = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				k := fmt.Sprintf("w%d-%d", w, i)
				tb.Prefetch(2, func(j int) string { return fmt.Sprintf("w%d-%d", (w+j)%workers, i) })
				tb.Put(k, []byte(k))
				if v, ok := tb.Get(k); !ok || string(v) != k {
					t.Errorf("Get(%s) = %q %v", k, v, ok)
					return
				}
				if i%2 == 1 && !tb.Del(k) {
					t.Errorf("Del(%s) failed", k)
					return
				}
				_ = tb.Size()
				if i%100 == 0 {
					_ = tb.Keys()
				}
			}
		}()
	}
	wg.Wait()
	if want := workers * perWorker / 2; tb.Size() != want || len(tb.Keys()) != want {
		t.Fatalf("Size = %d, Keys = %d, want %d", tb.Size(), len(tb.Keys()), want)
	}
}

func BenchmarkTableGet(b *testing.B) {
	tb, _ := NewTable(64)
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
		tb.Put(keys[i], make([]byte, 32))
	}
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf, _ = tb.AppendValue(buf[:0], keys[i%len(keys)])
	}
}

func BenchmarkTablePutParallel(b *testing.B) {
	tb, _ := NewTable(64)
	val := make([]byte, 32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tb.Put(fmt.Sprintf("key-%d", i%10000), val)
			i++
		}
	})
}

// BenchmarkTableBatchPut puts batches of 128 keys, in random order, into
// a table of a million, as a replica applies a replication frame: with
// each batch prefetched first (Table.Prefetch), or not.
func BenchmarkTableBatchPut(b *testing.B) {
	const keys, batch = 1 << 20, 128
	tb, _ := NewTable(1024)
	names := make([]string, keys)
	val := make([]byte, 32)
	for i := range names {
		names[i] = fmt.Sprintf("key-%07d", i)
		tb.Put(names[i], val)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	order := make([]string, keys)
	for i := range order {
		order[i] = names[rng.IntN(keys)]
	}
	for _, pre := range []bool{false, true} {
		b.Run(fmt.Sprintf("prefetch=%v", pre), func(b *testing.B) {
			i := 0
			for b.Loop() {
				ks := order[i : i+batch]
				if i += batch; i+batch > len(order) {
					i = 0
				}
				if pre {
					tb.Prefetch(len(ks), func(i int) string { return ks[i] })
				}
				for _, k := range ks {
					tb.Put(k, val)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/put")
		})
	}
}

// TestTableMatchesMap runs random puts, deletes and reads against a table
// and a plain map: with a hash that makes many keys collide, so that long
// probes and deletions from their middle are exercised; with an index that
// rereads keys to place them, as one past 2^tagBits slots does; and with
// values of changing sizes, so that stripes fill with garbage and compact.
func TestTableMatchesMap(t *testing.T) {
	for _, tt := range []struct {
		name    string
		stripes int
		mask    uint64
		tagHome int
	}{
		{"full hashes", 4, ^uint64(0), tagBits},
		{"colliding", 2, 0b111, tagBits}, // 8 hashes for 300 keys
		{"homes from keys", 3, ^uint64(0), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb, _ := NewTable(tt.stripes)
			tb.mask, tb.tagHome = tt.mask, tt.tagHome
			model := make(map[string]string)
			rng := rand.New(rand.NewPCG(1, 2))
			longest := 0 // the longest probe seen
			for i := range 20000 {
				key := fmt.Sprintf("k%d", rng.IntN(300))
				if i%7 == 0 {
					// A hint only: the model's answers must not change,
					// for keys present or absent, on an empty table too.
					keys := []string{key, fmt.Sprintf("k%d", rng.IntN(400))}
					tb.Prefetch(len(keys), func(i int) string { return keys[i] })
				}
				switch op := rng.IntN(10); {
				case op < 5:
					value := strings.Repeat(string(rune('a'+i%26)), rng.IntN(3)*100+rng.IntN(2))
					tb.Put(key, []byte(value))
					model[key] = value
				case op < 7:
					_, want := model[key]
					if got := tb.Del(key); got != want {
						t.Fatalf("step %d: Del(%s) = %v, want %v", i, key, got, want)
					}
					delete(model, key)
				default:
					want, wantOK := model[key]
					got, ok := tb.Get(key)
					if ok != wantOK || string(got) != want {
						t.Fatalf("step %d: Get(%s) = %q, %v; want %q, %v", i, key, got, ok, want, wantOK)
					}
					var enc []byte
					enc, ok = tb.AppendEncoded(nil, []byte(key), func(dst, v []byte) []byte { return append(dst, v...) })
					if ok != wantOK || string(enc) != want {
						t.Fatalf("step %d: AppendEncoded(%s) = %q, %v; want %q, %v", i, key, enc, ok, want, wantOK)
					}
				}
				if i%1000 == 0 {
					checkTableEquals(t, tb, model)
					for i := range tb.stripes {
						longest = max(longest, checkIndex(t, tb, &tb.stripes[i]))
					}
				}
			}
			if collide := tt.mask != ^uint64(0); collide != (longest > 100) {
				t.Errorf("longest probe %d slots; want over 100 only when hashes collide", longest)
			}
			checkTableEquals(t, tb, model)
			for i := range tb.stripes {
				if s := &tb.stripes[i]; s.dead > max(compactMin, len(s.data)/2) {
					t.Errorf("stripe %d: %d bytes of garbage in %d, never compacted", i, s.dead, len(s.data))
				}
			}
			tb.Clear()
			checkTableEquals(t, tb, nil)
		})
	}
}

// checkIndex checks that a stripe's index counts its keys, is at most
// three quarters full, and finds every key from its home without crossing
// an empty slot; it returns the longest probe.
func checkIndex(t *testing.T, tb *Table, s *stripe) (longest int) {
	t.Helper()
	used := 0
	mask := len(s.slots) - 1
	for i, slot := range s.slots {
		if slot == 0 {
			continue
		}
		used++
		k, _, _ := s.entry(offsetOf(slot))
		home := s.homeOf(tb.hashOf(string(k)))
		for j := home; j != i; j = (j + 1) & mask {
			if s.slots[j] == 0 {
				t.Fatalf("key %q in slot %d is past the empty slot %d after its home %d", k, i, j, home)
			}
		}
		longest = max(longest, (i-home)&mask)
	}
	if used != s.keys || 4*used > 3*len(s.slots) {
		t.Fatalf("index of %d slots has %d in use, counts %d", len(s.slots), used, s.keys)
	}
	return longest
}

func checkTableEquals(t *testing.T, tb *Table, model map[string]string) {
	t.Helper()
	entries := tb.Entries()
	if tb.Size() != len(model) || len(entries) != len(model) || len(tb.Keys()) != len(model) {
		t.Fatalf("Size %d, %d entries, %d keys; want %d", tb.Size(), len(entries), len(tb.Keys()), len(model))
	}
	for _, e := range entries {
		if want, ok := model[e.Key]; !ok || string(e.Value) != want {
			t.Fatalf("entry %q = %q; want %q (present %v)", e.Key, e.Value, want, ok)
		}
	}
}

// BenchmarkTableLarge puts and gets over a million keys in 1024 stripes,
// in an order unrelated to the one they were stored in, so that most
// operations miss the CPU caches, as they do in a server under load. The
// benchmark's own keys are read in sequence: the misses are the table's.
func BenchmarkTableLarge(b *testing.B) {
	tb, _ := NewTable(1024)
	for i := range 1 << 20 {
		tb.Put(fmt.Sprintf("key:%012d", i), make([]byte, 32))
	}
	keys := make([]string, 1<<20)
	for i, k := range rand.Perm(len(keys)) {
		keys[i] = fmt.Sprintf("key:%012d", k)
	}
	val := make([]byte, 32)
	b.Run("put", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			tb.Put(keys[i%len(keys)], val)
		}
	})
	b.Run("get", func(b *testing.B) {
		var buf []byte
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			buf, _ = tb.AppendValue(buf[:0], keys[i%len(keys)])
		}
	})
}

// TestTableReserve checks that Reserve keeps every key findable, however
// full the table already is and however keys hash, and that after it,
// putting the keys it was told of grows no stripe.
func TestTableReserve(t *testing.T) {
	for _, tt := range []struct {
		name    string
		stripes int
		mask    uint64
		tagHome int
		before  int // keys put before Reserve
		keys    int // keys reserved for, and put after
		value   int // value size
	}{
		{"empty table", 8, ^uint64(0), tagBits, 0, 20000, 100},
		{"filled table", 8, ^uint64(0), tagBits, 5000, 20000, 100},
		{"one stripe", 1, ^uint64(0), tagBits, 100, 5000, 0},
		{"large values", 4, ^uint64(0), tagBits, 0, 2000, 1000},
		{"homes from keys", 3, ^uint64(0), 0, 3000, 10000, 16},
		{"colliding", 2, 0b111, tagBits, 100, 300, 8},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb, _ := NewTable(tt.stripes)
			tb.mask, tb.tagHome = tt.mask, tt.tagHome
			model := make(map[string]string)
			put := func(i int) {
				key := fmt.Sprintf("key-%012d", i)
				value := strings.Repeat(string(rune('a'+i%26)), tt.value)
				tb.Put(key, []byte(value))
				model[key] = value
			}
			for i := range tt.before {
				put(i)
			}
			tb.Reserve(tt.keys, tt.keys*(len("key-000000000000")+tt.value))
			checkTableEquals(t, tb, model)
			type room struct{ slots, data int }
			rooms := make([]room, len(tb.stripes))
			for i := range tb.stripes {
				s := &tb.stripes[i]
				checkIndex(t, tb, s)
				rooms[i] = room{len(s.slots), cap(s.data)}
			}
			for i := range tt.keys {
				put(tt.before + i)
			}
			checkTableEquals(t, tb, model)
			for i := range tb.stripes {
				s := &tb.stripes[i]
				checkIndex(t, tb, s)
				// Colliding hashes all choose one stripe: far more than
				// its share, which grows as usual.
				if got := (room{len(s.slots), cap(s.data)}); got != rooms[i] && tt.mask == ^uint64(0) {
					t.Errorf("stripe %d grew from %d slots and %d bytes to %d and %d after Reserve", i, rooms[i].slots, rooms[i].data, got.slots, got.data)
				}
				rooms[i] = room{len(s.slots), cap(s.data)}
			}
			// Reserving again for nothing, or for what there is room for,
			// changes nothing.
			tb.Reserve(0, 0)
			tb.Reserve(-1, 5)
			for i := range tb.stripes {
				if s := &tb.stripes[i]; len(s.slots) != rooms[i].slots || cap(s.data) != rooms[i].data {
					t.Errorf("stripe %d changed on an empty Reserve", i)
				}
			}
		})
	}
}

// TestTableReserveConcurrent: Reserve while other goroutines put and get
// loses nothing and races with nothing (run with -race).
func TestTableReserveConcurrent(t *testing.T) {
	tb, _ := NewTable(16)
	const writers, each = 4, 3000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("w%d-%d", w, i)
				tb.Put(key, []byte(key))
				if v, ok := tb.Get(key); !ok || string(v) != key {
					t.Errorf("Get(%s) = %q, %v right after its put", key, v, ok)
					return
				}
			}
		})
	}
	for range 20 {
		tb.Reserve(writers*each, writers*each*16)
	}
	wg.Wait()
	model := make(map[string]string)
	for w := range writers {
		for i := range each {
			key := fmt.Sprintf("w%d-%d", w, i)
			model[key] = key
		}
	}
	checkTableEquals(t, tb, model)
	for i := range tb.stripes {
		checkIndex(t, tb, &tb.stripes[i])
	}
}
