package srv

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// countReader is an AttachedReader that counts what it got and whether it
// was told the connection ended.
type countReader struct {
	bytes  atomic.Int64
	closed chan struct{}
	once   sync.Once
}

func newCountReader() *countReader { return &countReader{closed: make(chan struct{})} }

func (r *countReader) Traffic(_ *Pass, in []byte) (int, error) {
	r.bytes.Add(int64(len(in)))
	return len(in), nil
}

func (r *countReader) Closed(error) { r.once.Do(func() { close(r.closed) }) }

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

func atkFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// atkStart starts a store server that the test stops itself.
func atkStart(t *testing.T) *Server {
	t.Helper()
	store, err := NewStore(16)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Config{Addr: "127.0.0.1:0", Handler: store, Stats: store.Stats, EventLoops: 2,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func shut(c *net.TCPConn) {
	c.CloseRead()
	c.CloseWrite()
	c.Close()
}

// TestAttackAttachStopWhileAttaching stops the server while links are being
// attached to it: every attach must end (return), every reader that was
// attached must be told the end, and neither goroutines nor descriptors
// may be left once the caller shut its sockets down.
func TestAttackAttachStopWhileAttaching(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		// An idle worker of gnet's pool, waiting for its next task until it
		// expires; one stuck in an enrolment has enroll's closure on top.
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"))
	base := atkFDs(t)
	for round := 0; round < 30; round++ {
		s := atkStart(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var conns []*net.TCPConn
		var readers []*countReader
		var attachedOK []bool
		stop := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					a, b := tcpPair(t)
					r := newCountReader()
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					err := s.Attach(ctx, a, nil, r)
					cancel()
					mu.Lock()
					conns = append(conns, a, b)
					readers = append(readers, r)
					attachedOK = append(attachedOK, err == nil)
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		close(stop)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: an Attach did not return after Stop", round)
		}
		for i, r := range readers {
			if !attachedOK[i] {
				continue
			}
			select {
			case <-r.closed:
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: an attached reader was never told its connection ended after Stop", round)
			}
		}
		for _, c := range conns {
			shut(c)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for atkFDs(t) > base+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := atkFDs(t); n > base+2 {
		t.Errorf("descriptors: %d before, %d after all attaches ended and the server stopped", base, n)
	}
}

// TestAttackAttachPeerEnds: the attached reader hears of the peer closing,
// of the caller's shutdown, and reads nothing twice.
func TestAttackAttachPeerEnds(t *testing.T) {
	s, _ := startStore(t, Config{EventLoops: 2})
	for _, peerCloses := range []bool{true, false} {
		a, b := tcpPair(t)
		r := newCountReader()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := s.Attach(ctx, a, nil, r); err != nil {
			t.Fatal(err)
		}
		cancel()
		b.Write(make([]byte, 1000))
		deadline := time.Now().Add(5 * time.Second)
		for r.bytes.Load() < 1000 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := r.bytes.Load(); got != 1000 {
			t.Fatalf("read %d bytes, want 1000", got)
		}
		if peerCloses {
			b.Close()
		} else {
			shut(a)
		}
		select {
		case <-r.closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("peerCloses=%v: the reader was never told", peerCloses)
		}
		a.Close()
		b.Close()
	}
}
