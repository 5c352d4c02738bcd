package perf

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chaintable/chaintable/internal/zktest"
	"github.com/chaintable/chaintable/srv"
	"github.com/chaintable/chaintable/srv/srvtest"
	"github.com/chaintable/chaintable/zkwatch"
)

// startServer runs a standalone table server in the test process.
func startServer(t *testing.T) (addr string, store *srv.Store) {
	t.Helper()
	return srvtest.Start(t)
}

func mustRun(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// checkCounts checks that every request was answered, without errors.
func checkCounts(t *testing.T, res *Result, requests, misses int64) {
	t.Helper()
	if res.Requests != requests || res.Errors != 0 || res.Misses != misses || res.OK != requests-misses {
		t.Fatalf("requests %d ok %d misses %d errors %d (%v); want %d requests, %d misses, no errors",
			res.Requests, res.OK, res.Misses, res.Errors, res.ErrorReasons, requests, misses)
	}
	if got := res.Hist.TotalCount(); got != requests {
		t.Errorf("histogram holds %d latencies, want %d", got, requests)
	}
	if res.OpsPerSec <= 0 || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P999 || res.Latency.P999 < res.Latency.P50 {
		t.Errorf("implausible measurements: %.0f ops/s, latency %+v", res.OpsPerSec, res.Latency)
	}
}

func TestRunStandalone(t *testing.T) {
	addr, store := startServer(t)
	base := Config{
		Target:    Target{Kind: Direct, Addr: addr},
		Conns:     4,
		Pipeline:  8,
		Requests:  2000,
		ValueSize: 32,
		Keys:      500,
		Timeout:   20 * time.Second,
	}

	// Nothing was written yet: every get is an expected miss.
	cfg := base
	cfg.Workload = Workload{Op: OpGet}
	checkCounts(t, mustRun(t, cfg), 2000, 2000)

	cfg = base
	cfg.Workload = Workload{Op: OpPut}
	cfg.Preload = true
	res := mustRun(t, cfg)
	checkCounts(t, res, 2000, 0)
	if res.Preload == nil || res.Preload.Keys != 500 {
		t.Errorf("preload = %+v", res.Preload)
	}
	if n := store.Table.Size(); n != 500 {
		t.Errorf("table holds %d keys after the preload, want 500", n)
	}
	ops, _, _ := store.Stats.Snapshot()
	if ops != 2000+2000+500 {
		t.Errorf("server counted %d operations, want %d", ops, 2000+2000+500)
	}

	cfg = base
	cfg.Workload = Workload{Op: OpGet}
	cfg.Preload = true
	cfg.Dist = Zipf
	checkCounts(t, mustRun(t, cfg), 2000, 0)

	cfg = base
	cfg.Workload = Workload{Mix: true, ReadFraction: 0.9}
	cfg.Preload = true
	checkCounts(t, mustRun(t, cfg), 2000, 0)

	// A del of a key already deleted is a miss, not an error.
	cfg = base
	cfg.Workload = Workload{Op: OpDel}
	cfg.Preload = true
	res = mustRun(t, cfg)
	checkCounts(t, res, 2000, res.Misses)
	if res.OK == 0 || res.OK > 500 || res.Misses == 0 {
		t.Errorf("del: %d ok, %d misses", res.OK, res.Misses)
	}

	// A missing key after a preload is an error.
	store.Table.Del(string(appendKey(nil, 0)))
	cfg = base
	cfg.Workload = Workload{Op: OpGet}
	cfg.Keys = 1
	cfg.Preload = false
	res = mustRun(t, cfg)
	if res.Misses != 2000 {
		t.Errorf("get of a deleted key without preload: %d misses, want 2000", res.Misses)
	}

	// Without a preload of its own, a run whose key space an earlier run
	// filled (Filled) counts a miss as an error too.
	cfg.Filled = true
	res = mustRun(t, cfg)
	if res.Misses != 0 || res.Errors != 2000 {
		t.Errorf("get of a deleted key in a filled key space: %d misses, %d errors; want 0 and 2000", res.Misses, res.Errors)
	}
}

// TestRunServerCPU measures the CPU time of this process, which runs the
// server, and refuses a process that does not exist.
func TestRunServerCPU(t *testing.T) {
	addr, _ := startServer(t)
	cfg := Config{Target: Target{Kind: Direct, Addr: addr, PIDs: []int{os.Getpid()}}, Conns: 4, Pipeline: 8,
		Requests: 20000, Workload: Workload{Op: OpPut}, Progress: io.Discard}
	res := mustRun(t, cfg)
	c := res.ServerCPU
	if c == nil || len(c.Processes) != 1 || c.Processes[0].PID != os.Getpid() {
		t.Fatalf("server CPU %+v", c)
	}
	// Server and load generator share the process: the time counts both,
	// so it is at least the server's share, and far below a second.
	if c.Seconds <= 0 || c.Seconds > 20 || c.PerRequestUs != c.Seconds*1e6/20000 {
		t.Errorf("%v s of CPU, %v µs per request, over 20000 requests", c.Seconds, c.PerRequestUs)
	}

	cfg.Target.PIDs = []int{1 << 30}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), strconv.Itoa(1<<30)) {
		t.Errorf("Run with a missing process: %v", err)
	}
	cfg.Target.PIDs = []int{0}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted process ID 0")
	}
}

