package srv

import (
	"math/bits"
	"runtime"
	"sync"
	"unsafe"
)

// bodyPools keep the buffers of large frames' bodies for reuse, one pool
// per class of capacity: allocating a buffer for each frame costs
// clearing it, and with a small live heap makes the garbage collector run
// every few frames. There are four classes per doubling from largeFrame
// on, so that a buffer is at most a quarter larger than the body it holds.
var bodyPools [4*(bits.UintSize-16) + 1]sync.Pool

// bodyClass returns the class of a body of size bytes, size >= largeFrame,
// and the capacity of its buffers.
func bodyClass(size int) (class, capacity int) {
	e := bits.Len(uint(size)) - 1 // 1<<e <= size < 1<<(e+1)
	step := 1 << (e - 2)
	q := (size - 1<<e + step - 1) / step
	return 4*(e-16) + q, 1<<e + q*step
}

// getBody returns an empty buffer with room for size bytes.
func getBody(size int) []byte {
	class, capacity := bodyClass(size)
	if b, ok := bodyPools[class].Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, capacity)
}

// putBody keeps b, from getBody, for reuse. Nothing may use b afterwards.
func putBody(b []byte) {
	if class, capacity := bodyClass(cap(b)); capacity == cap(b) {
		bodyPools[class].Put(&b)
	}
}

// Buffer returns a buffer of size bytes. One of largeFrame bytes or more
// comes from the pools of large frames' bodies, and goes back to them once
// the garbage collector finds nothing refers to it any more. Memory a buffer is taken from is
// mostly already mapped: a fresh 10 MB allocation costs a page fault per
// 4 KiB page on its first write, which costs several times the copy itself.
// Since it is the collector that returns it, the buffer may be kept, and
// sliced, for as long as needed, with no rule about giving it back; nor
// may it be given back by hand (putBody): it would be handed out while
// still referred to.
func Buffer(size int) []byte {
	if size < largeFrame {
		return make([]byte, size)
	}
	b := getBody(size)[:size]
	c := cap(b)
	runtime.SetFinalizer(unsafe.SliceData(b), func(p *byte) {
		putBody(unsafe.Slice(p, c)[:0])
	})
	return b
}
