package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/perf"
	"github.com/chaintable/chaintable/srv"
)

func TestParseArgs(t *testing.T) {
	direct := perf.Target{Kind: perf.Direct, Addr: "127.0.0.1:7000"}
	tests := []struct {
		name    string
		args    []string
		check   func(t *testing.T, o options)
		wantErr string
	}{
		{name: "defaults", args: []string{"--direct", "127.0.0.1:7000"}, check: func(t *testing.T, o options) {
			c := o.cfg
			if !reflect.DeepEqual(c.Target, direct) || c.Conns != 50 || c.Pipeline != 1 || c.Requests != perf.DefaultRequests || c.Duration != 0 ||
				c.ValueSize != 32 || c.Keys != 100000 || c.Workload != (perf.Workload{Op: perf.OpPut}) || c.Dist != perf.Uniform ||
				c.Preload || c.Seed != 1 || c.Timeout != 10*time.Second || o.json || o.vsRedis != "" {
				t.Errorf("%+v", o)
			}
		}},
		{name: "everything", args: []string{"-c", "8", "-P", "16", "-n", "5000", "-T", "3s", "-d", "100", "-r", "1000",
			"-w", "mix:0.9", "--preload", "-dist", "zipf", "-zipf-s", "1.5", "--direct", "h:1", "--json", "-seed", "7",
			"-timeout", "2s", "-label", "x", "-q"},
			check: func(t *testing.T, o options) {
				c := o.cfg
				if c.Conns != 8 || c.Pipeline != 16 || c.Requests != 5000 || c.Duration != 3*time.Second || c.ValueSize != 100 ||
					c.Keys != 1000 || c.Workload != (perf.Workload{Mix: true, ReadFraction: 0.9}) || !c.Preload ||
					c.Dist != perf.Zipf || c.ZipfS != 1.5 || !o.json || c.Seed != 7 || c.Timeout != 2*time.Second ||
					o.label != "x" || !o.quiet {
					t.Errorf("%+v", o)
				}
			}},
		{name: "duration only", args: []string{"--direct", "h:1", "-T", "5s"}, check: func(t *testing.T, o options) {
			if o.cfg.Requests != 0 || o.cfg.Duration != 5*time.Second {
				t.Errorf("requests %d duration %s", o.cfg.Requests, o.cfg.Duration)
			}
		}},
		{name: "chain", args: []string{"127.0.0.1:2181", "-w", "get", "--chain-members", "3"}, check: func(t *testing.T, o options) {
			if !reflect.DeepEqual(o.cfg.Target, perf.Target{Kind: perf.Chain, Addr: "127.0.0.1:2181", ChainMembers: 3}) {
				t.Errorf("target %+v", o.cfg.Target)
			}
		}},
		{name: "flags after the address", args: []string{"127.0.0.1:2181", "-P", "4"}, check: func(t *testing.T, o options) {
			if o.cfg.Target.Kind != perf.Chain || o.cfg.Pipeline != 4 {
				t.Errorf("%+v", o.cfg)
			}
		}},
		{name: "redis", args: []string{"--redis", "127.0.0.1:6379", "--redis-wait", "2"}, check: func(t *testing.T, o options) {
			if !reflect.DeepEqual(o.cfg.Target, perf.Target{Kind: perf.Redis, Addr: "127.0.0.1:6379", RedisWait: 2}) {
				t.Errorf("target %+v", o.cfg.Target)
			}
		}},
		{name: "vs redis", args: []string{"127.0.0.1:2181", "--vs-redis", "127.0.0.1:6379", "--redis-wait", "2"}, check: func(t *testing.T, o options) {
			cfgs := o.configs()
			if len(cfgs) != 2 || !reflect.DeepEqual(cfgs[0].Target, perf.Target{Kind: perf.Chain, Addr: "127.0.0.1:2181"}) ||
				!reflect.DeepEqual(cfgs[1].Target, perf.Target{Kind: perf.Redis, Addr: "127.0.0.1:6379", RedisWait: 2}) {
				t.Errorf("configs %+v", cfgs)
			}
		}},
		{name: "process IDs", args: []string{"127.0.0.1:2181", "--vs-redis", "127.0.0.1:6379", "-pids", "10,11, 12", "-redis-pids", "20"}, check: func(t *testing.T, o options) {
			cfgs := o.configs()
			if len(cfgs) != 2 || !reflect.DeepEqual(cfgs[0].Target.PIDs, []int{10, 11, 12}) || !reflect.DeepEqual(cfgs[1].Target.PIDs, []int{20}) {
				t.Errorf("configs %+v", cfgs)
			}
		}},
		{name: "table", args: []string{"--table", "a.json", "b.json"}, check: func(t *testing.T, o options) {
			if len(o.table) != 2 {
				t.Errorf("table %v", o.table)
			}
		}},
		{name: "targets", args: []string{"--targets", "a.json"}, check: func(t *testing.T, o options) {
			if len(o.table) != 1 || o.show == nil {
				t.Errorf("reports %v, show %v", o.table, o.show != nil)
			}
		}},

		{name: "no target", args: nil, wantErr: "no target"},
		{name: "bad process ID", args: []string{"--direct", "h:1", "-pids", "12,x"}, wantErr: `-pids: "x" is not a process ID`},
		{name: "process ID 0", args: []string{"--direct", "h:1", "-pids", "0"}, wantErr: `-pids: "0" is not a process ID`},
		{name: "redis pids without vs-redis", args: []string{"--direct", "h:1", "-redis-pids", "5"}, wantErr: "-redis-pids needs --vs-redis"},
		{name: "two targets", args: []string{"--direct", "h:1", "--redis", "h:2"}, wantErr: "only one of"},
		{name: "chain and direct", args: []string{"h:3", "--direct", "h:1"}, wantErr: "only one of"},
		{name: "two positionals", args: []string{"h:1", "h:2"}, wantErr: "at most one argument"},
		{name: "bad workload", args: []string{"--direct", "h:1", "-w", "scan"}, wantErr: `workload "scan"`},
		{name: "bad mix", args: []string{"--direct", "h:1", "-w", "mix:2"}, wantErr: "from 0 to 1"},
		{name: "bad dist", args: []string{"--direct", "h:1", "-dist", "pareto"}, wantErr: "pareto"},
		{name: "zipf s", args: []string{"--direct", "h:1", "-dist", "zipf", "-zipf-s", "0.9"}, wantErr: "greater than 1"},
		{name: "zero conns", args: []string{"--direct", "h:1", "-c", "0"}, wantErr: "connections"},
		{name: "zero pipeline", args: []string{"--direct", "h:1", "-P", "0"}, wantErr: "pipeline"},
		{name: "zero rounds", args: []string{"--direct", "h:1", "-rounds", "0"}, wantErr: "-rounds"},
		{name: "negative n", args: []string{"--direct", "h:1", "-n", "-1"}, wantErr: "requests"},
		{name: "bad address", args: []string{"--direct", "localhost"}, wantErr: `"localhost" is not host:port`},
		{name: "port 0", args: []string{"--direct", "h:0"}, wantErr: "port 0"},
		{name: "bad zk address", args: []string{"zk"}, wantErr: `ZooKeeper address "zk"`},
		{name: "wait without redis", args: []string{"--direct", "h:1", "--redis-wait", "1"}, wantErr: "needs a Redis target"},
		{name: "vs redis with redis", args: []string{"--redis", "h:1", "--vs-redis", "h:2"}, wantErr: "without --redis"},
		{name: "members without chain", args: []string{"--direct", "h:1", "--chain-members", "3"}, wantErr: "needs a chain target"},
		{name: "table without files", args: []string{"--table"}, wantErr: "at least one report"},
		{name: "targets without files", args: []string{"--targets"}, wantErr: "at least one report"},
		{name: "table and targets", args: []string{"--table", "--targets", "a.json"}, wantErr: "one of --table, --plot and --targets"},
		{name: "unknown flag", args: []string{"--direct", "h:1", "--bogus"}, wantErr: "not defined"},
		{name: "bad number", args: []string{"--direct", "h:1", "-c", "many"}, wantErr: "invalid value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseArgs(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseArgs(%q) error %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tt.args, err)
			}
			tt.check(t, o)
		})
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := parseArgs([]string{"-h"}, &out)
	if err != flag.ErrHelp || !strings.Contains(out.String(), "Usage:") || !strings.Contains(out.String(), "-vs-redis") {
		t.Errorf("err %v, help:\n%s", err, out.String())
	}
	if code := run([]string{"-h"}, io.Discard, io.Discard); code != 0 {
		t.Errorf("-h exits %d", code)
	}
}

