package diskfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Locker is a file system that can hold a directory for one process.
type Locker interface {
	// Lock takes dir for the caller until unlock is called or the
	// process ends, or fails with ErrLocked if another holds it.
	Lock(dir string) (unlock func() error, err error)
}

// ErrLocked reports a directory another process (or another Lock in this
// one) holds.
var ErrLocked = errors.New("in use by another process")

// Lock implements Locker with an exclusive flock on dir/LOCK, which the
// kernel drops when the process ends however it ends, so a killed node
// leaves no stale lock behind.
func (OS) Lock(dir string) (func() error, error) {
	name := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", name, ErrLocked)
		}
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return f.Close, nil
}
