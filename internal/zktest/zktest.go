// Package zktest runs real Apache ZooKeeper servers for tests: a standalone
// server with Start, or a quorum with StartEnsemble. Each server is a child
// java process on a free loopback port with its own configuration and data
// directory under the test's temporary directory; it is killed by PID when the
// test ends.
//
// The servers use a short tick (TickTime), so sessions of a second or two are
// allowed and expire quickly, which keeps fault tests fast.
//
// ZooKeeper comes from Debian's zookeeper package (jars in /usr/share/java)
// and a java runtime; scripts/install-deps.sh installs both. When they are
// missing the test fails, it is not skipped.
package zktest

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/internal/netfault"
)

// Timing of the servers started here: ZooKeeper's tick, its basic time
// unit, and the bounds within which it grants the session timeout a client
// asks for. ZooKeeper expires a session between its timeout and one tick
// later.
const (
	TickTime          = 200 * time.Millisecond
	MinSessionTimeout = 500 * time.Millisecond
	MaxSessionTimeout = 30 * time.Second
)

// jarDir holds ZooKeeper's jar and the logging jars it is run with.
const jarDir = "/usr/share/java"

// startTimeout bounds how long a server may take to start serving. A JVM on
// a busy two-core machine running tests with -race can take several seconds.
const startTimeout = 45 * time.Second

// Server is one ZooKeeper server process, standalone or in an ensemble.
type Server struct {
	tb   testing.TB
	id   int // myid in an ensemble, 0 when standalone
	port int
	// syncLimit is how many ticks a follower may go without hearing from
	// its leader; 0 means 5.
	syncLimit int
	dir       string // holds zoo.cfg, log4j.properties, data/ and the logs

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been reaped
}

// Start starts a standalone ZooKeeper server and waits until it serves
// clients. The server is killed when the test and its subtests end.
func Start(tb testing.TB) *Server {
	tb.Helper()
	requireInstalled(tb)
	s := newServer(tb, 0, freePorts(tb, 1)[0])
	s.writeConfig(nil)
	tb.Cleanup(s.cleanup)
	s.start()
	s.waitServing(startTimeout)
	return s
}

// Ensemble is a ZooKeeper quorum whose members run on this machine.
type Ensemble struct {
	// Members are the servers, in the order of their myid (1, 2, …).
	Members []*Server

	links map[[2]int]*netfault.Proxy // see EnsembleOptions.Links
}

// EnsembleOptions configure StartEnsembleWith. The zero value is
// StartEnsemble's.
type EnsembleOptions struct {
	// SyncLimit is how many ticks a follower keeps serving, on its own,
	// after it last heard from the leader; zero means 5.
	SyncLimit int
	// Links routes each member's quorum connections to every other member
	// through a proxy of their own, so that Link can cut a follower off
	// from its leader while both keep their clients.
	Links bool
}

// StartEnsemble starts an ensemble of n servers and waits until every
// member serves clients, that is until a leader has been elected and all
// have joined it. The servers are killed when the test ends.
func StartEnsemble(tb testing.TB, n int) *Ensemble {
	tb.Helper()
	return StartEnsembleWith(tb, n, EnsembleOptions{})
}

// StartEnsembleWith is StartEnsemble with options.
func StartEnsembleWith(tb testing.TB, n int, opts EnsembleOptions) *Ensemble {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("zktest: StartEnsemble needs at least one member, got %d", n)
	}
	requireInstalled(tb)
	// Each member needs a client port, a quorum port and an election port.
	ports := freePorts(tb, 3*n)
	e := &Ensemble{links: make(map[[2]int]*netfault.Proxy)}
	for i := range n {
		var peers []string
		for j := range n {
			quorum := fmt.Sprintf("127.0.0.1:%d", ports[3*j+1])
			if opts.Links && i != j {
				// Member i reaches member j's quorum port, and so j as
				// its leader, through a proxy of its own.
				p := netfault.NewProxy(tb, "127.0.0.1:0", quorum)
				e.links[[2]int{i, j}] = p
				quorum = p.Addr()
			}
			peers = append(peers, fmt.Sprintf("server.%d=%s:%d", j+1, quorum, ports[3*j+2]))
		}
		s := newServer(tb, i+1, ports[3*i])
		s.syncLimit = cmp.Or(opts.SyncLimit, 5)
		s.writeConfig(peers)
		tb.Cleanup(s.cleanup)
		e.Members = append(e.Members, s)
	}
	for _, s := range e.Members {
		s.start()
	}
	for _, s := range e.Members {
		s.waitServing(startTimeout)
	}
	return e
}

