package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/internal/netfault"
	"github.com/chaintable/chaintable/internal/zktest"
	"github.com/chaintable/chaintable/zkwatch"
)

// DefaultSessionTimeout is the ZooKeeper session timeout of the nodes of a
// Cluster unless Options say otherwise: short, so that a dead or frozen node
// leaves the chain within two seconds.
const DefaultSessionTimeout = 1500 * time.Millisecond

// Timeouts of the harness's own waits.
const (
	// RegisterTimeout bounds how long a node started by Start, Add or
	// Restart may take to appear in the chain.
	RegisterTimeout = 20 * time.Second
	// exitTimeout bounds how long a signalled process may take to exit.
	exitTimeout = 10 * time.Second
	// termTimeout bounds a graceful leave: the server drains for at most
	// 5s, then leaves ZooKeeper and stops its listener.
	termTimeout = 15 * time.Second
	// pollInterval is how often waits look again.
	pollInterval = 10 * time.Millisecond
)

// KeepEnv is the environment variable that, set to 1, keeps the node logs
// of tests that pass too, and names their directory in the test log.
const KeepEnv = "CHAINTABLE_KEEP_LOGS"

// logTailLines is how many lines of each node's log a failed test shows.
const logTailLines = 40

// Options configure a Cluster. The zero value starts three nodes.
type Options struct {
	// Nodes is how many nodes Start starts, one after the other, so that
	// the first is the head and the last the tail. Zero means 3; use
	// Add for more later.
	Nodes int
	// SessionTimeout is each node's --session-timeout; zero means
	// DefaultSessionTimeout.
	SessionTimeout time.Duration
	// Lists is each node's number of lists; zero means 16.
	Lists int
	// Quiet leaves out -v, so node logs hold warnings and errors only.
	Quiet bool
	// NodeProxies puts a Proxy in front of each node's server port, so
	// that Node.Partition can cut the links into a node (from its
	// predecessor and from clients) as a network partition would. The
	// node listens on NodeHost and advertises the proxy, on 127.0.0.1 and
	// the same port, as its address; the proxy's connections come from
	// 127.0.0.1, so that links through it still come from the
	// predecessor's advertised host.
	NodeProxies bool
	// Metrics gives each node a --metrics-addr on a loopback port of its
	// own, kept across restarts (see Node.MetricsAddr).
	Metrics bool
	// Flags are table_server flags for every node Start starts.
	Flags []string
	// DataDirs gives each node a --data-dir of its own, kept across
	// restarts (see Node.DataDir).
	DataDirs bool
	// ZKEnsemble, when above 1, runs a ZooKeeper ensemble of that many
	// members instead of a standalone server. Clients get the members'
	// connect string (ZKAddr); each node gets one of its proxies' (one
	// per member), and goes from member to member by itself.
	ZKEnsemble int
}

// NodeHost is the loopback address nodes listen on when Options.NodeProxies
// is set: distinct from 127.0.0.1, where their proxies listen on the same
// ports.
const NodeHost = "127.0.0.2"

// Cluster is a ZooKeeper server and the table_server processes of one
// chain, all on loopback, that live as long as the test that started them.
// Each node reaches ZooKeeper through proxies of its own, so that a test
// can cut it off (Node.CutZK).
//
// Its methods, and its Nodes', fail the test on error, so they must be
// called from the test's goroutine; View and Nodes may be called from any
// goroutine.
type Cluster struct {
	tb      testing.TB
	opts    Options
	bin     string
	zk      []*zktest.Server // the standalone server, or the ensemble's members
	zkAddr  string           // connect string: every member, comma-separated
	dir     string           // node logs, kept when the test fails
	zc      *zkwatch.Client
	watcher *zkwatch.Watcher

	mu    sync.Mutex
	nodes []*Node
}

