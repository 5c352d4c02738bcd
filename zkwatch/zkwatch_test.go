package zkwatch

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/goleak"

	"github.com/chaintable/chaintable/internal/netfault"
	"github.com/chaintable/chaintable/internal/zktest"
)

// memberEnv, when set to a ZooKeeper address, makes the test binary act as
// a server process: it registers as a member and waits to be killed.
const memberEnv = "ZKWATCH_TEST_MEMBER_OF"

func TestMain(m *testing.M) {
	if servers := os.Getenv(memberEnv); servers != "" {
		runMember(servers)
		return
	}
	goleak.VerifyTestMain(m)
}

func runMember(servers string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := Dial(servers, Options{SessionTimeout: time.Second, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	r, err := c.Register(":7000")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(r.Name())
	// Until the test kills us, or dies itself and so closes our stdin.
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// waitTimeout bounds every wait for ZooKeeper to tell of a change.
const waitTimeout = 15 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func dial(t *testing.T, servers string, sessionTimeout time.Duration) *Client {
	t.Helper()
	c, err := Dial(servers, Options{SessionTimeout: sessionTimeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func register(t *testing.T, c *Client, addr string) *Registration {
	t.Helper()
	r, err := c.Register(addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func watch(t *testing.T, c *Client) *Watcher {
	t.Helper()
	w, err := c.Watch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func addrs(v View) []string {
	var as []string
	for _, m := range v.Members {
		as = append(as, m.Addr)
	}
	return as
}

// waitAddrs waits until the watcher's view holds exactly the given member
// addresses, in order.
func waitAddrs(t *testing.T, w *Watcher, want ...string) View {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		v := w.View()
		if slices.Equal(addrs(v), want) {
			return v
		}
		select {
		case _, ok := <-w.Updates():
			if !ok {
				t.Fatalf("Updates closed while waiting for members %v", want)
			}
		case <-deadline:
			t.Fatalf("members are %v after %s, want %v", addrs(v), waitTimeout, want)
		}
	}
}

// waitStatus waits until the registration's status satisfies ok.
func waitStatus(t *testing.T, r *Registration, what string, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		s := r.Status()
		if ok(s) {
			return s
		}
		select {
		case <-r.Updates():
		case <-deadline:
			t.Fatalf("status is %+v after %s, want %s", s, waitTimeout, what)
		}
	}
}

func TestMembersOrderedBySequence(t *testing.T) {
	srv := zktest.Start(t)
	var regs []*Registration
	for i := range 3 {
		c := dial(t, srv.Addr(), 2*time.Second)
		regs = append(regs, register(t, c, fmt.Sprintf("127.0.0.1:%d", 9001+i)))
	}
	// A course C server registers a plain name with a NUL-terminated
	// address; an older one might leave the NUL out; an older version of
	// ours registered protected names. Other children are no members.
	raw := dial(t, srv.Addr(), 2*time.Second).conn
	for _, data := range []string{"10.0.0.4:9004\x00", "10.0.0.5:9005"} {
		if _, err := raw.Create(ChainPath+"/node", []byte(data), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := raw.CreateProtectedEphemeralSequential(ChainPath+"/node", []byte("10.0.0.6:9006\x00"), zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Create(ChainPath+"/config", []byte("x"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	regs = append(regs, register(t, dial(t, srv.Addr(), 2*time.Second), "127.0.0.1:9007"))

	w := watch(t, dial(t, srv.Addr(), 2*time.Second))
	v := waitAddrs(t, w, "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "10.0.0.4:9004", "10.0.0.5:9005", "10.0.0.6:9006", "127.0.0.1:9007")
	for i, m := range v.Members {
		if i > 0 && m.Seq <= v.Members[i-1].Seq {
			t.Errorf("member %d has sequence %d after %d", i, m.Seq, v.Members[i-1].Seq)
		}
		if !strings.HasSuffix(m.Name, fmt.Sprintf("node%010d", m.Seq)) {
			t.Errorf("member %s has sequence %d", m.Name, m.Seq)
		}
	}
	for i, r := range []*Registration{regs[0], regs[1], regs[2]} {
		if got := v.Members[i].Name; got != r.Name() || got != fmt.Sprintf("node%010d", v.Members[i].Seq) {
			t.Errorf("member %d is %s, want the plain name %s", i, got, r.Name())
		}
	}
	if h, _ := v.Head(); h.Name != regs[0].Name() {
		t.Errorf("head is %s, want the first registered, %s", h.Name, regs[0].Name())
	}
	if tl, _ := v.Tail(); tl.Name != regs[3].Name() {
		t.Errorf("tail is %s, want the last registered, %s", tl.Name, regs[3].Name())
	}
	if s, _ := v.Successor(regs[2].Name()); s.Addr != "10.0.0.4:9004" {
		t.Errorf("successor of the third is %v, want the plain node at 10.0.0.4:9004", s)
	}

	data, _, err := raw.Get(ChainPath + "/" + regs[0].Name())
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "127.0.0.1:9001\x00" {
		t.Errorf("member node holds %q, want the address and a NUL byte", data)
	}
}

func TestWatchSeesJoinsAndLeaves(t *testing.T) {
	srv := zktest.Start(t)
	w := watch(t, dial(t, srv.Addr(), 2*time.Second))
	if v := w.View(); len(v.Members) != 0 {
		t.Fatalf("new chain has members %v", v.Members)
	}
	select {
	case v := <-w.Updates():
		if len(v.Members) != 0 {
			t.Fatalf("first update has members %v", v.Members)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no first view on Updates")
	}

	ca := dial(t, srv.Addr(), 10*time.Second)
	a := register(t, ca, "127.0.0.1:9001")
	waitAddrs(t, w, "127.0.0.1:9001")
	cb := dial(t, srv.Addr(), 10*time.Second)
	register(t, cb, "127.0.0.1:9002")
	v := waitAddrs(t, w, "127.0.0.1:9001", "127.0.0.1:9002")
	if s, _ := v.Successor(a.Name()); s.Addr != "127.0.0.1:9002" {
		t.Errorf("successor of the head is %v", s)
	}
	if _, err := ca.Register("127.0.0.1:9009"); err == nil {
		t.Error("a second Register on one client succeeded")
	}
	register(t, dial(t, srv.Addr(), 10*time.Second), "127.0.0.1:9003")
	waitAddrs(t, w, "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")

	// Leaving ZooKeeper takes effect at once, well within the 10s session
	// timeout, both by closing the registration and the client.
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, w, "127.0.0.1:9002", "127.0.0.1:9003")
	cb.Close()
	waitAddrs(t, w, "127.0.0.1:9003")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("leaving took %s", d)
	}
	if a.Name() != "" {
		t.Errorf("closed registration still has name %q", a.Name())
	}
	for range a.Updates() { // ends once closed
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	register(t, ca, "127.0.0.1:9004") // a client may register again after Close
	waitAddrs(t, w, "127.0.0.1:9003", "127.0.0.1:9004")
}

// A receiver that falls behind finds the newest view, not a backlog.
func TestUpdatesHoldTheLatestView(t *testing.T) {
	srv := zktest.Start(t)
	w := watch(t, dial(t, srv.Addr(), 2*time.Second))
	want := []string{"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"}
	for _, addr := range want {
		register(t, dial(t, srv.Addr(), 2*time.Second), addr)
	}
	deadline := time.Now().Add(waitTimeout)
	for !slices.Equal(addrs(w.View()), want) {
		if time.Now().After(deadline) {
			t.Fatalf("members are %v, want %v", addrs(w.View()), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case v := <-w.Updates():
		if !slices.Equal(addrs(v), want) {
			t.Errorf("pending update has members %v, want the latest, %v", addrs(v), want)
		}
	default:
		t.Fatal("no update pending")
	}
	select {
	case v := <-w.Updates():
		t.Errorf("second pending update %v", addrs(v))
	default:
	}
}

// A killed server's node goes when ZooKeeper expires its session.
func TestMemberNodeGoesWithKilledProcess(t *testing.T) {
	srv := zktest.Start(t)
	w := watch(t, dial(t, srv.Addr(), 2*time.Second))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), memberEnv+"="+srv.Addr())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	name, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("member process: %v", err)
	}
	name = strings.TrimSpace(name)
	v := waitAddrs(t, w, "127.0.0.1:7000")
	if v.Members[0].Name != name {
		t.Errorf("member is %s, the process registered %s", v.Members[0].Name, name)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed := time.Now()
	waitAddrs(t, w)
	// The member asked for a one-second session.
	if d := time.Since(killed); d < 500*time.Millisecond {
		t.Errorf("node went %s after the kill, before the session could expire", d)
	}
}

// When a partition outlasts the session, ZooKeeper deletes the member node;
// the registration makes a new one as soon as it can.
func TestRegisterAgainAfterSessionExpiry(t *testing.T) {
	srv := zktest.Start(t)
	proxy := netfault.NewProxy(t, "127.0.0.1:0", srv.Addr())
	w := watch(t, dial(t, srv.Addr(), 2*time.Second))
	c := dial(t, proxy.Addr(), time.Second)
	r := register(t, c, ":9001")
	before := waitStatus(t, r, "connected", func(s Status) bool { return s.State == Connected && s.Name != "" })
	if before.Timeout != time.Second {
		t.Errorf("session timeout is %s, want the 1s asked for", before.Timeout)
	}
	waitAddrs(t, w, "127.0.0.1:9001")
	if until, id := c.Lease(); id != before.ID || !until.After(time.Now()) {
		t.Errorf("lease of a healthy session: until %v (in %v), session %v", until, time.Until(until), sessionID(id))
	}

	proxy.Block()
	lost := waitStatus(t, r, "disconnected", func(s Status) bool { return s.State != Connected })
	if lost.Name != before.Name && lost.State == Disconnected {
		t.Errorf("name changed to %q while only disconnected", lost.Name)
	}
	waitAddrs(t, w) // ZooKeeper expired the session
	if until, _ := c.Lease(); until.After(time.Now()) {
		t.Errorf("ZooKeeper expired the session, but its lease runs %v more", time.Until(until))
	}
	time.Sleep(500 * time.Millisecond)
	if s := c.Session(); s.State != Disconnected || s.ID != before.ID {
		t.Errorf("while partitioned the session is %+v, want disconnected from session %v", s, sessionID(before.ID))
	}

	proxy.Heal()
	after := waitStatus(t, r, "registered again", func(s Status) bool { return s.State == Connected && s.Name != "" })
	if after.ID == before.ID {
		t.Errorf("session id still %v after expiry", sessionID(after.ID))
	}
	if after.Name == before.Name {
		t.Errorf("member name still %s after expiry", after.Name)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		until, id := c.Lease()
		if id == after.ID && until.After(time.Now()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lease on the new session %v: until %v, session %v", sessionID(after.ID), until, sessionID(id))
		}
		time.Sleep(20 * time.Millisecond)
	}
	v := waitAddrs(t, w, "127.0.0.1:9001")
	if v.Members[0].Name != after.Name {
		t.Errorf("member is %s, registration says %s", v.Members[0].Name, after.Name)
	}
}

// A ZooKeeper restart within the session timeout keeps sessions, member
// nodes and, re-armed, the watch.
func TestWatchSurvivesZooKeeperRestart(t *testing.T) {
	srv := zktest.Start(t)
	w := watch(t, dial(t, srv.Addr(), 8*time.Second))
	cr := dial(t, srv.Addr(), 8*time.Second)
	r := register(t, cr, "127.0.0.1:9001")
	waitAddrs(t, w, "127.0.0.1:9001")
	name := r.Name()

	srv.Stop()
	waitStatus(t, r, "disconnected", func(s Status) bool { return s.State == Disconnected })
	srv.Restart()
	waitStatus(t, r, "connected", func(s Status) bool { return s.State == Connected })
	if r.Name() != name {
		t.Errorf("name changed from %s to %s though the session lived", name, r.Name())
	}

	register(t, dial(t, srv.Addr(), 8*time.Second), "127.0.0.1:9002")
	waitAddrs(t, w, "127.0.0.1:9001", "127.0.0.1:9002")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, w, "127.0.0.1:9002")
}

// Losing the ensemble member a client is connected to moves it to another
// without losing its session or its watch.
func TestWatchSurvivesEnsembleMemberLoss(t *testing.T) {
	e := zktest.StartEnsemble(t, 3)
	c := dial(t, e.Addr(), 4*time.Second)
	w := watch(t, c)
	r := register(t, dial(t, e.Addr(), 4*time.Second), "127.0.0.1:9001")
	waitAddrs(t, w, "127.0.0.1:9001")
	id := c.Session().ID

	var stopped *zktest.Server
	for _, s := range e.Members {
		if s.Addr() == c.conn.Server() {
			stopped = s
		}
	}
	if stopped == nil {
		t.Fatalf("client is connected to %s, no member of %s", c.conn.Server(), e.Addr())
	}
	stopped.Stop()

	register(t, dial(t, e.Addr(), 4*time.Second), "127.0.0.1:9002")
	waitAddrs(t, w, "127.0.0.1:9001", "127.0.0.1:9002")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, w, "127.0.0.1:9002")
	if s := c.Session(); s.ID != id || s.State != Connected {
		t.Errorf("session is %+v, want still connected in %v", s, sessionID(id))
	}
	stopped.Restart()
}

func TestRegisterAdvertisedAddress(t *testing.T) {
	srv := zktest.Start(t)
	c := dial(t, srv.Addr(), 2*time.Second)
	for addr, want := range map[string]string{
		":9001":          "127.0.0.1:9001",
		"0.0.0.0:9002":   "127.0.0.1:9002",
		"[::]:9003":      "127.0.0.1:9003",
		"10.1.2.3:9004":  "10.1.2.3:9004",
		"localhost:9005": "localhost:9005",
	} {
		r := register(t, c, addr)
		if r.Addr() != want {
			t.Errorf("Register(%q).Addr() = %q, want %q", addr, r.Addr(), want)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, addr := range []string{"", "9001", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:x", ":70000"} {
		if _, err := c.Register(addr); err == nil {
			t.Errorf("Register(%q) succeeded", addr)
		}
	}
}

// A node that an earlier, failed attempt left in the session is deleted.
func TestRegisterDeletesNodeLeftInSession(t *testing.T) {
	srv := zktest.Start(t)
	c := dial(t, srv.Addr(), 2*time.Second)
	other := register(t, dial(t, srv.Addr(), 2*time.Second), "127.0.0.1:9000")
	if err := c.ensureChain(); err != nil {
		t.Fatal(err)
	}
	left, err := c.conn.Create(ChainPath+"/node", []byte("127.0.0.1:9001\x00"), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
	if err != nil {
		t.Fatal(err)
	}
	r := register(t, c, "127.0.0.1:9001")
	names, _, err := c.conn.Children(ChainPath)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	want := []string{r.Name(), other.Name()}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("children are %v after registering, want %v (%s deleted)", names, want, left)
	}
}

func TestSessionTimeoutIsTheGrantedOne(t *testing.T) {
	srv := zktest.Start(t)
	for asked, granted := range map[time.Duration]time.Duration{
		100 * time.Millisecond: zktest.MinSessionTimeout,
		3 * time.Second:        3 * time.Second,
		time.Minute:            zktest.MaxSessionTimeout,
	} {
		c := dial(t, srv.Addr(), asked)
		if s := c.Session(); s.Timeout != granted || s.State != Connected || s.ID == 0 {
			t.Errorf("asked for %s, session is %+v; want connected with timeout %s", asked, s, granted)
		}
		if s := c.Session(); s.ID != c.conn.SessionID() {
			t.Errorf("session id %v, go-zookeeper says %v", sessionID(s.ID), sessionID(c.conn.SessionID()))
		}
		c.Close()
		if s := c.Session(); s.State != Closed {
			t.Errorf("after Close the session is %v", s.State)
		}
	}
}

func TestDialUnreachable(t *testing.T) {
	// A port that was free a moment ago, on which nothing listens.
	srv := zktest.Start(t)
	addr := srv.Addr()
	srv.Stop()
	start := time.Now()
	_, err := Dial(addr, Options{ConnectTimeout: time.Second, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("Dial succeeded with ZooKeeper stopped")
	}
	want := "zkwatch: no session with ZooKeeper at " + addr + " after 1s: cannot connect: "
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error is %q, want %q and why", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Dial gave up after %s", d)
	}
}

// SetRecord writes the chain record only at the version read, and only
// while the member node exists.
func TestRecordIsWrittenByMembersOnly(t *testing.T) {
	srv := zktest.Start(t)
	c := dial(t, srv.Addr(), 2*time.Second)
	r := register(t, c, ":9001")
	data, version, err := c.Record()
	if err != nil || len(data) != 0 {
		t.Fatalf("first record: %q, %v; want empty", data, err)
	}
	if err := r.SetRecord([]byte("one"), version); err != nil {
		t.Fatalf("SetRecord at the version read: %v", err)
	}
	if err := r.SetRecord([]byte("stale"), version); !errors.Is(err, ErrRecordChanged) {
		t.Errorf("SetRecord at an old version: %v, want ErrRecordChanged", err)
	}
	data, version, err = c.Record()
	if err != nil || string(data) != "one" {
		t.Fatalf("record after one write: %q, %v; want \"one\"", data, err)
	}

	// A member whose node is gone must not write, even at the right
	// version: it may have missed what the others did.
	if _, err := c.conn.Multi(&zk.DeleteRequest{Path: ChainPath + "/" + r.Name(), Version: -1}); err != nil {
		t.Fatal(err)
	}
	if err := r.SetRecord([]byte("gone"), version); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("SetRecord without a member node: %v, want ErrNotRegistered", err)
	}
	if data, _, _ := c.Record(); string(data) != "one" {
		t.Errorf("record is %q after a refused write, want \"one\"", data)
	}
}

// Requeue puts the member at the end of the chain under a new name.
func TestRequeueMovesToTheEnd(t *testing.T) {
	srv := zktest.Start(t)
	w := watch(t, dial(t, srv.Addr(), 2*time.Second))
	first := register(t, dial(t, srv.Addr(), 2*time.Second), ":9001")
	register(t, dial(t, srv.Addr(), 2*time.Second), ":9002")
	waitAddrs(t, w, "127.0.0.1:9001", "127.0.0.1:9002")
	old := first.Name()
	if err := first.Requeue(); err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	v := waitAddrs(t, w, "127.0.0.1:9002", "127.0.0.1:9001")
	if got := first.Name(); got == old || got != v.Members[1].Name {
		t.Errorf("after Requeue the member is %q (was %q), the view's tail %q", got, old, v.Members[1].Name)
	}
	first.Close()
	if err := first.Requeue(); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Requeue after Close: %v, want ErrNotRegistered", err)
	}
}
