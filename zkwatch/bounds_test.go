package zkwatch

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/chaintable/chaintable/internal/netfault"
	"github.com/chaintable/chaintable/internal/zktest"
)

// slack is what the bounds below allow for a busy machine running tests
// with -race.
const slack = 1500 * time.Millisecond

// within runs f and fails the test if it takes longer than bound.
func within(t *testing.T, what string, bound time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		t.Logf("%s took %s (bound %s)", what, time.Since(start).Round(time.Millisecond), bound)
	case <-time.After(bound):
		t.Fatalf("%s still waiting after %s", what, bound)
	}
}

// Dial gives up when it said it would on a ZooKeeper that accepts
// connections and never answers, or on a peer that announces a huge
// handshake and stalls, and says what it saw.
func TestDialFrozenZooKeeper(t *testing.T) {
	srv := zktest.Start(t)
	frozen := netfault.NewProxy(t, "127.0.0.1:0", srv.Addr())
	frozen.Pause()

	// A peer that reads the connect request, announces a response of
	// 64 MiB, sends 4 bytes of it and stalls.
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
				buf := make([]byte, 512)
				c.Read(buf)
				c.Write([]byte{0x04, 0, 0, 0, 0, 0, 0, 0})
				io.Copy(io.Discard, c) // until the client hangs up
			}()
		}
	}()

	for _, tt := range []struct{ name, addr string }{{"frozen", frozen.Addr()}, {"stalling", ln.Addr().String()}} {
		t.Run(tt.name, func(t *testing.T) {
			const connect = 3 * time.Second
			var err error
			within(t, "Dial", connect+slack, func() {
				_, err = Dial(tt.addr, Options{SessionTimeout: 4 * time.Second, ConnectTimeout: connect, Logger: testLogger(t)})
			})
			want := "zkwatch: no session with ZooKeeper at " + tt.addr + " after 3s: it accepts connections but does not answer"
			if err == nil || err.Error() != want {
				t.Errorf("Dial: %v, want %q", err, want)
			}
		})
	}
}

// With ZooKeeper frozen mid-session, the session turns Disconnected, a
// request fails and Close returns, each within the bounds the README
// states.
func TestFrozenMidSession(t *testing.T) {
	srv := zktest.Start(t)
	p := netfault.NewProxy(t, "127.0.0.1:0", srv.Addr())
	const timeout = 3 * time.Second
	c, err := Dial(p.Addr(), Options{SessionTimeout: timeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Register(":9001")
	if err != nil {
		t.Fatal(err)
	}
	// Receive timeout: go-zookeeper's deadline for an answer.
	recv := timeout * 2 / 3
	p.Pause()
	frozen := time.Now()

	within(t, "a request to the frozen ZooKeeper", recv+slack, func() {
		if _, _, err := c.Record(); err == nil {
			t.Error("Record succeeded with ZooKeeper frozen")
		}
	})
	waitStatus(t, r, "disconnected", func(s Status) bool { return s.State != Connected })
	if d := time.Since(frozen); d > recv+slack {
		t.Errorf("disconnected %s after the freeze, bound %s", d, recv+slack)
	}
	// A request made while reconnecting waits for one attempt at most:
	// go-zookeeper's second between rounds and a handshake.
	within(t, "a request while reconnecting", time.Second+recv+slack, func() {
		if _, _, err := c.Record(); err == nil {
			t.Error("Record succeeded with ZooKeeper frozen")
		}
	})
	within(t, "Close", time.Second+slack, c.Close)
	if s := c.Session().State; s != Closed {
		t.Errorf("after Close the session is %v", s)
	}
}