// Start builds table_server if this test binary has not yet, starts a
// ZooKeeper server and opts.Nodes nodes, and returns once every node is
// registered in the chain. Everything is stopped when the test ends.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.SessionTimeout == 0 {
		opts.SessionTimeout = DefaultSessionTimeout
	}
	if opts.Lists == 0 {
		opts.Lists = 16
	}
	c := &Cluster{tb: tb, opts: opts, bin: Binary(tb)}
	if opts.ZKEnsemble > 1 {
		e := zktest.StartEnsemble(tb, opts.ZKEnsemble)
		c.zk, c.zkAddr = e.Members, e.Addr()
	} else {
		s := zktest.Start(tb)
		c.zk, c.zkAddr = []*zktest.Server{s}, s.Addr()
	}

	dir, err := os.MkdirTemp("", "chaintable-"+sanitize(tb.Name())+"-")
	if err != nil {
		tb.Fatalf("cluster: %v", err)
	}
	c.dir = dir
	// Cleanups run last in first out: the directory outlives the nodes,
	// whose cleanup reads their logs, and ZooKeeper outlives everything.
	tb.Cleanup(func() {
		if tb.Failed() || os.Getenv(KeepEnv) == "1" {
			tb.Logf("cluster: node logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})

	if c.zc, c.watcher, err = watch(c.zkAddr); err != nil {
		tb.Fatalf("cluster: watch the chain: %v", err)
	}
	tb.Cleanup(c.zc.Close)
	tb.Cleanup(c.watcher.Close)
	tb.Cleanup(c.cleanup)

	for range opts.Nodes {
		c.Add(opts.Flags...)
	}
	return c
}

// ZKAddr returns ZooKeeper's connect string, for clients: the server's
// address, or the ensemble members' separated by commas.
func (c *Cluster) ZKAddr() string { return c.zkAddr }

// ZK returns the ZooKeeper server of a standalone cluster, to stop or
// restart it. For an ensemble it fails the test: use ZKServers.
func (c *Cluster) ZK() *zktest.Server {
	c.tb.Helper()
	if len(c.zk) != 1 {
		c.tb.Fatalf("cluster: ZK on an ensemble of %d; use ZKServers", len(c.zk))
	}
	return c.zk[0]
}

// ZKServers returns the ZooKeeper servers: the standalone server, or the
// ensemble's members in the order of their ids.
func (c *Cluster) ZKServers() []*zktest.Server { return append([]*zktest.Server(nil), c.zk...) }

// Dir returns a directory for the test's artefacts (node logs,
// visualizations): removed when the test passes, unless KeepEnv says
// otherwise, and kept, and named in the test log, when it fails.
func (c *Cluster) Dir() string { return c.dir }

// SessionTimeout returns the nodes' ZooKeeper session timeout.
func (c *Cluster) SessionTimeout() time.Duration { return c.opts.SessionTimeout }

// Nodes returns every node started so far, running or not, in the order
// they were added.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// View returns the chain as the cluster's own ZooKeeper watch last saw it.
func (c *Cluster) View() zkwatch.View { return c.watcher.View() }

// Add starts a new node on a free port, with table_server flags of its
// own if any, and waits until it is registered; it joins the chain as its
// tail.
func (c *Cluster) Add(flags ...string) *Node {
	c.tb.Helper()
	c.mu.Lock()
	n := &Node{c: c, ID: len(c.nodes), flags: flags}
	if c.opts.Metrics {
		n.MetricsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(c.tb)))
	}
	n.logPath = filepath.Join(c.dir, fmt.Sprintf("node%d.log", n.ID))
	if c.opts.DataDirs {
		n.DataDir = filepath.Join(c.dir, fmt.Sprintf("node%d.data", n.ID))
	}
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	// One proxy per ZooKeeper server, so that the node's own client goes
	// from member to member as it would without them.
	for _, s := range c.zk {
		n.zkProxies = append(n.zkProxies, netfault.NewProxy(c.tb, "127.0.0.1:0", s.Addr()))
	}
	// A port found free may be taken before the server binds it: try
	// another one then.
	var err error
	for range 3 {
		if err = n.listen(); err != nil {
			continue
		}
		if err = n.start(); err == nil {
			return n
		}
		if n.srvProxy != nil {
			n.srvProxy.Close()
			n.srvProxy = nil
		}
	}
	c.tb.Fatalf("cluster: %v", err)
	return nil
}

// listen picks the node's port and, with Options.NodeProxies, starts the
// proxy in front of it.
func (n *Node) listen() error {
	if !n.c.opts.NodeProxies {
		n.port = freePort(n.c.tb)
		n.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port))
		return nil
	}
	port := freePort(n.c.tb)
	l, err := net.Listen("tcp", net.JoinHostPort(NodeHost, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("%s: port %d on %s: %w", n, port, NodeHost, err)
	}
	l.Close()
	p, err := netfault.Listen(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), net.JoinHostPort(NodeHost, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("%s: proxy on port %d: %w", n, port, err)
	}
	n.c.tb.Cleanup(p.Close)
	n.srvProxy, n.port, n.Addr = p, port, p.Addr()
	return nil
}

