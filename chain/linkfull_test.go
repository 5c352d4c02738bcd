package chain

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/internal/netfault"
)

// A successor that stops reading fills the link's socket mid-frame: the
// rest of that frame, and every one after it, must follow in order once
// it reads again. A torn or repeated frame would make the successor
// refuse the link, which the head counts as a break.
func TestLinkSocketFullMidFrame(t *testing.T) {
	head, tail := startNode(t, "n1"), startNode(t, "n2")
	proxy := netfault.NewProxy(t, "127.0.0.1:0", tail.server.Addr())
	members := []Member{{Name: head.name, Addr: head.server.Addr()}, {Name: tail.name, Addr: proxy.Addr()}}
	head.node.SetView(members)
	tail.node.SetView(members)
	put(t, head, "before", "v")
	eventually(t, "first write at the tail", func() error { _, err := get(t, tail, "before"); return err })

	// Enough bytes in flight to fill the head's send buffer and the
	// proxy's receive buffer several times over, in a few rounds, so
	// that the socket fills at different points of a frame.
	const rounds, clients, perClient, size = 3, 8, 12, 128 << 10
	value := func(c, i int) []byte { return bytes.Repeat([]byte{byte('a' + c), byte(i)}, size/2) }
	for round := range rounds {
		proxy.Pause()
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- pipelinePuts(head.server.Addr(), fmt.Sprintf("r%d-c%d", round, c), perClient, func(i int) []byte { return value(c, i) })
			}()
		}
		time.Sleep(300 * time.Millisecond)
		proxy.Heal()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for c := range clients {
			for i := range perClient {
				key := fmt.Sprintf("r%d-c%d-%d", round, c, i)
				got, err := get(t, tail, key)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal([]byte(got), value(c, i)) {
					t.Fatalf("%s at the tail: %d bytes that differ from the %d-byte value written", key, len(got), size)
				}
			}
		}
	}
	if st := head.node.Status(); st.LinkBreaks != 0 || st.LinkConnects != 1 {
		t.Fatalf("the head's link broke %d times and connected %d times: a frame was torn or repeated", st.LinkBreaks, st.LinkConnects)
	}
}

// pipelinePuts sends n puts, of keys prefix-0 on, at once, then reads
// their replies.
func pipelinePuts(addr, prefix string, n int, value func(i int) []byte) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	w := bufio.NewWriter(conn)
	for i := range n {
		b, err := codec.AppendMessage(nil, codec.PutRequest(fmt.Sprintf("%s-%d", prefix, i), value(i)))
		if err != nil {
			return err
		}
		w.Write(b)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	for i := range n {
		var reply codec.MessageT
		if err := codec.ReadMessage(r, codec.DefaultMaxFrame, &reply); err != nil {
			return fmt.Errorf("%s-%d: %w", prefix, i, err)
		}
		if reply.Opcode != codec.OpPut+1 {
			return fmt.Errorf("%s-%d: %v", prefix, i, &reply)
		}
	}
	return nil
}
