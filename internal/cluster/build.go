package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ServerPackage is the command that Binary builds.
const ServerPackage = "github.com/chaintable/chaintable/srv/cmd/table_server"

// ServerEnv is the environment variable that, set to the path of a
// table_server, makes Binary use that instead of building one: to test a
// released build, or this module's server while its source does not
// compile.
const ServerEnv = "CHAINTABLE_SERVER"

// RaceEnv is the environment variable that, set to 1, makes Binary build
// table_server with the race detector; a data race a server reports then
// fails the test that ran it. It is off by default: instrumented servers
// are several times slower, which on a small machine stretches fault
// recovery past what the tests allow.
const RaceEnv = "CHAINTABLE_SERVER_RACE"

// buildDirPrefix names the temporary directories binaries are built in.
const buildDirPrefix = "chaintable-cluster-bin-"

// buildTimeout bounds one build; a cold build cache on two cores takes a
// minute or so.
const buildTimeout = 5 * time.Minute

var built struct {
	once sync.Once
	path string
	err  error
	lock *os.File // held open, and locked, for as long as the process lives
}

// Binary returns the path of a table_server built from this module, building
// it the first time it is called in the test binary, or the one ServerEnv
// names. It fails the test when the build fails, with the compiler's
// output.
func Binary(tb testing.TB) string {
	tb.Helper()
	built.once.Do(func() {
		if path := os.Getenv(ServerEnv); path != "" {
			built.path, built.err = prebuilt(path)
			return
		}
		built.path, built.err = buildServer()
	})
	if built.err != nil {
		tb.Fatalf("cluster: %v", built.err)
	}
	return built.path
}

// prebuilt checks the table_server that ServerEnv names.
func prebuilt(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s=%s is not an executable table_server (%v); unset it to build one", ServerEnv, path, err)
	}
	return abs, nil
}

func buildServer() (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("cannot build table_server: %v; put the go command of the toolchain that runs the tests in PATH", err)
	}
	sweepBuildDirs()
	dir, err := os.MkdirTemp("", buildDirPrefix)
	if err != nil {
		return "", err
	}
	// The lock says that this process still uses dir; once it exits, the
	// kernel drops the lock and a later build removes dir.
	if built.lock, err = lockDir(dir); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	out := filepath.Join(dir, "table_server")
	args := []string{"build", "-o", out}
	if os.Getenv(RaceEnv) == "1" {
		args = append(args, "-race")
	}
	args = append(args, ServerPackage)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args...)
	output, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s failed: %v\n%s", strings.Join(args, " "), err, output)
	}
	return out, nil
}

// sweepBuildDirs removes the build directories of test binaries that have
// exited. A directory without a lock file is being set up, unless it is old.
func sweepBuildDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
	for _, dir := range dirs {
		if abandoned(dir) {
			os.RemoveAll(dir)
		}
	}
}
