package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/internal/zktest"
	"github.com/go-zookeeper/zk"
)

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		want   options
		errHas string
	}{
		{name: "defaults", args: []string{"127.0.0.1:2181"},
			want: options{addr: "127.0.0.1:2181", conns: 16, duration: 5 * time.Second, size: 100, root: "/zk_perf"}},
		{name: "all flags", args: []string{"-c", "4", "-T", "1s", "-d", "0", "-root", "/x/y", "zk:1"},
			want: options{addr: "zk:1", conns: 4, duration: time.Second, size: 0, root: "/x/y"}},
		{name: "no address", args: nil, errHas: "one ZooKeeper address"},
		{name: "two addresses", args: []string{"a:1", "b:2"}, errHas: "one ZooKeeper address"},
		{name: "no connections", args: []string{"-c", "0", "a:1"}, errHas: "-c must be positive"},
		{name: "root not a path", args: []string{"-root", "x", "a:1"}, errHas: "-root a path"},
		{name: "root is /", args: []string{"-root", "/", "a:1"}, errHas: "-root a path"},
		{name: "data too large", args: []string{"-d", "2000000", "a:1"}, errHas: "-d from 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseArgs(tt.args, &stderr)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want one with %q", err, tt.errHas)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseArgs = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestRun writes to a real ZooKeeper: it counts writes, leaves no znode
// behind, and refuses a root that exists rather than write over it.
func TestRun(t *testing.T) {
	zks := zktest.Start(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"-c", "4", "-T", "300ms", zks.Addr()}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	m := regexp.MustCompile(`: (\d+) writes in ([\d.]+)s = (\d+) writes/s`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no writes in the output %q", out.String())
	}
	if n, _ := strconv.Atoi(m[1]); n < 4 {
		t.Errorf("%d writes by 4 connections in 300ms", n)
	}
	// The root is gone: a second run can make it again.
	out.Reset()
	if code := run([]string{"-c", "1", "-T", "50ms", zks.Addr()}, &out, &errOut); code != 0 {
		t.Fatalf("second run: exit %d: %s", code, errOut.String())
	}

	conn, err := connect(zks.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Create("/taken", []byte("keep"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if code := run([]string{"-c", "1", "-T", "50ms", "-root", "/taken", zks.Addr()}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "creating /taken") {
		t.Fatalf("onto an existing root: exit %d, %q; want 1 and an error naming it", code, errOut.String())
	}
	if data, _, err := conn.Get("/taken"); err != nil || string(data) != "keep" {
		t.Fatalf("the existing root holds %q, %v; want it untouched", data, err)
	}
}