func TestRunDuration(t *testing.T) {
	addr, _ := startServer(t)
	start := time.Now()
	res := mustRun(t, Config{
		Target:   Target{Kind: Direct, Addr: addr},
		Conns:    2,
		Pipeline: 4,
		Duration: 300 * time.Millisecond,
		Workload: Workload{Op: OpPut},
		Progress: io.Discard,
	})
	if el := time.Since(start); el < 300*time.Millisecond || el > 10*time.Second {
		t.Errorf("a 300ms run took %s", el)
	}
	if res.Errors != 0 || res.Requests == 0 || res.Requests%4 != 0 {
		t.Errorf("%d requests, %d errors", res.Requests, res.Errors)
	}
}

func TestRunInterrupted(t *testing.T) {
	addr, _ := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, Config{
		Target:   Target{Kind: Direct, Addr: addr},
		Conns:    2,
		Duration: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Errors != 0 {
		t.Errorf("interrupted %v, %d errors", res.Interrupted, res.Errors)
	}
}

func TestRunCannotConnect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = Run(context.Background(), Config{Target: Target{Kind: Direct, Addr: addr}, Conns: 1})
	if err == nil || !strings.Contains(err.Error(), "cannot connect to chaintable server at "+addr) {
		t.Errorf("error %v, want one naming %s", err, addr)
	}
}

// A server that stops answering costs its unanswered requests as errors,
// counted, and the run still ends.
func TestRunBrokenServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// Answer nothing; close after reading the first batch.
			go func() {
				c.Read(make([]byte, 1024))
				c.Close()
			}()
		}
	}()
	res := mustRun(t, Config{
		Target:   Target{Kind: Direct, Addr: l.Addr().String()},
		Conns:    3,
		Pipeline: 5,
		Requests: 100,
		Timeout:  5 * time.Second,
	})
	if res.Errors != 15 || res.Requests != 15 || res.OK != 0 {
		t.Errorf("%d requests %d errors (%v), want 15 errors", res.Requests, res.Errors, res.ErrorReasons)
	}
	if n := res.ErrorReasons["connection closed by "+l.Addr().String()]; n != 15 {
		t.Errorf("reasons %v", res.ErrorReasons)
	}
}

// redisServer starts a real redis-server on a free loopback port, with
// more arguments if given, and returns its address.
func redisServer(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is not installed: run scripts/install-deps.sh (or apt-get install -y redis-server)")
	}
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := exec.Command(bin, append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--daemonize", "no",
			"--dir", dir, "--logfile", filepath.Join(dir, fmt.Sprintf("redis-%d.log", port)),
		}, args...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		})
		if redisReady(addr, exited) {
			return addr
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("redis-%d.log", port)))
			t.Fatalf("redis-server did not start on %s:\n%s", addr, log)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// redisReady waits until the Redis at addr answers PING.
