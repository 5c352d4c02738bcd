package srv

import (
	"runtime"
	"testing"
	"time"
	"unsafe"
)

func TestBufferSize(t *testing.T) {
	for _, size := range []int{0, 1, largeFrame - 1, largeFrame, largeFrame + 1, 10 << 20} {
		if b := Buffer(size); len(b) != size {
			t.Errorf("Buffer(%d): len %d", size, len(b))
		}
	}
}

// TestBufferRecycled checks both sides of Buffer's promise: a buffer
// something refers to is never handed out again, however many collections
// pass; once nothing does, it is.
func TestBufferRecycled(t *testing.T) {
	const size = 1 << 20
	addr := func(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
	held := Buffer(size)
	for i := range held {
		held[i] = byte(i)
	}
	value := held[100:200] // a slice into it keeps it, as a write's value does
	heldAt := addr(held)
	held = nil
	// Every buffer the test drops at once; one of them must come back. (A
	// sync.Pool may drop what it is given: under the race detector it
	// drops a quarter at random, so no one buffer is sure to. A fresh
	// allocation at a freed buffer's address would pass too: the strict
	// half of the promise is that a held buffer never comes back.)
	free := map[uintptr]bool{addr(Buffer(size)): true}
	recycled := false
	for try := 0; try < 1000 && !recycled; try++ {
		runtime.GC()
		time.Sleep(time.Millisecond) // finalizers run on their own goroutine
		start := addr(Buffer(size))
		if start == heldAt {
			t.Fatalf("try %d: Buffer handed out a buffer still referred to", try)
		}
		recycled = free[start]
		free[start] = true
	}
	if !recycled {
		t.Errorf("no buffer nothing refers to came back in %d tries", len(free))
	}
	for i, c := range value {
		if c != byte(100+i) {
			t.Fatalf("byte %d of a held buffer changed: %d", 100+i, c)
		}
	}
}