// WaitView waits until pred holds for the chain's view and returns that
// view. It fails the test after timeout.
func (c *Cluster) WaitView(pred func(zkwatch.View) bool, timeout time.Duration) zkwatch.View {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := c.View()
		if pred(v) {
			return v
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("cluster: the chain did not reach the expected view within %v; it is %s", timeout, c.describe(v))
		}
		time.Sleep(pollInterval)
	}
}

// WaitGone waits until no member of the chain has n's address.
func (c *Cluster) WaitGone(n *Node, timeout time.Duration) zkwatch.View {
	c.tb.Helper()
	return c.WaitView(func(v zkwatch.View) bool {
		_, ok := memberAt(v, n.Addr)
		return !ok
	}, timeout)
}

// Head returns the node that is the chain's head in the current view.
func (c *Cluster) Head() *Node {
	c.tb.Helper()
	m, ok := c.View().Head()
	if !ok {
		c.tb.Fatalf("cluster: the chain is empty")
	}
	return c.NodeAt(m.Addr)
}

// Tail returns the node that is the chain's tail in the current view.
func (c *Cluster) Tail() *Node {
	c.tb.Helper()
	m, ok := c.View().Tail()
	if !ok {
		c.tb.Fatalf("cluster: the chain is empty")
	}
	return c.NodeAt(m.Addr)
}

// At returns the node at position i of the chain in the current view, the
// head being at 0.
func (c *Cluster) At(i int) *Node {
	c.tb.Helper()
	v := c.View()
	if i < 0 || i >= len(v.Members) {
		c.tb.Fatalf("cluster: no position %d in the chain %s", i, c.describe(v))
	}
	return c.NodeAt(v.Members[i].Addr)
}

// WaitTailServes waits until the node that is the tail in the current view
// answers a read (a size request), and returns it. A tail still catching
// up answers UNAVAILABLE, so this also waits for a joining node to take
// over.
func (c *Cluster) WaitTailServes(timeout time.Duration) *Node {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		if m, ok := c.View().Tail(); ok {
			if lastErr = probeRead(m.Addr); lastErr == nil {
				return c.NodeAt(m.Addr)
			}
		} else {
			lastErr = cli.ErrNoServers
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("cluster: no tail served a read within %v (last error: %v); the chain is %s",
				timeout, lastErr, c.describe(c.View()))
		}
		time.Sleep(5 * pollInterval)
	}
}

// probeRead sends one size request to addr.
func probeRead(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cl, err := cli.Dial(ctx, cli.Direct(addr), cli.Options{})
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = cl.Size(ctx)
	return err
}

// NodeAt returns the node that listens at addr, as a member's Addr names
// it.
func (c *Cluster) NodeAt(addr string) *Node {
	c.tb.Helper()
	for _, n := range c.Nodes() {
		if n.Addr == addr {
			return n
		}
	}
	c.tb.Fatalf("cluster: no node of this cluster listens at %s", addr)
	return nil
}

// describe renders a view with the node and process behind each member.
func (c *Cluster) describe(v zkwatch.View) string {
	var b strings.Builder
	b.WriteString("[")
	for i, m := range v.Members {
		if i > 0 {
			b.WriteString(" -> ")
		}
		fmt.Fprintf(&b, "%s@%s", m.Name, m.Addr)
		for _, n := range c.Nodes() {
			if n.Addr == m.Addr {
				fmt.Fprintf(&b, " (node%d, %s)", n.ID, n.status())
			}
		}
	}
	b.WriteString("]")
	return b.String()
}

// cleanup kills every node and, if the test failed, shows their logs.
func (c *Cluster) cleanup() {
	for _, n := range c.Nodes() {
		if err := n.kill(); err != nil {
			c.tb.Errorf("cluster: node%d: %v", n.ID, err)
		}
	}
	for _, n := range c.Nodes() {
		if race := n.grep("WARNING: DATA RACE"); race != "" {
			c.tb.Errorf("cluster: node%d (%s) reported a data race; see %s", n.ID, n.Addr, n.logPath)
		}
	}
	if c.tb.Failed() {
		for _, n := range c.Nodes() {
			c.tb.Logf("cluster: last lines of node%d's log (%s):\n%s", n.ID, n.logPath, n.LogTail(logTailLines))
		}
	}
}

