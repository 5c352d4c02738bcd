//go:build !linux

package cluster

import (
	"errors"
	"os"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

// lockDir does nothing here: build directories are not swept.
func lockDir(dir string) (*os.File, error) { return nil, nil }

func abandoned(dir string) bool { return false }

func limitFileSize(pid int, bytes uint64) error {
	return errors.New("cluster: limiting a process's file size needs Linux")
}
