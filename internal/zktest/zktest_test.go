package zktest

import (
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

// connect opens a session with the given servers and waits until it is
// established.
func connect(t *testing.T, servers ...string) *zk.Conn {
	t.Helper()
	conn, events, err := zk.Connect(servers, 2*time.Second, zk.WithLogger(quiet{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		for range events { // closed once the connection's goroutines end
		}
	})
	deadline := time.After(15 * time.Second)
	for conn.State() != zk.StateHasSession {
		select {
		case <-events:
		case <-deadline:
			t.Fatalf("no session with %v after 15s", servers)
		}
	}
	return conn
}

// create retries creating path until the ensemble accepts the write.
func create(t *testing.T, conn *zk.Conn, path string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := conn.Create(path, nil, 0, zk.WorldACL(zk.PermAll))
		if err == nil || err == zk.ErrNodeExists {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("create %s: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func mode(t *testing.T, s *Server) string {
	t.Helper()
	reply, err := s.fourLetter("srvr")
	if err != nil {
		t.Fatalf("srvr on %s: %v", s.Addr(), err)
	}
	for _, line := range strings.Split(reply, "\n") {
		if m, ok := strings.CutPrefix(line, "Mode: "); ok {
			return m
		}
	}
	t.Fatalf("srvr on %s answered %q", s.Addr(), reply)
	return ""
}

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if m := mode(t, s); m != "standalone" {
		t.Fatalf("mode %q, want standalone", m)
	}
	if reply, err := s.fourLetter("ruok"); reply != "imok" {
		t.Fatalf("ruok = %q, %v; want imok", reply, err)
	}
	conn := connect(t, s.Addr())
	create(t, conn, "/kept")

	addr := s.Addr()
	s.Stop()
	if _, err := s.fourLetter("ruok"); err == nil {
		t.Fatalf("%s still answers after Stop", addr)
	}
	s.Stop() // a second Stop does nothing
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Addr after Restart = %s, want %s", s.Addr(), addr)
	}
	if ok, _, err := connect(t, s.Addr()).Exists("/kept"); !ok || err != nil {
		t.Fatalf("/kept after Restart: exists %v, %v", ok, err)
	}
}

func TestEnsembleServesWithOneMemberDown(t *testing.T) {
	e := StartEnsemble(t, 3)
	if n := len(strings.Split(e.Addr(), ",")); n != 3 {
		t.Fatalf("Addr() = %q, want three addresses", e.Addr())
	}
	var leader *Server
	followers := 0
	for _, s := range e.Members {
		switch mode(t, s) {
		case "leader":
			leader = s
		case "follower":
			followers++
		}
	}
	if leader == nil || followers != 2 {
		t.Fatal("want one leader and two followers")
	}

	leader.Stop()
	var rest []string
	for _, s := range e.Members {
		if s != leader {
			rest = append(rest, s.Addr())
		}
	}
	conn := connect(t, rest...)
	create(t, conn, "/written-without-the-old-leader")

	leader.Restart()
	if m := mode(t, leader); m != "follower" && m != "leader" {
		t.Fatalf("restarted member is %s", m)
	}
	if ok, _, err := connect(t, leader.Addr()).Exists("/written-without-the-old-leader"); !ok || err != nil {
		t.Fatalf("restarted member: exists %v, %v", ok, err)
	}
}
