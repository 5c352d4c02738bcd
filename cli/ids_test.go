package cli

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chaintable/chaintable/codec"
)

func written(op codec.MessageT_Opcode) *codec.MessageT {
	return &codec.MessageT{Opcode: op + 1, CType: codec.CtNone}
}

func refused(st codec.Status) *codec.MessageT {
	return &codec.MessageT{Opcode: codec.OpError, CType: codec.CtNone, Status: st}
}

// TestClientNumbersWritesInSendOrder runs many goroutines on one Client
// against a server that checks what a chain's head relies on: on each
// connection request ids arrive in increasing order, each within the
// window above the first_unacked it comes with, and first_unacked never
// goes back.
func TestClientNumbersWritesInSendOrder(t *testing.T) {
	var mu sync.Mutex
	var bad []string
	seen := map[uint64]bool{}
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		var last, first uint64
		for n := 0; ; n++ {
			req := read()
			if req == nil {
				return
			}
			mu.Lock()
			id, f := req.GetRequestId(), req.GetFirstUnacked()
			switch {
			case id <= last, f < first, f > id, id >= f+codec.DedupWindow, seen[id]:
				bad = append(bad, req.String())
			}
			seen[id] = true
			last, first = id, f
			mu.Unlock()
			if n%7 == 0 {
				time.Sleep(time.Millisecond) // replies come late now and then
			}
			write(written(req.GetOpcode()))
		}
	})
	c, err := Dial(context.Background(), Direct(addr), Options{RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 200 {
		wg.Go(func() {
			for i := range 5 {
				if err := c.Put(context.Background(), "k", []byte{byte(g), byte(i)}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("put failed: %v", err)
	}
	if len(bad) > 0 || len(seen) != 1000 {
		t.Fatalf("%d distinct ids; out of order or out of the window: %v", len(seen), bad)
	}
}

// TestClientWindowWaitsForAStuckWrite shows that a write that is not
// answered holds the window: no id goes DedupWindow or more beyond it,
// and the writes after it wait rather than fail.
func TestClientWindowWaitsForAStuckWrite(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var highest uint64
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		// Replies go in request order: holding the first holds them all,
		// and the client's window fills.
		reqs := make(chan *codec.MessageT, 1000)
		var wg sync.WaitGroup
		defer wg.Wait()
		defer close(reqs)
		wg.Go(func() {
			for req := range reqs {
				<-release
				write(written(req.GetOpcode()))
			}
		})
		for req := read(); req != nil; req = read() {
			mu.Lock()
			highest = max(highest, req.GetRequestId())
			mu.Unlock()
			reqs <- req
		}
	})
	c, err := Dial(context.Background(), Direct(addr), Options{RetryFor: 10 * time.Second, AttemptTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stuck := make(chan error, 1)
	go func() { stuck <- c.Put(context.Background(), "stuck", nil) }()
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 100)
	for range 100 {
		go func() { done <- c.Del(context.Background(), "k") }()
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	h := highest
	mu.Unlock()
	if h != codec.DedupWindow {
		t.Errorf("with write 1 unanswered the client sent up to id %d, want %d", h, codec.DedupWindow)
	}
	close(release)
	if err := <-stuck; err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestClientCloseEndsRetries shows that Close fails every request in
// flight at once, however long they could still retry, and leaves no
// goroutine behind.
func TestClientCloseEndsRetries(t *testing.T) {
	// The fake server goes on accepting until the test ends.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), goleak.IgnoreAnyFunction("github.com/chaintable/chaintable/cli.fakeServer.func2"))
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		for req := read(); req != nil; req = read() {
			write(refused(codec.Status_STATUS_UNAVAILABLE))
		}
	})
	c, err := Dial(context.Background(), Direct(addr), Options{RetryFor: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			if i%2 == 0 {
				errs <- c.Put(context.Background(), "k", nil)
			} else {
				_, err := c.Get(context.Background(), "k")
				errs <- err
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	c.Close()
	for range 40 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("request in flight at Close: %v, want ErrClosed", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("requests ended %v after Close", d)
	}
}

// TestClientRenewsExpiredIDs: when the servers forgot the client (it was
// idle longer than their expiry), a write sent for the first time goes
// again under a new client id; one that may have been applied before is
// the caller's error.
func TestClientRenewsExpiredIDs(t *testing.T) {
	var mu sync.Mutex
	var got []*codec.MessageT
	addr := fakeServer(t, func(read func() *codec.MessageT, write func(*codec.MessageT)) {
		for req := read(); req != nil; req = read() {
			mu.Lock()
			got = append(got, req)
			n := len(got)
			mu.Unlock()
			switch {
			case req.GetKey() == "retried" && n == 3:
				write(refused(codec.Status_STATUS_UNAVAILABLE))
			case n == 1, req.GetKey() == "retried":
				write(refused(codec.Status_STATUS_SESSION_EXPIRED))
			default:
				write(written(req.GetOpcode()))
			}
		}
	})
	c, err := Dial(context.Background(), Direct(addr), Options{RetryFor: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Del(context.Background(), "first"); err != nil {
		t.Fatalf("a write refused for an expired client on its first send: %v, want it sent again and answered", err)
	}
	if len(got) != 2 || got[1].GetClientId() == got[0].GetClientId() || got[1].GetRequestId() != 1 || got[1].GetFirstUnacked() != 1 {
		t.Fatalf("requests %v; want the second under a new client id, from 1", got)
	}
	var se *ServerError
	if err := c.Del(context.Background(), "retried"); !errors.As(err, &se) || se.Status != codec.Status_STATUS_SESSION_EXPIRED {
		t.Fatalf("a retried write refused for an expired client: %v, want SESSION_EXPIRED", err)
	}
}
