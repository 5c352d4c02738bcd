package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/chaintable/chaintable/srv/srvtest"
)

// startServer starts a real table server for the test and returns its address.
func startServer(t *testing.T) string {
	t.Helper()
	addr, _ := srvtest.Start(t)
	return addr
}

// runClient runs table_client with args and stdin, and returns its exit
// status, standard output and standard error.
func runClient(args []string, stdin string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestArguments(t *testing.T) {
	refused := refusedAddr(t)

	tests := []struct {
		name      string
		args      []string
		code      int
		stderrHas string
	}{
		{"help", []string{"-h"}, 0, "table_client [options] --direct <server_ip>:<port>"},
		{"help lists commands", []string{"--help"}, 0, "[get]t[able]"},
		{"no address", nil, 2, "want one address, got 0 operands"},
		{"two addresses", []string{"--direct", "a:1", "b:2"}, 2, "want one address, got 2 operands"},
		{"unknown flag", []string{"--frob", "a:1"}, 2, "flag provided but not defined: -frob"},
		{"address without port", []string{"--direct", "localhost"}, 2, `bad address "localhost"`},
		{"no zookeeper", []string{refused, "-timeout", "500ms"}, 1, "cannot reach ZooKeeper at " + refused},
		{"missing script", []string{"--direct", refused, "-f", "/nonexistent/script.txt"}, 2, "/nonexistent/script.txt"},
		{"nothing listening", []string{"--direct", refused}, 1, "cannot connect to " + refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runClient(tt.args, "")
			if code != tt.code || !strings.Contains(stderr, tt.stderrHas) {
				t.Errorf("table_client %q: exit %d, stderr:\n%s\nwant exit %d, stderr with %q", tt.args, code, stderr, tt.code, tt.stderrHas)
			}
		})
	}
}

func TestPipe(t *testing.T) {
	addr := startServer(t)
	code, stdout, stderr := runClient([]string{"--direct", addr}, "put a 1\nget a\n# comment\n\nsize\n")
	if code != 0 || stdout != "1\nTable size: 1\n" || stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	code, stdout, stderr = runClient([]string{"--direct", addr}, "get a\nget nope\ndel a\n")
	if code != 1 || stdout != "1\nEntry removed\n" || stderr != "stdin:2: Error in rtable_get or key not found!\n" {
		t.Errorf("with a failure: exit %d, stdout %q, stderr %q; want exit 1 and the failed line", code, stdout, stderr)
	}
}

func TestScripts(t *testing.T) {
	addr := startServer(t)
	t.Chdir(t.TempDir())
	write := func(name, text string) {
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.txt", "put k v\nget x\n")
	write("b.txt", "# second\nget k\nfrob\nquit\nput late 1\n")
	write("c.txt", "put never 1\n")

	// Flags may follow the address; the scripts run in order, stdin is not
	// read, and quit in b.txt ends the run before c.txt.
	code, stdout, stderr := runClient([]string{"--direct", addr, "-f", "a.txt", "-f", "b.txt", "-f", "c.txt"}, "put stdin 1\n")
	wantErr := "a.txt:2: Error in rtable_get or key not found!\n" +
		`b.txt:3: unknown command "frob"; type help for the list of commands` + "\n"
	if code != 1 || stdout != "v\nBye, bye!\n" || stderr != wantErr {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 1, stdout %q, stderr:\n%s", code, stdout, stderr, "v\nBye, bye!\n", wantErr)
	}

	code, stdout, _ = runClient([]string{"--direct", addr}, "getkeys\n")
	if code != 0 || stdout != "k\n" {
		t.Errorf("keys after the scripts: exit %d, %q; want only k", code, stdout)
	}
}
