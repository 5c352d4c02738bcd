package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/durable"
	"github.com/chaintable/chaintable/internal/cluster"
)

// restartVs names another table_server to restart in turns with the one
// under test, on the same data dir: the figures before and after a change.
var restartVs = flag.String("restart-vs", "", "BenchmarkRestart: also restart `table_server` binary, in turns, and report its times")

// restartKeys is how many keys BenchmarkRestart's node holds: by default
// fewer than a snapshot interval, so that they are all in its log.
var restartKeys = flag.Int("restart-keys", 1_000_000, "BenchmarkRestart: the `keys` written before the restarts")

// The node of BenchmarkRestart: keys of 16 bytes with 100-byte values, as
// snap's benchmarks load, in a table of 1024 lists.
const (
	restartValue = 100
	restartLists = 1024
)

func restartKey(i int) string { return fmt.Sprintf("k%015d", i) }

func restartValueOf(i int) []byte {
	v := bytes.Repeat([]byte{'v'}, restartValue)
	copy(v, strconv.Itoa(i))
	return v
}

// BenchmarkRestart measures issue 12's restart target: a chain of one
// node with --data-dir and the default --fsync and snapshot interval,
// -restart-keys keys written through it, SIGKILLed, its ZooKeeper session
// left to expire, and started again with its data dir: each iteration is
// the time from the start of the process to its first answer to a get
// (of the last key written, with its value). Run it with -benchtime Nx
// (scripts/bench.sh restart); with -args -restart-vs OTHER, each iteration
// also restarts OTHER on the same dir, the two in turns. With -args
// -restart-keys N of a snapshot interval or more, the node is killed once
// it has saved its snapshot: the restart loads it and replays the rest.
func BenchmarkRestart(b *testing.B) {
	c := cluster.Start(b, cluster.Options{Nodes: 1, DataDirs: true, Lists: restartLists, Quiet: true})
	n := c.WaitTailServes(30 * time.Second)
	start := time.Now()
	putAll(b, n.Addr, *restartKeys)
	b.Logf("%d keys written through the node in %v", *restartKeys, time.Since(start).Round(time.Millisecond))
	if *restartKeys >= durable.DefaultSnapshotEvery {
		waitSnapshot(b, filepath.Join(n.DataDir, "log"))
	}
	n.Kill()
	c.WaitGone(n, 30*time.Second)

	bins := []string{cluster.Binary(b)}
	if *restartVs != "" {
		bins = append(bins, *restartVs)
	}
	times := make([][]time.Duration, len(bins))
	for b.Loop() {
		for i, bin := range bins {
			times[i] = append(times[i], restartOnce(b, c, n, bin).Round(time.Millisecond))
		}
	}
	for i, ts := range times {
		b.Logf("%s: serving %v after its start", bins[i], ts) // in the order run
		ts = slices.Clone(ts)
		slices.Sort(ts)
		unit := "s-to-serve"
		if i > 0 {
			unit = "vs-s-to-serve"
		}
		b.ReportMetric(ts[len(ts)/2].Seconds(), "median-"+unit)
		b.ReportMetric(ts[len(ts)-1].Seconds(), "max-"+unit)
	}
	b.ReportMetric(0, "ns/op") // an iteration is mostly waiting for ZooKeeper
}

// restartOnce starts bin as node n on its port and data dir, returns how
// long it took to answer a get of the last key, and SIGKILLs it, waiting
// until ZooKeeper has dropped its session.
func restartOnce(b *testing.B, c *cluster.Cluster, n *cluster.Node, bin string) time.Duration {
	_, port, _ := net.SplitHostPort(n.Addr)
	cmd := exec.Command(bin, c.ZKAddr(), port, strconv.Itoa(restartLists), "--advertise", "127.0.0.1", "--bind", "127.0.0.1",
		"--session-timeout", c.SessionTimeout().String(), "--data-dir", n.DataDir)
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		c.WaitGone(n, 30*time.Second)
	}()
	last := *restartKeys - 1
	get, err := codec.AppendMessage(nil, codec.GetRequest(restartKey(last)))
	if err != nil {
		b.Fatal(err)
	}
	for deadline := start.Add(60 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%s: no answer to a get 60 s after its start", bin)
		}
		nc, err := net.DialTimeout("tcp", n.Addr, time.Second)
		if err != nil {
			continue
		}
		nc.SetDeadline(time.Now().Add(time.Second))
		var m codec.MessageT
		if _, err = nc.Write(get); err == nil {
			err = codec.ReadMessage(bufio.NewReader(nc), codec.DefaultMaxFrame, &m)
		}
		nc.Close()
		if err != nil || m.Opcode != codec.OpGet+1 {
			continue // not serving yet: closed, or a status reply
		}
		took := time.Since(start)
		if want := restartValueOf(last); !bytes.Equal(m.Value, want) {
			b.Fatalf("%s after its restart: get %s = %v, want %q", bin, restartKey(last), &m, want)
		}
		return took
	}
}

// waitSnapshot waits until dir holds a snapshot, the one the node takes
// after its first DefaultSnapshotEvery writes.
func waitSnapshot(b *testing.B, dir string) {
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if snaps, _ := filepath.Glob(filepath.Join(dir, "*.snap")); len(snaps) > 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("no snapshot in %s 60 s after the writes", dir)
		}
	}
}

// putAll puts keys keys at addr, pipelined on a few connections, and
// fails unless each is acknowledged.
func putAll(b *testing.B, addr string, keys int) {
	const conns, window = 8, 512
	errs := make(chan error, conns)
	for w := range conns {
		go func() {
			errs <- func() error {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer nc.Close()
				r := bufio.NewReader(nc)
				var batch []byte
				for lo := w * window; lo < keys; lo += conns * window {
					hi := min(lo+window, keys)
					batch = batch[:0]
					for i := lo; i < hi; i++ {
						if batch, err = codec.AppendMessage(batch, codec.PutRequest(restartKey(i), restartValueOf(i))); err != nil {
							return err
						}
					}
					nc.SetDeadline(time.Now().Add(30 * time.Second))
					if _, err := nc.Write(batch); err != nil {
						return err
					}
					for i := lo; i < hi; i++ {
						var m codec.MessageT
						if err := codec.ReadMessage(r, codec.DefaultMaxFrame, &m); err != nil {
							return fmt.Errorf("put %d: %w", i, err)
						}
						if m.Opcode != codec.OpPut+1 {
							return fmt.Errorf("put %d: %v", i, &m)
						}
					}
				}
				return nil
			}()
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}
