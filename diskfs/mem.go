package diskfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"sync"
)

// Mem is an in-memory FS for tests that keeps, beside every file's
// content, what a crash would leave of it: the content as of its last
// Sync, and the directories' entries as of their last SyncDir. Crash
// returns the disk as a restarted machine finds it: that, plus a torn
// part of what followed. Fault, when set, makes chosen operations fail.
// Mem is safe for concurrent use.
type Mem struct {
	mu      sync.Mutex
	dirs    map[string]map[string]*inode // live entries, by directory
	saved   map[string]map[string]*inode // entries as of each SyncDir
	syncs   int
	crashed bool // every operation fails, as for a process killed by the crash

	// Fault, when not nil, is asked before every operation named op
	// ("create", "write", "allocate", "truncate", "sync", "rename",
	// "remove", "syncdir") on name, and an error it returns is that
	// operation's result, with nothing done.
	Fault func(op, name string) error
}

// inode is one file: its live content, its content as of its last Sync,
// and the writes since then, in order, which a crash may partly keep.
type inode struct {
	data     []byte
	synced   []byte
	unsynced []op
}

// op is a change to a file's content since its last Sync: a write of
// data at off, or a resize to off.
type op struct {
	off    int64
	data   []byte
	resize bool
}

func (o op) apply(b []byte) []byte {
	if o.resize {
		if int64(len(b)) >= o.off {
			return b[:o.off]
		}
		return append(b, make([]byte, o.off-int64(len(b)))...)
	}
	if end := o.off + int64(len(o.data)); int64(len(b)) < end {
		b = append(b, make([]byte, end-int64(len(b)))...)
	}
	copy(b[o.off:], o.data)
	return b
}

// NewMem returns an empty in-memory FS whose root directory exists.
func NewMem() *Mem {
	return &Mem{dirs: map[string]map[string]*inode{}, saved: map[string]map[string]*inode{}}
}

// Syncs returns how many times a file was synced.
func (m *Mem) Syncs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncs
}

// Crash simulates a power cut. From then on m, and every File opened on
// it, fails every operation, as for the processes the cut killed; the
// returned Mem is the disk after the restart: each directory holds the
// entries it had at its last SyncDir, and each file its content as of
// its last Sync followed by the first few of the writes since, of which
// the last may be torn at a random byte; rng picks how many and where.
// Its Fault is m's.
func (m *Mem) Crash(rng *rand.Rand) *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashed = true
	n := NewMem()
	n.Fault = m.Fault
	seen := map[*inode]*inode{}
	for dir, entries := range m.saved {
		live := map[string]*inode{}
		for name, ino := range entries {
			if after, ok := seen[ino]; ok {
				live[name] = after
				continue
			}
			after := &inode{data: bytes.Clone(ino.synced)}
			keep := rng.IntN(len(ino.unsynced) + 1)
			for i, o := range ino.unsynced[:keep] {
				if i == keep-1 && !o.resize {
					o.data = o.data[:rng.IntN(len(o.data)+1)]
				}
				after.data = o.apply(after.data)
			}
			after.synced = bytes.Clone(after.data)
			seen[ino] = after
			live[name] = after
		}
		n.dirs[dir] = live
		n.saved[dir] = copyEntries(live)
	}
	return n
}

// Corrupt overwrites the live and the synced content of name at off with
// data, as damage on the medium would.
func (m *Mem) Corrupt(name string, off int64, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, err := m.lookup(name)
	if err != nil {
		return err
	}
	if off+int64(len(data)) > int64(len(ino.data)) {
		return fmt.Errorf("corrupting %s at %d: the file has %d bytes", name, off, len(ino.data))
	}
	copy(ino.data[off:], data)
	if off+int64(len(data)) <= int64(len(ino.synced)) {
		copy(ino.synced[off:], data)
	}
	return nil
}

// ReadFile implements FS: it returns a copy of name's live content.
func (m *Mem) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(ino.data), nil
}

func copyEntries(entries map[string]*inode) map[string]*inode {
	c := make(map[string]*inode, len(entries))
	for k, v := range entries {
		c[k] = v
	}
	return c
}

// errCrashed is what every operation on a crashed Mem returns.
var errCrashed = errors.New("the disk crashed")

func (m *Mem) fault(op, name string) error {
	if m.crashed {
		return &fs.PathError{Op: op, Path: name, Err: errCrashed}
	}
	if m.Fault == nil {
		return nil
	}
	return m.Fault(op, name)
}

