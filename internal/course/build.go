package course

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// BuildC builds the C course client (c/course_client.c) into a temporary
// directory of tb with `make course-client`, and returns its path. It
// fails the test, rather than skip it, when make, protoc-c, a C compiler
// or the libraries' headers are missing: scripts/install-deps.sh installs
// them, and CI runs it.
func BuildC(tb testing.TB) string {
	tb.Helper()
	for _, tool := range []string{"make", "cc", "protoc-c"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Fatalf("course: the C client needs %s: %v (scripts/install-deps.sh installs it)", tool, err)
		}
	}
	for _, h := range []string{"/usr/include/zookeeper/zookeeper.h", "/usr/include/protobuf-c/protobuf-c.h"} {
		if _, err := os.Stat(h); err != nil {
			tb.Fatalf("course: the C client needs %s: %v (scripts/install-deps.sh installs libzookeeper-mt-dev and libprotobuf-c-dev)", h, err)
		}
	}
	// The module's root, where the Makefile is: two levels above this
	// file's directory.
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatalf("course: cannot tell where the package's source is")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir := tb.TempDir()
	cmd := exec.Command("make", "-s", "-C", root, "course-client", "COURSE_OUT="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("course: build the C client: %v\n%s", err, out)
	}
	return filepath.Join(dir, "course_client")
}
