package zkwatch

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/chaintable/chaintable/internal/zktest"
)

// sessionNodes returns the member nodes under ChainPath that session owns.
func sessionNodes(t *testing.T, c *Client, session int64) []string {
	t.Helper()
	names, _, err := c.conn.Children(ChainPath)
	if err != nil {
		t.Fatal(err)
	}
	var own []string
	for _, name := range names {
		ok, stat, err := c.conn.Exists(ChainPath + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if ok && stat.EphemeralOwner == session {
			own = append(own, name)
		}
	}
	slices.Sort(own)
	return own
}

// Register names members as course servers do, so that the order of names,
// which course clients use, is the order of sequence numbers.
func TestRegisterPlainNames(t *testing.T) {
	srv := zktest.Start(t)
	var names []string
	for i := range 3 {
		r := register(t, dial(t, srv.Addr(), 2*time.Second), fmt.Sprintf("127.0.0.1:%d", 9001+i))
		if _, ok := parseName(r.Name()); !ok || !strings.HasPrefix(r.Name(), nodePrefix) {
			t.Errorf("member name %q is not a plain sequential name", r.Name())
		}
		names = append(names, r.Name())
	}
	if !slices.IsSorted(names) {
		t.Errorf("names in order of registration %v do not sort in that order", names)
	}
}

// A create whose answer is lost with the connection has created the member
// node all the same: Register adopts it instead of leaving a ghost member
// in its session.
func TestRegisterAfterLostCreateAnswer(t *testing.T) {
	srv := zktest.Start(t)
	k := newCutter(t, srv.Addr())
	c := dial(t, k.addr(), 4*time.Second)
	if err := c.ensureChain(); err != nil {
		t.Fatal(err)
	}
	k.arm(opCreate, loseAnswer)
	r := register(t, c, "127.0.0.1:9001")
	if k.lost() != 1 {
		t.Fatalf("the cutter lost %d answers, want the create's", k.lost())
	}
	observer := dial(t, srv.Addr(), 2*time.Second)
	own := sessionNodes(t, observer, c.Session().ID)
	if !slices.Equal(own, []string{r.Name()}) {
		t.Errorf("session owns member nodes %v, want only the registered %s", own, r.Name())
	}
}

// A node left in the session that register cannot delete, because the
// connection drops, fails the attempt instead of leaving two members; the
// attempt after deletes it.
func TestRegisterDeletesLeftNodeDespiteLostDelete(t *testing.T) {
	srv := zktest.Start(t)
	k := newCutter(t, srv.Addr())
	c := dial(t, k.addr(), 4*time.Second)
	if err := c.ensureChain(); err != nil {
		t.Fatal(err)
	}
	// A node of this session holding another address: no member of ours.
	if _, err := c.conn.Create(ChainPath+"/"+nodePrefix, []byte("127.0.0.1:9999\x00"), zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	k.arm(opDelete, loseRequest)
	r := register(t, c, "127.0.0.1:9001")
	if k.lost() != 1 {
		t.Fatalf("the cutter lost %d answers, want the delete", k.lost())
	}
	own := sessionNodes(t, dial(t, srv.Addr(), 2*time.Second), c.Session().ID)
	if !slices.Equal(own, []string{r.Name()}) {
		t.Errorf("session owns member nodes %v, want only the registered %s", own, r.Name())
	}
}

// srvrZxid returns the latest transaction id that ZooKeeper reports.
func srvrZxid(t *testing.T, addr string) int64 {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("srvr")); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "Zxid: "); ok {
			z, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
			if err != nil {
				t.Fatal(err)
			}
			return z
		}
	}
	t.Fatalf("srvr answered no Zxid: %q", b.String())
	return 0
}

// Reading the chain record writes nothing: ZooKeeper logs a transaction,
// and so moves its zxid, even for a create that fails because the node
// exists.
func TestRecordWritesNothing(t *testing.T) {
	srv := zktest.Start(t)
	c := dial(t, srv.Addr(), 2*time.Second)
	if _, _, err := c.Record(); err != nil {
		t.Fatal(err)
	}
	before := srvrZxid(t, srv.Addr())
	for range 5 {
		if _, _, err := c.Record(); err != nil {
			t.Fatal(err)
		}
	}
	if after := srvrZxid(t, srv.Addr()); after != before {
		t.Errorf("5 reads of the record moved ZooKeeper's zxid from %#x to %#x", before, after)
	}
}
