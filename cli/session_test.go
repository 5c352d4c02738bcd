package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/srv/srvtest"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the output the tests get")

// startServer starts a real table server for the test and returns its address.
func startServer(t testing.TB) string {
	t.Helper()
	addr, _ := srvtest.Start(t)
	return addr
}

func dialClient(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), Direct(addr), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newSession returns a session on a fresh server, writing to stdout and
// stderr.
func newSession(t *testing.T, stdout, stderr *bytes.Buffer) *Session {
	return &Session{Client: dialClient(t, startServer(t)), Stdout: stdout, Stderr: stderr, Timeout: 10 * time.Second}
}

// statsTime matches the one line of output that differs from run to run.
var statsTime = regexp.MustCompile(`(?m)^(Total time spent in operations: )\d+( microseconds)$`)

// TestGolden runs each testdata/*.txt script against a real server and
// compares what it prints with testdata/*.golden.
func TestGolden(t *testing.T) {
	scripts, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scripts in testdata: %v", err)
	}
	for _, script := range scripts {
		name := strings.TrimSuffix(filepath.Base(script), ".txt")
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(script)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var stdout, stderr bytes.Buffer
			failed, err := newSession(t, &stdout, &stderr).Run(context.Background(), filepath.Base(script), f)
			got := fmt.Sprintf("-- stdout --\n%s-- stderr --\n%s-- result --\nfailed %d, err %v\n",
				statsTime.ReplaceAllString(stdout.String(), "${1}N${2}"), stderr.String(), failed, err)

			checkGolden(t, strings.TrimSuffix(script, ".txt")+".golden", got)
		})
	}
}

// checkGolden compares got with the golden file, or with -update rewrites
// the file.
func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

func TestRunReportsLines(t *testing.T) {
	script := "put a 1\r\n" +
		"\n" +
		"get b\n" +
		"   # indented comment\n" +
		"put a\n" +
		"get a" // no final newline
	var stdout, stderr bytes.Buffer
	failed, err := newSession(t, &stdout, &stderr).Run(context.Background(), "t.txt", strings.NewReader(script))
	if failed != 2 || err != nil {
		t.Errorf("Run = %d, %v; want 2 failures, no error", failed, err)
	}
	wantErr := "t.txt:3: Error in rtable_get or key not found!\n" +
		"t.txt:5: Usage: p[ut] <key> <value>\n"
	if stderr.String() != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", &stderr, wantErr)
	}
	if stdout.String() != "1\n" {
		t.Errorf("stdout = %q, want %q", &stdout, "1\n")
	}
}

func TestRunStopsAtQuit(t *testing.T) {
	var stdout, stderr bytes.Buffer
	s := newSession(t, &stdout, &stderr)
	failed, err := s.Run(context.Background(), "t.txt", strings.NewReader("nonsense\nquit\nput a 1\n"))
	if failed != 1 || !errors.Is(err, ErrQuit) {
		t.Errorf("Run = %d, %v; want 1 failure and ErrQuit", failed, err)
	}
	if stdout.String() != "Bye, bye!\n" {
		t.Errorf("stdout = %q", &stdout)
	}
	if n, err := s.Client.Size(context.Background()); n != 0 || err != nil {
		t.Errorf("size = %d, %v: the put after quit ran", n, err)
	}
}

// TestRunConnectionLost shows the line for a failure that is not the
// server's refusal: it names the cause instead of guessing at a missing key.
func TestRunConnectionLost(t *testing.T) {
	var stdout, stderr bytes.Buffer
	s := newSession(t, &stdout, &stderr)
	s.Client.Close()
	failed, _ := s.Run(context.Background(), "stdin", strings.NewReader("get a\n"))
	if want := "stdin:1: Error in rtable_get: connection closed\n"; failed != 1 || stderr.String() != want {
		t.Errorf("Run = %d failures, stderr %q; want 1, %q", failed, &stderr, want)
	}
}
