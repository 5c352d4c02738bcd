package durable

import (
	"fmt"
	"testing"

	"github.com/chaintable/chaintable/codec"
)

// TestKeyEstimate checks the estimate of a replay's distinct put keys
// against logs of known key counts, with repeats, and with dels, each of
// which takes a key off.
func TestKeyEstimate(t *testing.T) {
	for _, tc := range []struct {
		keys, rounds int
		dels         bool
	}{
		{0, 1, false},
		{1, 1000, false},
		{1000, 1, false},
		{1000, 50, true},
		{100_000, 3, false},
		{2_000_000, 1, false},
	} {
		t.Run(fmt.Sprintf("%d keys x %d", tc.keys, tc.rounds), func(t *testing.T) {
			e := newKeyEstimate()
			w := &codec.WriteT{Op: codec.OpPut, Value: make([]byte, 10)}
			for range tc.rounds {
				for i := range tc.keys {
					w.Op, w.Key = codec.OpPut, fmt.Sprintf("key-%d", i)
					e.add(w)
					if tc.dels {
						w.Op = codec.OpDel
						e.add(w)
					}
				}
			}
			// Each del takes one key off: a key put and deleted needs no room.
			want := tc.keys
			if tc.dels {
				want = 0
			}
			got := e.keys()
			if tol := want / 100; got < want-tol || got > want+tol {
				t.Errorf("estimated %d keys, want %d within 1%%", got, want)
			}
			if e.puts != tc.keys*tc.rounds || e.bytes != e.puts*(len("key-")+10)+tc.rounds*digits(tc.keys) {
				t.Errorf("counted %d puts of %d bytes", e.puts, e.bytes)
			}
		})
	}
}

// digits returns the bytes of the decimal numbers 0 to n-1.
func digits(n int) int {
	total := 0
	for i := range n {
		total += len(fmt.Sprint(i))
	}
	return total
}
