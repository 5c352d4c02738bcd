package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// fakeServer accepts connections on a loopback port and runs serve on each,
// for the tests that need a server misbehaving in ways srv never does.
// serve reads requests with read and answers with write.
func fakeServer(t *testing.T, serve func(read func() *codec.MessageT, write func(*codec.MessageT))) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			// A small buffer makes a server that does not read push
			// back on the client at once, whatever the host's tuning.
			nc.(*net.TCPConn).SetReadBuffer(64 << 10)
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() {
				defer nc.Close()
				r := bufio.NewReader(nc)
				read := func() *codec.MessageT {
					m := new(codec.MessageT)
					if err := codec.ReadMessage(r, codec.DefaultMaxFrame, m); err != nil {
						return nil
					}
					return m
				}
				write := func(m *codec.MessageT) {
					frame, err := codec.AppendMessage(nil, m)
					if err != nil {
						panic(err)
					}
					nc.Write(frame)
				}
				serve(read, write)
			})
		}
	})
	return ln.Addr().String()
}

// echoGet is the reply to a get of key that a fake server gives: the key
// itself as the value, so a caller can tell whose reply it got.
func echoGet(key string) *codec.MessageT {
	return &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtValue, Value: []byte(key)}
}

func dialConn(t *testing.T, addr string) *Conn {
	t.Helper()
	c, err := DialConn(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConnPipelines shows that requests are in flight together: the server
// reads all of them before it answers any, which a client waiting for each
// reply before the next request would never let happen.
func TestConnPipelines(t *testing.T) {
	const n = 50
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		var reqs []*codec.MessageT
		for len(reqs) < n {
			req := read()
			if req == nil {
				return
			}
			reqs = append(reqs, req)
		}
		for _, req := range reqs {
			write(echoGet(req.GetKey()))
		}
	})
	c := dialConn(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprint("k", i)
			reply, err := c.Do(ctx, codec.GetRequest(key))
			if err != nil {
				t.Errorf("get %s: %v", key, err)
				return
			}
			if got := string(reply.GetValue()); got != key {
				t.Errorf("get %s: got the reply to get %s", key, got)
			}
		})
	}
	wg.Wait()
}

// TestConnConcurrent runs many goroutines over one connection to a real
// server; each must see its own writes. Run it with -race.
func TestConnConcurrent(t *testing.T) {
	c := dialClient(t, startServer(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				key, value := fmt.Sprint("g", g), fmt.Sprint("v", i)
				if err := c.Put(ctx, key, []byte(value)); err != nil {
					t.Errorf("put %s: %v", key, err)
					return
				}
				got, err := c.Get(ctx, key)
				if err != nil || string(got) != value {
					t.Errorf("get %s = %q, %v; want %q", key, got, err, value)
					return
				}
			}
		})
	}
	wg.Wait()
	if n, err := c.Size(ctx); err != nil || n != 16 {
		t.Errorf("size = %d, %v; want 16", n, err)
	}
	st, err := c.Stats(ctx)
	if err != nil || st.Clients != 1 {
		t.Errorf("stats = %+v, %v; want one client: all goroutines share a connection", st, err)
	}
}

func TestConnServerError(t *testing.T) {
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		for req := read(); req != nil; req = read() {
			if req.GetKey() == "missing" {
				write(codec.ErrorReply())
			} else {
				write(echoGet(req.GetKey()))
			}
		}
	})
	c := dialConn(t, addr)
	ctx := context.Background()
	if _, err := c.Do(ctx, codec.GetRequest("missing")); !errors.Is(err, ErrServer) {
		t.Fatalf("get missing: %v, want ErrServer", err)
	}
	// OP_ERROR is an answer like any other: the connection goes on.
	if reply, err := c.Do(ctx, codec.GetRequest("k")); err != nil || string(reply.GetValue()) != "k" {
		t.Fatalf("get k after OP_ERROR = %v, %v", reply, err)
	}
}

func TestConnProtocolError(t *testing.T) {
	tests := []struct {
		name  string
		reply *codec.MessageT // answer to a get
	}{
		{"wrong opcode", &codec.MessageT{Opcode: codec.OpPut + 1, CType: codec.CtNone}},
		{"wrong content type", &codec.MessageT{Opcode: codec.OpGet + 1, CType: codec.CtKeys}},
		{"error with content", &codec.MessageT{Opcode: codec.OpError, CType: codec.CtValue}},
		{"request echoed", codec.GetRequest("k")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
				for req := read(); req != nil; req = read() {
					write(tt.reply)
				}
			})
			c := dialConn(t, addr)
			ctx := context.Background()
			_, err := c.Do(ctx, codec.GetRequest("k"))
			if !errors.Is(err, ErrProtocol) || errors.Is(err, ErrServer) {
				t.Fatalf("get: %v, want ErrProtocol", err)
			}
			if _, err := c.Do(ctx, codec.GetRequest("k")); !errors.Is(err, ErrProtocol) {
				t.Fatalf("get after protocol error: %v, want the connection failed with ErrProtocol", err)
			}
		})
	}
}

