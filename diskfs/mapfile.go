package diskfs

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"syscall"
	"unsafe"
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

// Mapping is a file mapped read-only into memory, its pages read as they
// are touched (see LazyMapper).
type Mapping interface {
	// Bytes returns the file's content; it must not be used after Close.
	Bytes() []byte
	// DataAt returns the first range [start, end) at or after off that
	// may hold bytes other than zeros. What lies before start, or past
	// the last range, is a hole: space never written (reserved by
	// File.Allocate, say), which reads as zeros. start is len(Bytes())
	// when no data follows off. Where the file system cannot tell, the
	// range is everything from off on.
	DataAt(off int) (start, end int)
	// Close unmaps the file.
	Close() error
}

// LazyMapper is a file system that can map a file without reading it in
// and say where its holes are: the log reads only the records of a
// segment, not the preallocated space after them.
type LazyMapper interface {
	// MapLazy maps the whole file name, read-only.
	MapLazy(name string) (Mapping, error)
}

// MapLazy implements LazyMapper: a shared read-only mapping whose pages
// are read in as they are touched (the kernel reads ahead). The file
// must not be truncated below what is read while it is mapped; an I/O
// error reading a page faults the reader (see Guard).
func (OS) MapLazy(name string) (Mapping, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Size() != int64(int(st.Size())) {
		f.Close()
		return nil, fmt.Errorf("mapping %s: %d bytes, too large", name, st.Size())
	}
	m := &osMapping{f: f, data: []byte{}}
	if st.Size() > 0 {
		if m.data, err = syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED); err != nil {
			f.Close()
			return nil, &os.PathError{Op: "mmap", Path: name, Err: err}
		}
	}
	return m, nil
}

// lseek's whence values for holes (Linux), which package syscall lacks.
const (
	seekData = 3
	seekHole = 4
)

// osMapping keeps the file open, to ask it where its data lies.
type osMapping struct {
	f    *os.File
	data []byte
}

func (m *osMapping) Bytes() []byte { return m.data }

// DataAt asks the file system (lseek SEEK_DATA and SEEK_HOLE): ext4, XFS
// and tmpfs report space reserved by fallocate and never written as a
// hole, unless the page cache holds its pages; others report no holes.
func (m *osMapping) DataAt(off int) (start, end int) {
	size := len(m.data)
	if off >= size {
		return size, size
	}
	fd := int(m.f.Fd())
	s, err := syscall.Seek(fd, int64(off), seekData)
	if errors.Is(err, syscall.ENXIO) {
		return size, size // nothing but a hole from off to the end
	}
	if err != nil || s < int64(off) {
		return off, size
	}
	e, err := syscall.Seek(fd, s, seekHole)
	if err != nil || e <= s {
		return int(s), size
	}
	return int(min(s, int64(size))), int(min(e, int64(size)))
}

func (m *osMapping) Close() error {
	var err error
	if len(m.data) > 0 {
		err = syscall.Munmap(m.data)
	}
	m.data = nil
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Guard runs read, which reads the mapped bytes b, and returns a fault
// reading b (the disk failed to give the kernel a page of the file) as an
// error rather than letting it crash the process. Any other panic of
// read goes on as it would have.
func Guard(b []byte, read func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		// Only a fault inside b is the file's; anything else is a bug
		// that must crash as it would have.
		if f, ok := r.(interface{ Addr() uintptr }); ok && len(b) > 0 {
			start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
			if a := f.Addr(); a >= start && a < start+uintptr(len(b)) {
				err = fmt.Errorf("reading offset %d faulted (an I/O error?): %v", a-start, r)
				return
			}
		}
		panic(r)
	}()
	return read()
}
