package netfault

import (
	"bufio"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// echoServer starts a loopback server that echoes every line, closed when
// the test ends, and returns its address.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends line through c and waits at most timeout for its echo.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return got[:len(got)-1], nil
}

func dialProxy(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// TestProxyFaults drives a Proxy through Block, Pause and Heal.
func TestProxyFaults(t *testing.T) {
	up := echoServer(t)
	p := NewProxy(t, "127.0.0.1:0", up)
	c, r := dialProxy(t, p)
	if got, err := roundTrip(c, r, "one", 5*time.Second); err != nil || got != "one" {
		t.Fatalf("through a healthy proxy: %q, %v; want \"one\"", got, err)
	}
	if got := p.ConnectedTo(); !slices.Equal(got, []string{up}) {
		t.Errorf("ConnectedTo = %v, want [%s]", got, up)
	}

	// Block resets the connection and refuses new ones.
	p.Block()
	if got, err := roundTrip(c, r, "two", 5*time.Second); err == nil {
		t.Fatalf("through a blocked proxy: %q, want an error", got)
	}
	c2, r2 := dialProxy(t, p)
	if got, err := roundTrip(c2, r2, "three", 5*time.Second); err == nil {
		t.Fatalf("new connection through a blocked proxy: %q, want an error", got)
	}
	p.Heal()
	c3, r3 := dialProxy(t, p)
	if got, err := roundTrip(c3, r3, "four", 5*time.Second); err != nil || got != "four" {
		t.Fatalf("after Heal: %q, %v; want \"four\"", got, err)
	}

	// Pause holds the bytes, without closing anything, until Heal.
	p.Pause()
	if got, err := roundTrip(c3, r3, "five", 300*time.Millisecond); err == nil {
		t.Fatalf("through a paused proxy: %q arrived, want nothing", got)
	}
	c4, r4 := dialProxy(t, p) // a new connection is held too
	if _, err := io.WriteString(c4, "six\n"); err != nil {
		t.Fatal(err)
	}
	p.Heal()
	c3.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r3.ReadString('\n'); err != nil || got != "five\n" {
		t.Fatalf("after Heal, the held line: %q, %v; want \"five\\n\"", got, err)
	}
	c4.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r4.ReadString('\n'); err != nil || got != "six\n" {
		t.Fatalf("after Heal, the line held on a connection made while paused: %q, %v; want \"six\\n\"", got, err)
	}
	if n := p.Counts(); n.Accepted != 4 || n.Refused != 1 || n.Reset < 1 {
		t.Errorf("Counts = %+v, want 4 accepted, 1 refused, some reset", n)
	}
}

// TestProxyFailover checks that a proxy with several upstreams skips those
// that refuse connections.
func TestProxyFailover(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	up := echoServer(t)
	p := NewProxy(t, "127.0.0.1:0", dead, up)
	for i := range 3 {
		c, r := dialProxy(t, p)
		if got, err := roundTrip(c, r, "x", 5*time.Second); err != nil || got != "x" {
			t.Fatalf("connection %d: %q, %v; want \"x\"", i, got, err)
		}
	}
	if got := p.ConnectedTo(); len(got) != 3 || slices.ContainsFunc(got, func(a string) bool { return a != up }) {
		t.Errorf("ConnectedTo = %v, want %s three times", got, up)
	}
}