func redisReady(addr string, exited <-chan struct{}) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if out, err := redisDo(addr, "PING"); err == nil && out == "+PONG" {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// redisDo sends one command and returns the first line of the reply.
func redisDo(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var cmd [][]byte
	for _, a := range args {
		cmd = append(cmd, []byte(a))
	}
	if _, err := c.Write(AppendRESPCommand(nil, cmd...)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

func TestRunRedis(t *testing.T) {
	addr := redisServer(t)
	base := Config{
		Target:    Target{Kind: Redis, Addr: addr},
		Conns:     4,
		Pipeline:  8,
		Requests:  2000,
		ValueSize: 32,
		Keys:      500,
		Timeout:   20 * time.Second,
	}
	cfg := base
	cfg.Workload = Workload{Op: OpGet}
	checkCounts(t, mustRun(t, cfg), 2000, 2000)

	for _, w := range []Workload{{Op: OpPut}, {Op: OpGet}, {Mix: true, ReadFraction: 0.5}} {
		cfg := base
		cfg.Workload = w
		cfg.Preload = true
		checkCounts(t, mustRun(t, cfg), 2000, 0)
	}
	if n, err := redisDo(addr, "DBSIZE"); err != nil || n != ":500" {
		t.Errorf("DBSIZE = %q, %v; want :500", n, err)
	}
	cfg = base
	cfg.Workload = Workload{Op: OpDel}
	cfg.Preload = true
	res := mustRun(t, cfg)
	checkCounts(t, res, 2000, res.Misses)
	if res.OK == 0 || res.OK > 500 {
		t.Errorf("del: %d ok", res.OK)
	}
}

func TestRunRedisWait(t *testing.T) {
	primary := redisServer(t, "--repl-diskless-sync-delay", "0")
	host, port, _ := net.SplitHostPort(primary)
	replica := redisServer(t, "--replicaof", host, port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s, _ := redisInfo(replica); strings.Contains(s, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica did not connect to its primary within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cfg := Config{
		Target:    Target{Kind: Redis, Addr: primary, RedisWait: 1},
		Conns:     2,
		Pipeline:  4,
		Requests:  400,
		ValueSize: 8,
		Keys:      100,
		Workload:  Workload{Mix: true, ReadFraction: 0.5},
		Preload:   true,
		Timeout:   20 * time.Second,
	}
	checkCounts(t, mustRun(t, cfg), 400, 0)

	// Two replicas are never there: every write fails, and says why.
	cfg.Target.RedisWait = 2
	cfg.Workload = Workload{Op: OpPut}
	cfg.Timeout = time.Second
	res := mustRun(t, cfg)
	if res.Errors == 0 || res.OK != 0 {
		t.Errorf("WAIT 2 with one replica: %d ok, %d errors (%v)", res.OK, res.Errors, res.ErrorReasons)
	}
}

// redisInfo returns the whole INFO replication reply.
func redisInfo(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(AppendRESPCommand(nil, []byte("INFO"), []byte("replication"))); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	for {
		b, _ := r.Peek(r.Buffered())
		rep, n, err := ParseRESP(b)
		if err != nil {
			return "", err
		}
		if n > 0 {
			return string(rep.Str), nil
		}
		if _, err := r.Peek(len(b) + 1); err != nil {
			return "", err
		}
	}
}

// A chain target sends writes to the head and reads to the tail, or to
// every member in turn, as ZooKeeper lists them. The two members here are
// standalone stores, so where each request went shows in their counts.
func TestRunChain(t *testing.T) {
	zk := zktest.Start(t)
	headAddr, head := startServer(t)
	tailAddr, tail := startServer(t)
	for _, addr := range []string{headAddr, tailAddr} {
		zc, err := zkwatch.Dial(zk.Addr(), zkwatch.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(zc.Close)
		if _, err := zc.Register(addr); err != nil {
			t.Fatal(err)
		}
	}
	base := Config{
		Target:   Target{Kind: Chain, Addr: zk.Addr(), ChainMembers: 2},
		Conns:    3,
		Pipeline: 8,
		Requests: 1200,
		Keys:     100,
		Timeout:  20 * time.Second,
	}
	cfg := base
	cfg.Target.ReadTail = true
	cfg.Workload = Workload{Mix: true, ReadFraction: 0.25}
	res := mustRun(t, cfg)
	if res.Head != headAddr || res.Tail != tailAddr {
		t.Errorf("head %s tail %s, want %s %s", res.Head, res.Tail, headAddr, tailAddr)
	}
	// The tail never saw a put: every get missed.
	checkCounts(t, res, 1200, res.Misses)
	headOps, _, _ := head.Stats.Snapshot()
	tailOps, _, _ := tail.Stats.Snapshot()
	if headOps+tailOps != 1200 || tailOps != res.Misses || tail.Table.Size() != 0 || head.Table.Size() == 0 {
		t.Errorf("head ran %d ops, tail %d, misses %d, tail size %d", headOps, tailOps, res.Misses, tail.Table.Size())
	}
	if tailOps < 200 || tailOps > 400 {
		t.Errorf("%d gets of 1200 requests at 25%% reads", tailOps)
	}

	// Spread: connections 0 and 2 read at the head, 1 at the tail.
	cfg.Target.ReadTail = false
	res = mustRun(t, cfg)
	if !slices.Equal(res.Readers, []string{headAddr, tailAddr}) {
		t.Errorf("reads went to %v, want the head and the tail", res.Readers)
	}
	headOps2, _, _ := head.Stats.Snapshot()
	tailOps2, _, _ := tail.Stats.Snapshot()
	if gets := tailOps2 - tailOps; gets < 30 || gets > 200 {
		t.Errorf("%d of about 300 gets reached the tail, which serves one connection of three", gets)
	}
	if headOps2-headOps+tailOps2-tailOps != 1200 {
		t.Errorf("head ran %d ops, tail %d, want 1200 in all", headOps2-headOps, tailOps2-tailOps)
	}

	// Waiting for more members than there are fails, and says so.
	cfg.Target.ChainMembers = 3
	cfg.Timeout = time.Second
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "has 2 members") {
		t.Errorf("error %v, want one about the chain's 2 members", err)
	}
}
