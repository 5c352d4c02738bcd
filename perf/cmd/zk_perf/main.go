// Command zk_perf measures how many writes a ZooKeeper server takes: C
// sessions, each with one setData in flight on a znode of its own, for a
// bounded time. It is the ZooKeeper row of make bench's durable
// comparison (scripts/bench.sh durable), where the server fsyncs its
// transaction log before it answers (forceSync=yes, ZooKeeper's default).
//
//	zk_perf [flags] <zk_ip>:<zk_port>
//
// It creates ROOT and one child per session, writes for -T, deletes what it
// created, and prints one line: writes, seconds, writes/s, mean latency.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type options struct {
	addr     string
	conns    int
	duration time.Duration
	size     int
	root     string
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("zk_perf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: zk_perf [flags] <zk_ip>:<zk_port>")
		fs.PrintDefaults()
	}
	fs.IntVar(&o.conns, "c", 16, "sessions (connections), each with one write in flight")
	fs.DurationVar(&o.duration, "T", 5*time.Second, "how long to write")
	fs.IntVar(&o.size, "d", 100, "bytes of data per write")
	fs.StringVar(&o.root, "root", "/zk_perf", "the znode under which each session writes a child of its own; must not exist")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return o, errors.New("want one ZooKeeper address")
	}
	o.addr = fs.Arg(0)
	if o.conns < 1 || o.duration <= 0 || o.size < 0 || o.size > 1<<20 || !strings.HasPrefix(o.root, "/") || o.root == "/" {
		return o, fmt.Errorf("-c must be positive, -T positive, -d from 0 to 1 MiB and -root a path below /")
	}
	return o, nil
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// connect opens a session and waits until it is established.
func connect(addr string) (*zk.Conn, error) {
	conn, events, err := zk.Connect(strings.Split(addr, ","), 10*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		return nil, fmt.Errorf("ZooKeeper at %s: %w", addr, err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				return conn, nil
			}
		case <-timeout:
			conn.Close()
			return nil, fmt.Errorf("ZooKeeper at %s: no session after 10s", addr)
		}
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "zk_perf:", err)
		return 2
	}
	res, err := measure(o)
	if err != nil {
		fmt.Fprintln(stderr, "zk_perf:", err)
		return 1
	}
	fmt.Fprintf(stdout, "zookeeper setData, %d connections, %d-byte data: %d writes in %.2fs = %.0f writes/s, mean latency %.0f µs\n",
		o.conns, o.size, res.writes, res.elapsed.Seconds(), float64(res.writes)/res.elapsed.Seconds(),
		float64(res.latency.Microseconds())/float64(max(res.writes, 1)))
	return 0
}

type result struct {
	writes  int64
	elapsed time.Duration
	latency time.Duration // summed over the writes
}

// measure runs the load of o and removes the znodes it made.
func measure(o options) (result, error) {
	admin, err := connect(o.addr)
	if err != nil {
		return result{}, err
	}
	defer admin.Close()
	acl := zk.WorldACL(zk.PermAll)
	if _, err := admin.Create(o.root, nil, 0, acl); err != nil {
		return result{}, fmt.Errorf("creating %s: %w", o.root, err)
	}
	paths := make([]string, o.conns)
	defer func() {
		for _, p := range paths {
			if p != "" {
				admin.Delete(p, -1) // best effort, as the root's
			}
		}
		admin.Delete(o.root, -1)
	}()
	conns := make([]*zk.Conn, o.conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		p := fmt.Sprintf("%s/n%d", o.root, i)
		if _, err := admin.Create(p, nil, 0, acl); err != nil {
			return result{}, fmt.Errorf("creating %s: %w", p, err)
		}
		paths[i] = p
		if conns[i], err = connect(o.addr); err != nil {
			return result{}, err
		}
	}
	data := make([]byte, o.size)
	var writes, nanos atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(o.duration)
	for i, c := range conns {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				t := time.Now()
				if _, err := c.Set(paths[i], data, -1); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("setData %s: %w", paths[i], err) })
					return
				}
				nanos.Add(int64(time.Since(t)))
				writes.Add(1)
			}
		})
	}
	wg.Wait()
	res := result{writes: writes.Load(), elapsed: time.Since(start), latency: time.Duration(nanos.Load())}
	return res, firstErr
}