// Node is one table_server of a Cluster. Its address stays the same across
// Restart.
type Node struct {
	c *Cluster
	// ID numbers the nodes of a cluster in the order they were added,
	// from 0.
	ID int
	// Addr is the "127.0.0.1:port" where the node serves.
	Addr string
	// MetricsAddr is the "127.0.0.1:port" where the node serves its
	// metrics and /healthz, with Options.Metrics; "" otherwise.
	MetricsAddr string
	// DataDir is the node's --data-dir, with Options.DataDirs; ""
	// otherwise.
	DataDir string

	port    int
	logPath string
	flags   []string // table_server flags of its own

	zkProxies []*netfault.Proxy // the node's ways to ZooKeeper, one per server
	srvProxy  *netfault.Proxy   // in front of the node's port, with Options.NodeProxies

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed once cmd has been reaped
	stopped bool          // sent SIGSTOP and not SIGCONT since
	starts  int
}

// String names the node for test logs.
func (n *Node) String() string { return fmt.Sprintf("node%d(%s)", n.ID, n.Addr) }

// LogPath returns the file that holds the node's standard output and error,
// across its restarts.
func (n *Node) LogPath() string { return n.logPath }

// PID returns the process id of the node's current process, or 0 when it
// has none.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether the node's process exists (stopped or not).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Member returns the node's latest registration in the current view: the
// member with its address and the highest sequence number.
func (n *Node) Member() (zkwatch.Member, bool) { return memberAt(n.c.View(), n.Addr) }

// Kill kills the node with SIGKILL, as a crash would, and waits until the
// process is gone. ZooKeeper drops it from the chain once its session
// expires.
func (n *Node) Kill() {
	n.c.tb.Helper()
	if err := n.kill(); err != nil {
		n.c.tb.Fatalf("cluster: %s: %v", n, err)
	}
}