func TestExitCodes(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"--direct"}, io.Discard, &stderr); code != 2 {
		t.Errorf("bad command line exits %d", code)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	stderr.Reset()
	if code := run([]string{"--direct", addr, "-c", "1"}, io.Discard, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "cannot connect to chaintable server at "+addr) {
		t.Errorf("unreachable server exits %d: %s", code, stderr.String())
	}
}

// A run against a real server prints JSON that --table reads back.
func TestRunAndTable(t *testing.T) {
	store, err := srv.NewStore(8)
	if err != nil {
		t.Fatal(err)
	}
	s, err := srv.Start(srv.Config{Addr: "127.0.0.1:0", Handler: store, Stats: store.Stats, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Stop(ctx)
	}()

	var stdout, stderr bytes.Buffer
	code := run([]string{"--direct", s.Addr(), "-n", "2000", "-c", "4", "-P", "8", "-w", "get", "--preload", "-r", "300", "--json", "-label", "get test"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	r, err := perf.ReadReport(bytes.NewReader(stdout.Bytes()))
	if err != nil {
		t.Fatalf("%v:\n%s", err, stdout.String())
	}
	if len(r.Results) != 1 || r.Results[0].Requests != 2000 || r.Results[0].Errors != 0 || r.Results[0].OK != 2000 || r.Params.Keys != 300 {
		t.Errorf("report %+v", r)
	}
	file := filepath.Join(t.TempDir(), "get.json")
	if err := os.WriteFile(file, stdout.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := run([]string{"--table", file}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "get test") {
		t.Errorf("--table exits %d:\n%s%s", code, stdout.String(), stderr.String())
	}

	// Rounds add up: three rounds of 500 requests are reported as one
	// result of 1500.
	stdout.Reset()
	code = run([]string{"--direct", s.Addr(), "-n", "500", "-c", "2", "-w", "get", "--preload", "-r", "300", "-rounds", "3", "--json", "-q"}, &stdout, &stderr)
	if r, err := perf.ReadReport(bytes.NewReader(stdout.Bytes())); code != 0 || err != nil ||
		len(r.Results) != 1 || r.Results[0].Requests != 1500 || r.Results[0].OK != 1500 || r.Params.Rounds != 3 {
		t.Errorf("-rounds 3 exits %d, %v:\n%s%s", code, err, stdout.String(), stderr.String())
	}

	stdout.Reset()
	code = run([]string{"--direct", s.Addr(), "-n", "500", "-c", "2", "-w", "get", "-r", "300"}, &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "500 ok, 0 misses, 0 errors") {
		t.Errorf("text run exits %d:\n%s", code, stdout.String())
	}
}
