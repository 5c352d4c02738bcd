package zktest

import "syscall"

// sysProcAttr has the kernel kill the server if the test binary dies without
// running its cleanups (a panic, or go test's -timeout), so no ZooKeeper
// outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
