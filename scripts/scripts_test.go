// Package scripts_test runs the shell scripts next to it as a user would,
// against real ZooKeeper and server processes, and checks that they leave
// nothing behind.
package scripts_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// group returns the PIDs of the live processes in process group pgid.
func group(pgid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 2 && fields[0] != "Z" && fields[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// describe returns the command lines of pids, for a failure message.
func describe(pids []int) string {
	var b strings.Builder
	for _, pid := range pids {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		b.WriteString("\n  " + strconv.Itoa(pid) + ": " + strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return b.String()
}

// waitGroupGone waits until no process of group pgid is left.
func waitGroupGone(t *testing.T, pgid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := group(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			what := describe(left)
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("%d processes left %s after the script ended (killed now):%s", len(left), within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// output collects a process's output and tells when it holds a text.
type output struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func newOutput() *output { return &output{wake: make(chan struct{}, 1)} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// waitFor waits until the output holds text, or the process exits.
func (o *output) waitFor(t *testing.T, text string, exited <-chan struct{}, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for !strings.Contains(o.String(), text) {
		select {
		case <-o.wake:
		case <-exited:
			if !strings.Contains(o.String(), text) {
				t.Fatalf("script exited before %q; its output:\n%s", text, o)
			}
		case <-deadline:
			t.Fatalf("no %q after %s; output:\n%s", text, within, o)
		}
	}
}

// script starts scripts/NAME with args in a process group of its own, as
// a shell starts a job, with stdin a pipe held open until the test ends.
func script(t *testing.T, env []string, name string, args ...string) (*exec.Cmd, *output, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("./"+name, args...)
	cmd.Env = append(os.Environ(), env...)
	out := newOutput()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// Whatever the test did, nothing of the script's is left.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return cmd, out, exited
}

// Ctrl-C at any step of scripts/run.sh's start stops everything it
// started: the terminal sends SIGINT to the whole job.
func TestRunInterruptedAtEveryStep(t *testing.T) {
	steps := []struct {
		name, after string
		delay       time.Duration
	}{
		{"building", "run: building", 0},
		{"ZooKeeper launched", "zk.sh: starting ZooKeeper on", 0},
		{"ZooKeeper starting", "zk.sh: starting ZooKeeper on", 400 * time.Millisecond},
		{"ZooKeeper serving", "zk.sh: ZooKeeper serving on", 0},
		{"first server", "run: starting server 1/2", 0},
		{"second server", "run: starting server 2/2", 0},
		{"client", "run: chain of 2 servers up", 200 * time.Millisecond},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			env := []string{"SERVERS=2", "TMPDIR=" + t.TempDir(), "RUN_DATA=" + t.TempDir()}
			cmd, out, exited := script(t, env, "run.sh")
			out.waitFor(t, step.after, exited, 3*time.Minute)
			time.Sleep(step.delay)
			if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatalf("run.sh still running 60s after SIGINT; output:\n%s", out)
			}
			waitGroupGone(t, cmd.Process.Pid, 3*time.Second)
			if code := cmd.ProcessState.ExitCode(); code == 0 {
				t.Errorf("run.sh exited 0 after SIGINT")
			}
			t.Logf("output:\n%s", out)
		})
	}
}

// Two zk.sh up at once on one port: one serves, the other says the port
// is taken, whether they share a directory or not, and neither leaves a
// process behind.
func TestZKUpRacingForOnePort(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(map[bool]string{false: "own directories", true: "one directory"}[shared], func(t *testing.T) {
			port := strconv.Itoa(freePort(t))
			dirs := []string{filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")}
			if shared {
				dirs[1] = dirs[0]
			}
			type run struct {
				cmd    *exec.Cmd
				out    *output
				exited <-chan struct{}
			}
			var runs []run
			for _, dir := range dirs {
				cmd, out, exited := script(t, nil, "zk.sh", "up", "--port", port, "--dir", dir)
				runs = append(runs, run{cmd, out, exited})
			}
			var won []int
			for i, r := range runs {
				select {
				case <-r.exited:
				case <-time.After(90 * time.Second):
					t.Fatalf("zk.sh up %d still running after 90s; output:\n%s", i, r.out)
				}
				if r.cmd.ProcessState.ExitCode() == 0 {
					won = append(won, i)
				}
				t.Logf("zk.sh up --dir %s: exit %d\n%s", dirs[i], r.cmd.ProcessState.ExitCode(), r.out)
			}
			if len(won) != 1 {
				t.Fatalf("%d of 2 zk.sh up on port %s succeeded, want 1", len(won), port)
			}
			lost := runs[1-won[0]]
			if msg := lost.out.String(); !strings.Contains(msg, "taken by another process") &&
				!strings.Contains(msg, "already listens") && !strings.Contains(msg, "another zk.sh up") &&
				!strings.Contains(msg, "already running") {
				t.Errorf("the loser says %q, not that the port is taken", msg)
			}
			// The loser left nothing; the winner's server is the one
			// answering, and down stops it.
			waitGroupGone(t, lost.cmd.Process.Pid, 3*time.Second)
			status, err := exec.Command("./zk.sh", "status", "--port", port, "--dir", dirs[won[0]]).CombinedOutput()
			if err != nil || !strings.Contains(string(status), "mode: standalone") {
				t.Errorf("status of the winner: %v\n%s", err, status)
			}
			down, err := exec.Command("./zk.sh", "down", "--port", port, "--dir", dirs[won[0]]).CombinedOutput()
			if err != nil {
				t.Errorf("down: %v\n%s", err, down)
			}
			waitGroupGone(t, runs[won[0]].cmd.Process.Pid, 3*time.Second)
		})
	}
}

// scripts/run.sh keeps the chain's data in RUN_DATA: a write made in one
// run is served by the next, --fresh starts empty, and a second run on
// a data dir in use is refused. Each run's client reads its commands
// from stdin and the run stops everything when the client exits.
func TestRunKeepsData(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	env := []string{"SERVERS=2", "TMPDIR=" + t.TempDir(), "RUN_DATA=" + data}
	run := func(stdin string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("./run.sh", args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin = strings.NewReader(stdin)
		out := newOutput()
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Minute):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			t.Fatalf("run.sh %v still running after 3 minutes; output:\n%s", args, out)
		}
		waitGroupGone(t, cmd.Process.Pid, 3*time.Second)
		return out.String(), cmd.ProcessState.ExitCode()
	}
	for _, step := range []struct {
		name, stdin string
		args        []string
		want        []string
	}{
		{"first run", "put color blue\nquit\n", nil, []string{"keeping the chain's data in " + data}},
		{"second run", "get color\nquit\n", nil, []string{"the data of an earlier run is in " + data, "\nblue\n"}},
		{"fresh run", "size\nquit\n", []string{"--fresh"}, []string{"starting fresh", "Table size: 0"}},
	} {
		out, code := run(step.stdin, step.args...)
		if code != 0 {
			t.Fatalf("%s: exit %d; output:\n%s", step.name, code, out)
		}
		for _, w := range step.want {
			if !strings.Contains(out, w) {
				t.Fatalf("%s: no %q in the output:\n%s", step.name, w, out)
			}
		}
	}

	// While one run holds the data dir, another is refused at once.
	lock := exec.Command("flock", filepath.Join(data, "run.lock"), "sleep", "30")
	if err := lock.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { lock.Process.Kill(); lock.Wait() }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// flock -n fails while the holder has it.
		if exec.Command("flock", "-n", filepath.Join(data, "run.lock"), "true").Run() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flock never took the lock")
		}
	}
	out, code := run("quit\n")
	if code != 1 || !strings.Contains(out, "another run uses "+data) {
		t.Fatalf("a second run on a data dir in use: exit %d, output:\n%s", code, out)
	}
}