// Addr returns the ensemble's connect string: the members' addresses
// separated by commas, as ZooKeeper clients take them.
func (e *Ensemble) Addr() string {
	addrs := make([]string, len(e.Members))
	for i, s := range e.Members {
		addrs[i] = s.Addr()
	}
	return strings.Join(addrs, ",")
}

// Link returns the proxy through which member from (an index into
// Members) reaches member to as its leader: pausing it cuts a follower off
// from its leader, silently, as a partition would. It is nil unless the
// ensemble was started with Links.
func (e *Ensemble) Link(from, to int) *netfault.Proxy { return e.links[[2]int{from, to}] }

// Leader returns the index in Members of the member that leads now, or -1
// if none says it does.
func (e *Ensemble) Leader() int {
	for i, s := range e.Members {
		if reply, err := s.fourLetter("srvr"); err == nil && strings.Contains(reply, "Mode: leader") {
			return i
		}
	}
	return -1
}

// Addr returns the server's client address, "127.0.0.1:port". It stays the
// same across Stop and Restart.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Stop kills the server process with SIGKILL, as a crash would, and waits
// until it has exited. Its data survives for Restart. Stopping a stopped
// server does nothing. Like Restart, it must be called from the test's
// goroutine, since it fails the test on error.
func (s *Server) Stop() {
	s.tb.Helper()
	if err := s.kill(); err != nil {
		s.tb.Fatalf("zktest: stop %s: %v", s.Addr(), err)
	}
}

// Restart starts a stopped server again on the same port with the same data
// and waits until it serves; a running server is stopped first. An ensemble
// member serves only once it has rejoined a quorum, so restarting one while
// a majority is down waits in vain.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
	s.waitServing(startTimeout)
}

func newServer(tb testing.TB, id, port int) *Server {
	dir := tb.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		tb.Fatalf("zktest: %v", err)
	}
	return &Server{tb: tb, id: id, port: port, dir: dir}
}

// requireInstalled fails the test when ZooKeeper or java is missing.
func requireInstalled(tb testing.TB) {
	tb.Helper()
	var missing []string
	if _, err := exec.LookPath("java"); err != nil {
		missing = append(missing, "java (not in PATH)")
	}
	for _, jar := range classpathJars {
		if _, err := os.Stat(jar); err != nil {
			missing = append(missing, jar)
		}
	}
	if len(missing) > 0 {
		tb.Fatalf("zktest: ZooKeeper cannot run here, missing %s; install it with scripts/install-deps.sh",
			strings.Join(missing, ", "))
	}
}