// Term sends SIGTERM, which makes the node leave the chain gracefully, and
// waits until it exits. It returns the exit code.
func (n *Node) Term() int {
	n.c.tb.Helper()
	n.mu.Lock()
	cmd, exited, stopped := n.cmd, n.exited, n.stopped
	n.mu.Unlock()
	if cmd == nil {
		n.c.tb.Fatalf("cluster: %s: Term of a node that is not running", n)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if stopped {
		n.Cont()
	}
	select {
	case <-exited:
	case <-time.After(termTimeout):
		n.kill()
		n.c.tb.Fatalf("cluster: %s still running %v after SIGTERM; killed it", n, termTimeout)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cmd = nil
	return cmd.ProcessState.ExitCode()
}

// Stop freezes the node with SIGSTOP: it keeps its sockets but answers
// nothing, neither clients nor ZooKeeper, until Cont.
func (n *Node) Stop() {
	n.c.tb.Helper()
	n.signal(syscall.SIGSTOP)
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
}

// Cont resumes a node frozen by Stop with SIGCONT.
func (n *Node) Cont() {
	n.c.tb.Helper()
	n.signal(syscall.SIGCONT)
	n.mu.Lock()
	n.stopped = false
	n.mu.Unlock()
}

func (n *Node) signal(sig syscall.Signal) {
	n.c.tb.Helper()
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd == nil {
		n.c.tb.Fatalf("cluster: %s: %v to a node that is not running", n, sig)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		n.c.tb.Fatalf("cluster: %s: %v: %v", n, sig, err)
	}
}

// CutZK cuts the node off from ZooKeeper, and from ZooKeeper only, as a
// network partition would: its connection is closed and new ones are
// refused until HealZK. Its session expires once the session timeout
// passes, and the others drop it from the chain; it still reaches them,
// and clients still reach it.
func (n *Node) CutZK() {
	for _, p := range n.zkProxies {
		p.Block()
	}
}

// ZKServers returns the addresses of the ZooKeeper servers the node is
// connected to now, through its proxies: for an ensemble, the member its
// session is on (or none while it moves).
func (n *Node) ZKServers() []string {
	var addrs []string
	for _, p := range n.zkProxies {
		addrs = append(addrs, p.ConnectedTo()...)
	}
	return addrs
}

// HealZK lets the node reach ZooKeeper again.
func (n *Node) HealZK() {
	for _, p := range n.zkProxies {
		p.Heal()
	}
}

// FreezeZK freezes ZooKeeper for the node, and for it only: its
// connections stay open but carry nothing until HealZK, as when ZooKeeper
// hangs or a network silently drops every packet.
func (n *Node) FreezeZK() {
	for _, p := range n.zkProxies {
		p.Pause()
	}
}

// PartitionMode says how a partition treats the connections it cuts.
type PartitionMode int

const (
	// Reset closes the connections into the node and refuses new ones:
	// the peers learn at once, as from a firewall that answers with
	// resets.
	Reset PartitionMode = iota
	// Silent holds them open but carries no byte, old connections or new:
	// the peers learn nothing until their own timeouts, as when a network
	// drops every packet. Bytes sent meanwhile arrive once it heals.
	Silent
)

// String returns "reset" or "silent".
func (m PartitionMode) String() string {
	switch m {
	case Reset:
		return "reset"
	case Silent:
		return "silent"
	}
	return fmt.Sprintf("PartitionMode(%d)", int(m))
}

// Partition cuts every link into the node, its predecessor's and clients',
// until Heal; its own links, to its successor and to ZooKeeper, stay up.
// It needs Options.NodeProxies.
func (n *Node) Partition(mode PartitionMode) {
	n.c.tb.Helper()
	p := n.Proxy()
	if mode == Silent {
		p.Pause()
	} else {
		p.Block()
	}
}

// Heal ends a Partition.
func (n *Node) Heal() {
	n.c.tb.Helper()
	n.Proxy().Heal()
}

// Proxy returns the proxy in front of the node's port. It fails the test
// unless the cluster was started with Options.NodeProxies.
func (n *Node) Proxy() *netfault.Proxy {
	n.c.tb.Helper()
	if n.srvProxy == nil {
		n.c.tb.Fatalf("cluster: %s has no proxy in front of it; start the cluster with Options.NodeProxies", n)
	}
	return n.srvProxy
}

// Restart kills the node if it runs, starts a new process on the same port
// and waits until it is registered: it joins the chain as a new, empty
// member at the tail, whatever its previous process was.
func (n *Node) Restart() {
	n.c.tb.Helper()
	n.Kill()
	if err := n.start(); err != nil {
		n.c.tb.Fatalf("cluster: %v", err)
	}
}

// FailDisk makes the node's disk fail, as far as its process can tell:
// from now on every write it makes to a file fails (EFBIG), its data dir's
// and its log file's alike, so its last log lines are lost (the harness
// still notes how it ended). A restart runs on a working disk again.
func (n *Node) FailDisk() {
	n.c.tb.Helper()
	if err := limitFileSize(n.PID(), 1); err != nil {
		n.c.tb.Fatalf("cluster: failing %v's disk: %v", n, err)
	}
}

// WaitExit waits at most timeout for the node's process to end by itself
// and returns how it ended ("exit status 1", say), or false if it still
// runs.
func (n *Node) WaitExit(timeout time.Duration) (string, bool) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return "", false
	}
	select {
	case <-exited:
		return cmd.ProcessState.String(), true
	case <-time.After(timeout):
		return "", false
	}
}

// WipeData kills the node if it runs and deletes its data dir: its next
// start begins empty, under a new identity.
func (n *Node) WipeData() {
	n.c.tb.Helper()
	n.Kill()
	if err := os.RemoveAll(n.DataDir); err != nil {
		n.c.tb.Fatalf("cluster: %v", err)
	}
}

// LogTail returns the last lines of the node's log.
func (n *Node) LogTail(lines int) string {
	f, err := os.Open(n.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var tail []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		tail = append(tail, sc.Text())
		if len(tail) > lines {
			tail = tail[1:]
		}
	}
	return strings.Join(tail, "\n")
}

// grep returns the first line of the node's log that contains s, or "".
func (n *Node) grep(s string) string {
	f, err := os.Open(n.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return sc.Text()
		}
	}
	return ""
}

// status describes the node's process for messages.
func (n *Node) status() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.cmd == nil:
		return "not running"
	case n.stopped:
		return fmt.Sprintf("pid %d, stopped", n.cmd.Process.Pid)
	}
	select {
	case <-n.exited:
		return fmt.Sprintf("pid %d, exited: %v", n.cmd.Process.Pid, n.cmd.ProcessState)
	default:
		return fmt.Sprintf("pid %d", n.cmd.Process.Pid)
	}
}