func (m *Mem) lookup(name string) (*inode, error) {
	if m.crashed {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errCrashed}
	}
	dir, base := filepath.Split(filepath.Clean(name))
	ino, ok := m.dirs[filepath.Clean(dir)][base]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return ino, nil
}

// MkdirAll implements FS. Directories themselves are durable at once.
func (m *Mem) MkdirAll(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fault("mkdir", dir); err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	if m.dirs[dir] == nil {
		m.dirs[dir] = map[string]*inode{}
		m.saved[dir] = map[string]*inode{}
	}
	return nil
}

// ReadDir implements FS.
func (m *Mem) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.crashed {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: errCrashed}
	}
	entries, ok := m.dirs[filepath.Clean(dir)]
	if !ok {
		return nil, &fs.PathError{Op: "readdir", Path: dir, Err: fs.ErrNotExist}
	}
	return sortedKeys(entries), nil
}

// Create implements FS.
func (m *Mem) Create(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fault("create", name); err != nil {
		return nil, err
	}
	dir, base := filepath.Split(filepath.Clean(name))
	entries, ok := m.dirs[filepath.Clean(dir)]
	if !ok {
		return nil, &fs.PathError{Op: "create", Path: name, Err: fs.ErrNotExist}
	}
	if _, ok := entries[base]; ok {
		return nil, &fs.PathError{Op: "create", Path: name, Err: fs.ErrExist}
	}
	ino := &inode{}
	entries[base] = ino
	return &memFile{m: m, ino: ino, name: name}, nil
}

// OpenWrite implements FS.
func (m *Mem) OpenWrite(name string) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	return &memFile{m: m, ino: ino, name: name}, nil
}

// Rename implements FS.
func (m *Mem) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fault("rename", oldname); err != nil {
		return err
	}
	ino, err := m.lookup(oldname)
	if err != nil {
		return err
	}
	odir, obase := filepath.Split(filepath.Clean(oldname))
	ndir, nbase := filepath.Split(filepath.Clean(newname))
	entries, ok := m.dirs[filepath.Clean(ndir)]
	if !ok {
		return &fs.PathError{Op: "rename", Path: newname, Err: fs.ErrNotExist}
	}
	delete(m.dirs[filepath.Clean(odir)], obase)
	entries[nbase] = ino
	return nil
}

// Remove implements FS.
func (m *Mem) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fault("remove", name); err != nil {
		return err
	}
	if _, err := m.lookup(name); err != nil {
		return err
	}
	dir, base := filepath.Split(filepath.Clean(name))
	delete(m.dirs[filepath.Clean(dir)], base)
	return nil
}

// SyncDir implements FS.
func (m *Mem) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fault("syncdir", dir); err != nil {
		return err
	}
	dir = filepath.Clean(dir)
	entries, ok := m.dirs[dir]
	if !ok {
		return &fs.PathError{Op: "syncdir", Path: dir, Err: fs.ErrNotExist}
	}
	m.saved[dir] = copyEntries(entries)
	return nil
}

// memFile is a File of a Mem.
type memFile struct {
	m      *Mem
	ino    *inode
	name   string
	closed bool
}

// change applies o, the operation opName, to the file, unless a fault or
// a crash stops it.
func (f *memFile) change(opName string, o op) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.usable(opName); err != nil {
		return err
	}
	if opName == "allocate" && int64(len(f.ino.data)) >= o.off {
		return nil // allocating only ever extends
	}
	o.data = bytes.Clone(o.data)
	f.ino.data = o.apply(f.ino.data)
	f.ino.unsynced = append(f.ino.unsynced, o)
	return nil
}

func (f *memFile) usable(op string) error {
	if f.closed {
		return fmt.Errorf("%s %s: file closed", op, f.name)
	}
	return f.m.fault(op, f.name)
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.change("write", op{off: off, data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (f *memFile) Allocate(size int64) error {
	return f.change("allocate", op{off: size, resize: true})
}

func (f *memFile) Truncate(size int64) error {
	return f.change("truncate", op{off: size, resize: true})
}

func (f *memFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.usable("sync"); err != nil {
		return err
	}
	f.m.syncs++
	// Replaying the writes costs what they did, where copying the
	// content would cost its size (a preallocated segment is large).
	for _, o := range f.ino.unsynced {
		f.ino.synced = o.apply(f.ino.synced)
	}
	f.ino.unsynced = nil
	return nil
}

func (f *memFile) Close() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if f.closed {
		return fmt.Errorf("close %s: file already closed", f.name)
	}
	f.closed = true
	return nil
}
