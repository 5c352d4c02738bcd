package chain

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// TestNodeAnswersHalfClosedClient: a client that pipelines puts into the
// head and shuts down its sending side at once, as `printf ... | nc -N`
// does, gets every reply, though each waits for the tail, here for a
// failover (issue 17).
func TestNodeAnswersHalfClosedClient(t *testing.T) {
	a, b := startNode(t, "node0000000001"), startNode(t, "node0000000002")
	setViews(a, b)
	eventually(t, "chain takes writes", func() error {
		if r := dialWire(t, a.server.Addr()).do(codec.PutRequest("ready", nil)); r.Opcode != codec.OpPut+1 {
			return fmt.Errorf("put: %v", r)
		}
		return nil
	})
	// The tail goes away: the replies wait until the head learns it is
	// alone, well after the client's end of stream arrived.
	b.stop()
	w := dialWire(t, a.server.Addr())
	var batch []byte
	for i := range 50 {
		batch = append(batch, mustFrame(t, codec.PutRequest(fmt.Sprintf("k%d", i), []byte("v")))...)
	}
	w.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.conn.Write(batch); err != nil {
		t.Fatal(err)
	}
	if err := w.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	setViews(a)
	for i := range 50 {
		r := new(codec.MessageT)
		if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, r); err != nil {
			t.Fatalf("reply %d of 50 after the client shut down its side: %v", i, err)
		}
		if r.Opcode != codec.OpPut+1 {
			t.Fatalf("reply %d: %v", i, r)
		}
	}
}