// start starts a process for the node and waits until it is registered.
func (n *Node) start() error {
	c := n.c
	// Any new registration has a higher sequence number than every
	// member now, whose numbers ZooKeeper never hands out again.
	var floor int64 = -1
	for _, m := range c.View().Members {
		floor = max(floor, m.Seq)
	}

	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	bind := "127.0.0.1"
	if n.srvProxy != nil {
		bind = NodeHost
	}
	zkAddrs := make([]string, len(n.zkProxies))
	for i, p := range n.zkProxies {
		zkAddrs[i] = p.Addr()
	}
	args := []string{strings.Join(zkAddrs, ","), strconv.Itoa(n.port), strconv.Itoa(c.opts.Lists),
		"--advertise", "127.0.0.1", "--bind", bind,
		"--session-timeout", c.opts.SessionTimeout.String()}
	if !c.opts.Quiet {
		args = append(args, "-v")
	}
	if n.MetricsAddr != "" {
		args = append(args, "--metrics-addr", n.MetricsAddr)
	}
	if n.DataDir != "" {
		args = append(args, "--data-dir", n.DataDir)
	}
	args = append(args, n.flags...)
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()

	n.mu.Lock()
	n.starts++
	fmt.Fprintf(logf, "=== cluster: %s start #%d at %s: table_server %s\n",
		n, n.starts, time.Now().Format("15:04:05.000"), strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("%s: start %s: %w", n, c.bin, err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.stopped = cmd, exited, false
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		if f, ferr := os.OpenFile(n.logPath, os.O_WRONLY|os.O_APPEND, 0); ferr == nil {
			fmt.Fprintf(f, "=== cluster: %s pid %d ended at %s: %v\n",
				n, cmd.Process.Pid, time.Now().Format("15:04:05.000"), errOrExit(err))
			f.Close()
		}
		close(exited)
	}()

	deadline := time.Now().Add(RegisterTimeout)
	for {
		if m, ok := memberAt(c.View(), n.Addr); ok && m.Seq > floor {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s (pid %d) exited before registering: %v; last lines of its log:\n%s",
				n, cmd.Process.Pid, cmd.ProcessState, n.LogTail(logTailLines))
		case <-time.After(pollInterval):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) not registered in the chain after %v; the chain is %s",
				n, cmd.Process.Pid, RegisterTimeout, c.describe(c.View()))
		}
	}
}

func errOrExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// kill kills the node's process, if any, by PID and waits until it has
// been reaped. A stopped process is resumed first, so that it dies as
// any other would.
func (n *Node) kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	if err := n.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	if n.stopped {
		n.cmd.Process.Signal(syscall.SIGCONT)
		n.stopped = false
	}
	select {
	case <-n.exited:
	case <-time.After(exitTimeout):
		return fmt.Errorf("pid %d still running %v after SIGKILL", n.cmd.Process.Pid, exitTimeout)
	}
	n.cmd = nil
	return nil
}

// memberAt returns the member of v at addr with the highest sequence
// number: its latest registration.
func memberAt(v zkwatch.View, addr string) (zkwatch.Member, bool) {
	var found zkwatch.Member
	ok := false
	for _, m := range v.Members {
		if m.Addr == addr && (!ok || m.Seq > found.Seq) {
			found, ok = m, true
		}
	}
	return found, ok
}

// freePort returns a loopback port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("cluster: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// sanitize makes a test name usable in a file name.
func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Client returns a client of the chain that retries for up to 20s, as
// table_client does, closed when the test ends.
func (c *Cluster) Client() *cli.Client {
	c.tb.Helper()
	return c.ClientWith(cli.Options{RetryFor: 20 * time.Second, AttemptTimeout: time.Second})
}

// ClientWith returns a client of the chain with the given options, closed
// when the test ends.
func (c *Cluster) ClientWith(opts cli.Options) *cli.Client {
	c.tb.Helper()
	cl, closeClient, err := dialClient(c.ZKAddr(), opts, cli.ReadAny)
	if err != nil {
		c.tb.Fatalf("cluster: client: %v", err)
	}
	c.tb.Cleanup(closeClient)
	return cl
}
