package chain

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/chaintable/chaintable/codec"
)

// startReplyRelay listens on loopback in front of a node at target and
// relays each connection to it: bytes to target as they come, and each
// frame target sends back through rewrite, which appends what the peer
// gets instead to dst (the frame itself, changed, or more frames). The
// frames one of target's writes carried go out in one write. It returns
// the address to give peers; it stops when the test ends.
func startReplyRelay(t *testing.T, target string, rewrite func(dst []byte, m *codec.MessageT) []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, d)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(d, c); d.Close(); c.Close() }()
			go func() {
				defer wg.Done()
				defer c.Close()
				defer d.Close()
				br := bufio.NewReader(d)
				var out []byte
				for {
					var m codec.MessageT
					if err := codec.ReadMessage(br, codec.DefaultMaxFrame, &m); err != nil {
						return
					}
					if out = rewrite(out, &m); br.Buffered() > 0 {
						continue
					}
					if _, err := c.Write(out); err != nil {
						return
					}
					out = out[:0]
				}
			}()
		}
	}()
	return ln.Addr().String()
}