func TestConnUnsolicitedReply(t *testing.T) {
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		write(echoGet("nobody asked"))
		read()
	})
	c := dialConn(t, addr)
	// Nothing is pending when the reply arrives, so the Conn must fail;
	// once it has, requests fail too.
	for deadline := time.Now().Add(10 * time.Second); !c.Broken(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Conn still works after a reply to no request")
		}
	}
	if _, err := c.Do(context.Background(), codec.GetRequest("k")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("get: %v, want ErrProtocol", err)
	}
}

// TestConnTimeout shows that a request whose context ends gives up, and
// that its late reply does not become the answer to the next request.
func TestConnTimeout(t *testing.T) {
	release := make(chan struct{})
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		slow := read()
		<-release
		write(echoGet(slow.GetKey()))
		for req := read(); req != nil; req = read() {
			write(echoGet(req.GetKey()))
		}
	})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before the server's cleanup waits for it
	c := dialConn(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Do(ctx, codec.GetRequest("slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("get slow: %v, want DeadlineExceeded", err)
	}
	releaseOnce()
	reply, err := c.Do(context.Background(), codec.GetRequest("next"))
	if err != nil || string(reply.GetValue()) != "next" {
		t.Fatalf("get next = %v, %v; want the reply to next", reply, err)
	}
}

// TestConnWriteTimeout shows that a write the server does not take in
// gives up with its context, and that the Conn, with part of a frame sent,
// is then unusable.
func TestConnWriteTimeout(t *testing.T) {
	stop := make(chan struct{})
	addr := fakeServer(t, func(func() *codec.MessageT, func(*codec.MessageT)) { <-stop })
	t.Cleanup(func() { close(stop) }) // before the server's cleanup waits for it
	c := dialConn(t, addr)
	c.nc.(*net.TCPConn).SetWriteBuffer(64 << 10)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	big := make([]byte, 8<<20) // far more than both socket buffers hold
	if _, err := c.Do(ctx, codec.PutRequest("k", big)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put: %v, want DeadlineExceeded", err)
	}
	if !c.Broken() {
		t.Fatal("Conn still works after a write cut short")
	}
}

func TestConnClose(t *testing.T) {
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		for read() != nil {
		}
	})
	c := dialConn(t, addr)
	done := make(chan error)
	go func() {
		_, err := c.Do(context.Background(), codec.GetRequest("k"))
		done <- err
	}()
	// Close while the get waits or before it is sent: both must fail it.
	c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("get during Close: %v, want ErrClosed", err)
	}
	if _, err := c.Do(context.Background(), codec.GetRequest("k")); !errors.Is(err, ErrClosed) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("get after Close: %v, want ErrClosed and ErrNotSent", err)
	}
}

func TestConnServerGone(t *testing.T) {
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		read() // and hang up without answering
	})
	c := dialConn(t, addr)
	// The server read the first get: its failure must not say "not sent",
	// or a write like it would be sent again elsewhere.
	if _, err := c.Do(context.Background(), codec.GetRequest("k")); err == nil || errors.Is(err, ErrNotSent) {
		t.Fatalf("get answered by a server that hung up: %v, want a failure of a request sent", err)
	}
	if _, err := c.Do(context.Background(), codec.GetRequest("k")); !errors.Is(err, ErrNotSent) {
		t.Fatalf("get on the failed connection: %v, want ErrNotSent", err)
	}
}

func TestConnNotARequest(t *testing.T) {
	c := dialConn(t, fakeServer(t, func(func() *codec.MessageT, func(*codec.MessageT)) {}))
	if _, err := c.Do(context.Background(), codec.ErrorReply()); err == nil {
		t.Fatal("Do sent OP_ERROR as a request")
	}
}

// TestClientRedials shows that a Client replaces a connection that failed
// instead of failing every later request.
func TestClientRedials(t *testing.T) {
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		req := read()
		if req == nil {
			return
		}
		if req.GetKey() == "hangup" {
			return
		}
		write(echoGet(req.GetKey()))
	})
	c := dialClient(t, addr)
	ctx := context.Background()
	if _, err := c.Get(ctx, "hangup"); err == nil {
		t.Fatal("get hangup answered")
	}
	if v, err := c.Get(ctx, "k"); err != nil || string(v) != "k" {
		t.Fatalf("get after hangup = %q, %v; want a new connection to answer", v, err)
	}
}

func TestClientClosed(t *testing.T) {
	c := dialClient(t, startServer(t))
	c.Close()
	if _, err := c.Size(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("size after Close: %v, want ErrClosed", err)
	}
}

func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Dial(context.Background(), Direct(addr), Options{}); err == nil {
		t.Fatalf("Dial(%s) with nothing listening succeeded", addr)
	}
}
