package chain

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// TestForwarderClosesIdleConnections: a connection the forwarder made to
// a member it no longer passes anything to is closed once idle, but never
// while a request on it waits for its reply, however long that takes.
func TestForwarderClosesIdleConnections(t *testing.T) {
	const idle = 100 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan time.Time, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		if _, err := codec.ReadFrame(r, codec.DefaultMaxFrame); err != nil {
			return
		}
		time.Sleep(3 * idle) // the reply comes long after the connection went quiet
		c.Write(mustFrame(t, &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtValue, Value: []byte("v")}))
		if _, err := io.Copy(io.Discard, r); err == nil {
			closed <- time.Now()
		}
	}()
	f := newForwarder(time.Second)
	f.idleTimeout = idle
	defer f.close()
	results := make(chan forwardResult, 1)
	f.forward(ln.Addr().String(), codec.GetRequest("k"), 10*time.Second, func(res forwardResult) { results <- res })
	res := <-results
	if res.reply == nil || string(res.reply.GetValue()) != "v" {
		t.Fatalf("the request in flight past the idle time: %+v", res)
	}
	answered := time.Now()
	select {
	case at := <-closed:
		if at.Sub(answered) < idle/2 {
			t.Fatalf("closed %v after its last reply, before it was idle for %v", at.Sub(answered), idle)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the connection is still open 5 s after its last request, idle time %v", idle)
	}
	f.mu.Lock()
	left := len(f.conns)
	f.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d connections kept after they were closed", left)
	}
}
