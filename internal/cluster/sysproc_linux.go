package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sysProcAttr has the kernel kill a server if the test binary dies without
// running its cleanups (a panic, or go test's -timeout), so that no server
// outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// lockDir creates dir's lock file and locks it; the lock lasts until the
// returned file is closed or the process exits.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Create(filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// abandoned reports whether the build directory dir belongs to no running
// process.
func abandoned(dir string) bool {
	f, err := os.Open(filepath.Join(dir, ".lock"))
	if errors.Is(err, os.ErrNotExist) {
		st, err := os.Stat(dir)
		return err == nil && time.Since(st.ModTime()) > time.Hour
	}
	if err != nil {
		return false
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil
}

// limitFileSize sets the file size limit (RLIMIT_FSIZE) of process pid to
// bytes: every later write of it past that offset, to any file, fails
// with EFBIG (a Go process ignores the SIGXFSZ that comes with it).
func limitFileSize(pid int, bytes uint64) error {
	return unix.Prlimit(pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: bytes, Max: bytes}, nil)
}
