package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/internal/cluster"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the output the tests get")

// Ports change from run to run: masked, keeping the width so that the
// table's columns stay aligned.
var portRE = regexp.MustCompile(`127\.0\.0\.1:\d+`)

func mask(s string) string {
	return portRE.ReplaceAllStringFunc(s, func(addr string) string {
		return "127.0.0.1:" + strings.Repeat("P", len(addr)-len("127.0.0.1:"))
	})
}

// TestChainCommandGolden runs table_client --chain, and the chain command
// of a script, on a chain of real table_server processes: three members;
// then a fourth joining while the tail it must catch up from is stopped
// (SIGSTOP), so that it stays behind and the stopped node stays silent;
// then, the tail resumed, all four caught up. The output, with ports
// masked, must match testdata/chain.golden.
func TestChainCommandGolden(t *testing.T) {
	// A session timeout far above the time the tail is stopped, so that
	// ZooKeeper keeps it in the chain meanwhile.
	c := cluster.Start(t, cluster.Options{SessionTimeout: 10 * time.Second, Quiet: true})
	c.WaitTailServes(15 * time.Second)
	cl := c.Client()
	const writes = 5
	for i := range writes {
		if err := cl.Put(context.Background(), fmt.Sprintf("key%d", i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	zk := c.ZKAddr()
	var out strings.Builder
	section := func(title string, args []string, stdin string) int {
		code, stdout, stderr := runClient(args, stdin)
		fmt.Fprintf(&out, "== %s\n$ table_client %s\n%s", title, strings.Join(args, " "), stdout)
		if stderr != "" {
			fmt.Fprintf(&out, "-- stderr --\n%s", stderr)
		}
		fmt.Fprintf(&out, "-- exit %d\n", code)
		return code
	}
	// waitChain waits until table_client --chain --json shows what ready
	// accepts: the output is printed only once the members have seen
	// what the test did.
	waitChain := func(what string, ready func([]cli.MemberStatus) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, stdout, _ := runClient([]string{"--chain", "--json", zk}, "")
			var ms []cli.MemberStatus
			if json.Unmarshal([]byte(stdout), &ms) == nil && ready(ms) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s; last --chain output:\n%s", what, stdout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Every member has committed every write once the tail has.
	waitAllCaughtUp := func(members int) {
		t.Helper()
		waitChain("every member caught up", func(ms []cli.MemberStatus) bool {
			return len(ms) == members && !slices.ContainsFunc(ms, func(m cli.MemberStatus) bool {
				return m.Applied != writes || m.Committed != writes || !m.Serving
			})
		})
	}

	waitAllCaughtUp(3)
	section("a chain of three", []string{"--chain", zk}, "")
	section("the same, as JSON", []string{"--chain", "--json", zk}, "")

	tail := c.At(2)
	tail.Stop()
	c.Add()
	// Registered, the new node still has to learn its place from ZooKeeper.
	waitChain("the new node joining", func(ms []cli.MemberStatus) bool {
		return len(ms) == 4 && ms[3].Role == "joining"
	})
	section("a fourth node joins behind a stopped tail", []string{"--chain", zk}, "")
	tail.Cont()

	c.WaitTailServes(30 * time.Second)
	waitAllCaughtUp(4)
	section("caught up: the chain command in a script", []string{zk}, "chain\n")

	got := mask(out.String())
	const golden = "testdata/chain.golden"
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

// TestChainDirect runs --chain on one server reached directly: a
// standalone server answers for itself; one that is not there fails the
// command, after the table says so.
func TestChainDirect(t *testing.T) {
	up := startServer(t)
	down := refusedAddr(t)
	tests := []struct {
		name      string
		args      []string
		code      int
		stdoutHas string
		stderrHas string
	}{
		{"standalone", []string{"--chain", "--direct", up}, 0, "standalone  0        0          0    yes", ""},
		{"standalone as JSON", []string{"--chain", "--json", "--direct", up}, 0, `"role":"standalone"`, ""},
		{"nothing there", []string{"--chain", "--direct", down}, 1, "connection refused", "chain: 1 of 1 members did not answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runClient(tt.args, "")
			if code != tt.code || !strings.Contains(stdout, tt.stdoutHas) || !strings.Contains(stderr, tt.stderrHas) {
				t.Errorf("table_client %q: exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d, stdout with %q, stderr with %q",
					tt.args, code, stdout, stderr, tt.code, tt.stdoutHas, tt.stderrHas)
			}
		})
	}
}

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
