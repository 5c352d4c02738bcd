package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/chain"
	"github.com/chaintable/chaintable/wal"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		errHas  string
		helpful bool
	}{
		{name: "chain", args: []string{"127.0.0.1:2181", "7000", "8"},
			want: options{zkAddr: "127.0.0.1:2181", port: 7000, lists: 8}},
		{name: "standalone with flags after", args: []string{"--standalone", "7000", "1", "-v", "--bind", "127.0.0.1"},
			want: options{standalone: true, port: 7000, lists: 1, verbose: true, bind: "127.0.0.1"}},
		{name: "advertise and session", args: []string{"-advertise", "10.0.0.1", "-session-timeout", "2s", "zk:1", "7000", "65536"},
			want: options{zkAddr: "zk:1", port: 7000, lists: 65536, advertise: "10.0.0.1", sessionTimeout: 2 * time.Second}},
		{name: "ensemble", args: []string{"127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183", "7000", "8"},
			want: options{zkAddr: "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183", port: 7000, lists: 8}},
		{name: "too few", args: []string{"127.0.0.1:2181", "7000"}, errHas: "expected 3 arguments, got 2"},
		{name: "standalone too many", args: []string{"--standalone", "zk:1", "7000", "8"}, errHas: "expected 2 arguments, got 3"},
		{name: "bad zk address", args: []string{"localhost", "7000", "8"}, errHas: `ZooKeeper address "localhost"`},
		{name: "port zero", args: []string{"zk:1", "0", "8"}, errHas: `server port "0"`},
		{name: "port too big", args: []string{"zk:1", "70000", "8"}, errHas: `server port "70000"`},
		{name: "lists zero", args: []string{"zk:1", "7000", "0"}, errHas: `number of lists "0"`},
		{name: "lists too many", args: []string{"zk:1", "7000", "65537"}, errHas: `number of lists "65537"`},
		{name: "lists not a number", args: []string{"zk:1", "7000", "many"}, errHas: `number of lists "many"`},
		{name: "bad max frame", args: []string{"--max-frame", "0", "zk:1", "7000", "8"}, errHas: "must be positive"},
		{name: "bad client expiry", args: []string{"--client-expiry", "0s", "zk:1", "7000", "8"}, errHas: "must be positive"},
		{name: "bad idle timeout", args: []string{"--idle-timeout", "-1s", "zk:1", "7000", "8"}, errHas: "not negative"},
		{name: "lease defaults to half the session", args: []string{"-session-timeout", "3s", "zk:1", "7000", "8"},
			want: options{zkAddr: "zk:1", port: 7000, lists: 8, sessionTimeout: 3 * time.Second, leaseTerm: 1500 * time.Millisecond}},
		{name: "lease within the session", args: []string{"-lease", "1s", "-hold", "5s", "zk:1", "7000", "8"},
			want: options{zkAddr: "zk:1", port: 7000, lists: 8, leaseTerm: time.Second, holdTimeout: 5 * time.Second}},
		{name: "lease past the session", args: []string{"-lease", "5s", "zk:1", "7000", "8"}, errHas: "-lease 5s is longer than -session-timeout 4s"},
		{name: "bad hold", args: []string{"-hold", "0s", "zk:1", "7000", "8"}, errHas: "must be positive"},
		{name: "metrics", args: []string{"--standalone", "7000", "1", "--metrics-addr", "127.0.0.1:9101"},
			want: options{standalone: true, port: 7000, lists: 1, metricsAddr: "127.0.0.1:9101"}},
		{name: "data dir", args: []string{"--data-dir", "/var/lib/ct", "--fsync", "always", "zk:1", "7000", "8"},
			want: options{zkAddr: "zk:1", port: 7000, lists: 8, dataDir: "/var/lib/ct", fsync: wal.Always}},
		{name: "bad fsync", args: []string{"--data-dir", "d", "--fsync", "sometimes", "zk:1", "7000", "8"}, errHas: `fsync mode "sometimes": want always, batch or none`},
		{name: "fsync without data dir", args: []string{"--fsync", "none", "zk:1", "7000", "8"}, errHas: "give -data-dir too"},
		{name: "data dir standalone", args: []string{"--standalone", "--data-dir", "d", "7000", "8"}, errHas: "does not go with -standalone"},
		{name: "metrics without port", args: []string{"--metrics-addr", "localhost", "zk:1", "7000", "8"}, errHas: `-metrics-addr "localhost": want host:port`},
		{name: "profiles", args: []string{"--standalone", "7000", "1", "--metrics-addr", "127.0.0.1:9101", "--pprof"},
			want: options{standalone: true, port: 7000, lists: 1, metricsAddr: "127.0.0.1:9101", pprof: true}},
		{name: "profiles without metrics", args: []string{"--pprof", "zk:1", "7000", "8"}, errHas: "-pprof needs -metrics-addr"},
		{name: "unknown flag", args: []string{"--frob", "zk:1", "7000", "8"}, errHas: "flag provided but not defined"},
		{name: "help", args: []string{"-h"}, helpful: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := parseArgs(tt.args, &stderr)
			switch {
			case tt.helpful:
				if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "--standalone <server_port> <num_lists>") {
					t.Fatalf("err %v, usage %q", err, stderr.String())
				}
			case tt.errHas != "":
				if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.errHas) {
					t.Fatalf("err %v, want one with %q", err, tt.errHas)
				}
			case err != nil:
				t.Fatal(err)
			default:
				tt.want.maxFrame, tt.want.maxConns, tt.want.maxUnread, tt.want.replyBudget, tt.want.maxScan, tt.want.clientExpiry = got.maxFrame, got.maxConns, got.maxUnread, got.replyBudget, got.maxScan, got.clientExpiry
				if tt.want.sessionTimeout == 0 {
					tt.want.sessionTimeout = 4 * time.Second
				}
				if tt.want.leaseTerm == 0 {
					tt.want.leaseTerm = tt.want.sessionTimeout / 2
				}
				if tt.want.holdTimeout == 0 {
					tt.want.holdTimeout = chain.DefaultHoldTimeout
				}
				if got != tt.want {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
			}
		})
	}
}
