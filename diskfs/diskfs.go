// Package diskfs is the file layer of the write-ahead log (package wal)
// and the snapshots (package snap): the few file operations they need,
// on the real disk (OS) or on an in-memory disk (Mem) that simulates a
// crash by losing whatever was not synced, for tests.
package diskfs

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
)

// FS is a file system as the log and the snapshots use it. Names are
// paths; a directory's entries survive a crash only once SyncDir has
// been called on it after they were made.
type FS interface {
	// MkdirAll makes dir and its parents, as os.MkdirAll does.
	MkdirAll(dir string) error
	// ReadDir returns the names of dir's entries, sorted.
	ReadDir(dir string) ([]string, error)
	// Create makes the file name, empty, for writing; it fails if name exists.
	Create(name string) (File, error)
	// OpenWrite opens the existing file name for writing.
	OpenWrite(name string) (File, error)
	// ReadFile returns the content of the file name.
	ReadFile(name string) ([]byte, error)
	// Rename renames oldname to newname, replacing it.
	Rename(oldname, newname string) error
	// Remove removes the file name.
	Remove(name string) error
	// SyncDir makes dir's entries durable.
	SyncDir(dir string) error
}

// File is a file open for writing.
type File interface {
	// WriteAt writes p at offset off, as os.File.WriteAt does.
	WriteAt(p []byte, off int64) (int, error)
	// Allocate reserves space for size bytes, extending the file with
	// zeros if it is shorter.
	Allocate(size int64) error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Sync makes the file's data durable (on the real disk, fdatasync).
	Sync() error
	// Close closes the file.
	Close() error
}

// OS is the real file system.
type OS struct{}

// MkdirAll implements FS.
func (OS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

// ReadDir implements FS.
func (OS) ReadDir(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil // os.ReadDir sorts them
}

// Create implements FS.
func (OS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// OpenWrite implements FS.
func (OS) OpenWrite(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// ReadFile implements FS.
func (OS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// Rename implements FS.
func (OS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Remove implements FS.
func (OS) Remove(name string) error { return os.Remove(name) }

// SyncDir implements FS.
func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

type osFile struct{ *os.File }

// Allocate uses fallocate, so that later writes into the space need no
// change of the file's size or extents, which keeps each fdatasync to
// the data alone; where fallocate is not supported, it extends the file.
func (f osFile) Allocate(size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		st, serr := f.Stat()
		if serr != nil {
			return serr
		}
		if st.Size() < size {
			return f.File.Truncate(size)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("allocating %d bytes for %s: %w", size, f.Name(), err)
	}
	return nil
}

// Sync uses fdatasync: the log needs the data, and the file's size only
// when it changes, which fdatasync also covers.
// It goes through SyscallConn so that a Close meanwhile waits for it
// rather than freeing the descriptor under it.
func (f osFile) Sync() error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("syncing %s: %w", f.Name(), err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("syncing %s: %w", f.Name(), err)
	}
	return nil
}

// sortedKeys returns m's keys, sorted.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
