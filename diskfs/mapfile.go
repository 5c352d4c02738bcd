package diskfs

import (
	"fmt"
	"os"
	"syscall"
)

// Mapper is a file system that can map a file into memory, read-only.
// A file read through a mapping needs no buffer of its size: reading a
// snapshot of 1,000,000 keys so spares a new process 120 MB of page faults
// (see snap.Load).
type Mapper interface {
	// MapFile maps the whole file name and returns its bytes and the
	// function that unmaps them. The bytes must not be used after it.
	MapFile(name string) (data []byte, unmap func() error, err error)
}

// MapFile implements Mapper: a shared read-only mapping, its pages read
// in at once (MAP_POPULATE). The file must not be truncated while it is
// mapped; an I/O error reading a page faults the reader (see
// runtime/debug.SetPanicOnFault).
func (OS) MapFile(name string) ([]byte, func() error, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return []byte{}, func() error { return nil }, nil
	}
	if st.Size() != int64(int(st.Size())) {
		return nil, nil, fmt.Errorf("mapping %s: %d bytes, too large", name, st.Size())
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return nil, nil, &os.PathError{Op: "mmap", Path: name, Err: err}
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}