// classpathJars are ZooKeeper (whose manifest lists its other dependencies)
// and an SLF4J binding to log4j 1.2, so the server logs to zookeeper.log
// instead of discarding everything through SLF4J's no-op fallback.
var classpathJars = []string{
	filepath.Join(jarDir, "zookeeper.jar"),
	filepath.Join(jarDir, "slf4j-log4j12.jar"),
	filepath.Join(jarDir, "log4j-1.2.jar"),
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("zktest: find a free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func (s *Server) writeConfig(peers []string) {
	s.tb.Helper()
	dataDir := filepath.Join(s.dir, "data")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "tickTime=%d\n", TickTime.Milliseconds())
	// Followers get 10 ticks to connect to the leader and 5, unless told
	// otherwise, to stay in sync.
	fmt.Fprintf(&cfg, "initLimit=10\nsyncLimit=%d\n", cmp.Or(s.syncLimit, 5))
	fmt.Fprintf(&cfg, "minSessionTimeout=%d\n", MinSessionTimeout.Milliseconds())
	fmt.Fprintf(&cfg, "maxSessionTimeout=%d\n", MaxSessionTimeout.Milliseconds())
	fmt.Fprintf(&cfg, "dataDir=%s\n", dataDir)
	fmt.Fprintf(&cfg, "clientPort=%d\n", s.port)
	cfg.WriteString("clientPortAddress=127.0.0.1\n")
	// The admin server would take port 8080; tests need none of it.
	cfg.WriteString("admin.enableServer=false\n")
	cfg.WriteString("4lw.commands.whitelist=ruok,srvr,stat,mntr,cons\n")
	// Test data need not survive a machine crash; fsync would only slow.
	cfg.WriteString("forceSync=no\npreAllocSize=1024\n")
	for _, p := range peers {
		cfg.WriteString(p + "\n")
	}
	s.writeFile("zoo.cfg", cfg.String())
	s.writeFile("log4j.properties", fmt.Sprintf(`log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=%s
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%%d{ISO8601} %%-5p [%%t] %%c{1}: %%m%%n
`, filepath.Join(s.dir, "zookeeper.log")))
	if s.id > 0 {
		s.writeFile(filepath.Join("data", "myid"), strconv.Itoa(s.id)+"\n")
	}
}

func (s *Server) writeFile(name, content string) {
	s.tb.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, name), []byte(content), 0o644); err != nil {
		s.tb.Fatalf("zktest: %v", err)
	}
}

// start launches the server process without waiting for it to serve.
func (s *Server) start() {
	s.tb.Helper()
	out, err := os.OpenFile(filepath.Join(s.dir, "zookeeper.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.tb.Fatalf("zktest: %v", err)
	}
	defer out.Close()
	cmd := exec.Command("java",
		// A small serial-GC JVM without the optimising compiler starts in
		// about half a second and leaves the cores to the tests.
		"-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Djava.net.preferIPv4Stack=true",
		"-cp", strings.Join(append([]string{s.dir}, classpathJars...), ":"),
		"org.apache.zookeeper.server.quorum.QuorumPeerMain",
		filepath.Join(s.dir, "zoo.cfg"))
	cmd.Dir = s.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("zktest: start ZooKeeper on %s: %v", s.Addr(), err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
}

// kill kills the process by its PID and waits until it has been reaped.
func (s *Server) kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("pid %d still running 10s after SIGKILL", s.cmd.Process.Pid)
	}
	s.cmd = nil
	return nil
}

func (s *Server) cleanup() {
	if err := s.kill(); err != nil {
		s.tb.Errorf("zktest: stop %s: %v", s.Addr(), err)
	}
	if s.tb.Failed() {
		s.tb.Logf("zktest: last lines of %s's log:\n%s", s.Addr(), s.logTail(40))
	}
}

// waitServing waits until the server answers srvr with its mode, which it
// does only once it serves clients (in an ensemble: once it is in a quorum).
func (s *Server) waitServing(timeout time.Duration) {
	s.tb.Helper()
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for {
		reply, err := s.fourLetter("srvr")
		if err == nil && strings.Contains(reply, "Mode: ") {
			return
		}
		select {
		case <-exited:
			s.tb.Fatalf("zktest: ZooKeeper on %s exited while starting; last lines of its log:\n%s",
				s.Addr(), s.logTail(40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("zktest: ZooKeeper on %s not serving after %s (last answer %q, %v); last lines of its log:\n%s",
				s.Addr(), timeout, reply, err, s.logTail(40))
		}
	}
}

// fourLetter sends one of ZooKeeper's four-letter commands and returns the
// reply.
func (s *Server) fourLetter(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(c)
	return buf.String(), err
}

// logTail returns the last n lines of the server's log and console output.
func (s *Server) logTail(n int) string {
	var b strings.Builder
	for _, name := range []string{"zookeeper.out", "zookeeper.log"} {
		f, err := os.Open(filepath.Join(s.dir, name))
		if err != nil {
			continue
		}
		var lines []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if len(lines) > n {
				lines = lines[1:]
			}
		}
		f.Close()
		if len(lines) > 0 {
			fmt.Fprintf(&b, "--- %s\n%s\n", name, strings.Join(lines, "\n"))
		}
	}
	return b.String()
}
