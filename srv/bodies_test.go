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
	held := Buffer(size)
	for i := range held {
		held[i] = byte(i)
	}
	value := held[100:200] // a slice into it keeps it, as a write's value does
	held = nil
	dropped := uintptr(unsafe.Pointer(unsafe.SliceData(Buffer(size))))
	var others [][]byte // kept, so that each comes back at most once
	recycled := false
	for try := 0; try < 200 && !recycled; try++ {
		runtime.GC()
		time.Sleep(time.Millisecond) // finalizers run on their own goroutine
		b := Buffer(size)
		start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if v := uintptr(unsafe.Pointer(unsafe.SliceData(value))) - 100; start == v {
			t.Fatalf("try %d: Buffer handed out a buffer still referred to", try)
		}
		recycled = start == dropped
		others = append(others, b)
	}
	if !recycled {
		t.Errorf("a buffer nothing refers to did not come back in %d tries", len(others))
	}
	for i, c := range value {
		if c != byte(100+i) {
			t.Fatalf("byte %d of a held buffer changed: %d", 100+i, c)
		}
	}
}
