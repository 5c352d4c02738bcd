package chain_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/internal/cluster"
)

// Exactly-once writes through real processes (issue 17): one Client shared
// by many goroutines, ids reused or set by hand on the wire, and retries
// after a long absence.

// TestE2EOneClientManyGoroutines puts from 200 goroutines through one
// Client, with no fault and with the head killed meanwhile: every put
// succeeds and reads back.
func TestE2EOneClientManyGoroutines(t *testing.T) {
	for _, killHead := range []bool{false, true} {
		t.Run(fmt.Sprintf("killHead=%v", killHead), func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Nodes: 3, Quiet: true})
			c.WaitTailServes(recoverTimeout)
			cl := c.Client()
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, 1000)
			for g := range 200 {
				wg.Go(func() {
					for i := range 5 {
						key := fmt.Sprintf("g%d:%d", g, i)
						if err := cl.Put(ctx, key, []byte(key)); err != nil {
							errs <- fmt.Errorf("put %s: %w", key, err)
						}
					}
				})
			}
			if killHead {
				time.Sleep(20 * time.Millisecond)
				head := c.At(0)
				t.Logf("killing %v, the head", head)
				head.Kill()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for g := range 200 {
				for i := range 5 {
					key := fmt.Sprintf("g%d:%d", g, i)
					if v, err := cl.Get(ctx, key); err != nil || string(v) != key {
						t.Fatalf("get %s = %q, %v; want the put's value", key, v, err)
					}
				}
			}
		})
	}
}

// wire sends one request on a connection of its own to addr, as a client
// that sets the exactly-once ids itself.
func wire(t *testing.T, addr string, req *codec.MessageT) (*codec.MessageT, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cn, err := cli.DialConn(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	return cn.Do(ctx, req)
}

// wireHead sends req to the head, again while the head is not ready, as
// a client that sets the ids itself retries.
func wireHead(t *testing.T, c *cluster.Cluster, req *codec.MessageT) (*codec.MessageT, error) {
	t.Helper()
	deadline := time.Now().Add(recoverTimeout)
	for {
		reply, err := wire(t, c.At(0).Addr, req)
		var se *cli.ServerError
		if !errors.As(err, &se) || time.Now().After(deadline) ||
			se.Status != codec.Status_STATUS_NOT_HEAD && se.Status != codec.Status_STATUS_UNAVAILABLE {
			return reply, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func withIDs(req *codec.MessageT, client, id, first uint64) *codec.MessageT {
	req.ClientId, req.RequestId, req.FirstUnacked = client, id, first
	return req
}

func wantStatus(t *testing.T, what string, err error, want codec.Status) {
	t.Helper()
	var se *cli.ServerError
	if !errors.As(err, &se) || se.Status != want {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

// TestE2EReusedIDRefused: a put reusing the ids of an earlier put of
// another key is refused, and not applied; so is request id 0.
func TestE2EReusedIDRefused(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Nodes: 2, Quiet: true})
	c.WaitTailServes(recoverTimeout)
	head := c.At(0).Addr
	if _, err := wire(t, head, withIDs(codec.PutRequest("reuse:1", []byte("a")), 77, 1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := wire(t, head, withIDs(codec.PutRequest("reuse:1", []byte("a")), 77, 1, 1)); err != nil {
		t.Fatalf("retry of the same put: %v", err)
	}
	_, err := wire(t, head, withIDs(codec.PutRequest("reuse:2", []byte("b")), 77, 1, 1))
	wantStatus(t, "a put of reuse:2 under the ids of reuse:1", err, codec.Status_STATUS_ID_REUSED)
	_, err = wire(t, head, withIDs(codec.DelRequest("reuse:1"), 78, 0, 0))
	wantStatus(t, "request id 0", err, codec.Status_STATUS_OUT_OF_WINDOW)
	cl := c.Client()
	if v, err := cl.Get(context.Background(), "reuse:2"); err == nil {
		t.Fatalf("reuse:2 = %q: the refused put was applied", v)
	}
	if v, err := cl.Get(context.Background(), "reuse:1"); err != nil || string(v) != "a" {
		t.Fatalf("reuse:1 = %q, %v; want a", v, err)
	}
}

// TestE2ERetryAfterLongAbsence: a client's put whose reply it never got,
// retried at a new head after many other clients' writes and seconds
// away, is answered with its outcome and not applied again. With records
// expiring after 6s, a client back later is refused with SESSION_EXPIRED,
// and a Client idle that long writes on under a new client id.
func TestE2ERetryAfterLongAbsence(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Nodes: 3, Quiet: true, Flags: []string{"--client-expiry", "6s"}})
	c.WaitTailServes(recoverTimeout)
	ctx := context.Background()
	cl := c.Client()
	idle := c.Client()
	if err := idle.Put(ctx, "idle", []byte("1")); err != nil {
		t.Fatal(err)
	}
	put := withIDs(codec.PutRequest("k", []byte("first")), 91, 1, 1)
	if _, err := wire(t, c.At(0).Addr, put); err != nil {
		t.Fatal(err)
	}
	if err := cl.Put(ctx, "k", []byte("later")); err != nil {
		t.Fatal(err)
	}
	// Many writes by others, for a second: records no longer expire by
	// other clients' traffic.
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for g := range 32 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				if err := cl.Put(ctx, fmt.Sprintf("other%d", g), []byte{byte(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	head := c.At(0)
	head.Kill()
	c.WaitGone(head, recoverTimeout)
	c.WaitTailServes(recoverTimeout)
	if _, err := wireHead(t, c, put); err != nil {
		t.Fatalf("retry at the new head: %v", err)
	}
	if v, err := cl.Get(ctx, "k"); err != nil || string(v) != "later" {
		t.Fatalf("k = %q, %v after the retry; want later: the retry was applied again", v, err)
	}

	// Past the expiry, as the head measures it between writes.
	for range 8 {
		time.Sleep(time.Second)
		if err := cl.Put(ctx, "tick", nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err := wireHead(t, c, withIDs(codec.PutRequest("k", []byte("second")), 91, 2, 2))
	wantStatus(t, "a client back after its records expired", err, codec.Status_STATUS_SESSION_EXPIRED)
	if err := idle.Put(ctx, "idle", []byte("2")); err != nil {
		t.Fatalf("a Client idle past the expiry: %v", err)
	}
	if v, err := cl.Get(ctx, "idle"); err != nil || string(v) != "2" {
		t.Fatalf("idle = %q, %v; want 2", v, err)
	}
}

// TestE2ESharedClientLinearizable runs the load as goroutines of one
// program sharing one Client, while the head is killed and the node added
// back: the history must be linearizable, and no write may fail.
func TestE2ESharedClientLinearizable(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Nodes: 3})
	c.WaitTailServes(recoverTimeout)
	l := cluster.StartLoad(t, c.ZKAddr(), cluster.LoadOptions{Clients: 16, Shared: true})
	h := l.History()
	time.Sleep(warmup)
	fault := h.Now()
	kill(func(c *cluster.Cluster) *cluster.Node { return c.At(0) })(t, c, l)
	n := c.Add()
	t.Logf("added %v", n)
	waitServingTail(t, c, n, -1)
	recovered := h.Now()
	time.Sleep(afterwards / 2)
	l.Stop()

	report(t, l, fault, recovered)
	for _, op := range h.Ops() {
		if op.Err != nil && op.Input.Kind != cluster.Get {
			t.Errorf("client %d: %v %q failed: %v", op.Client, op.Input.Kind, op.Input.Key, op.Err)
		}
	}
	c.WaitTailServes(recoverTimeout)
	final := l.ReadFinal()
	cluster.CheckFinal(t, h, final)
	cluster.CheckLinearizable(t, h, c.Dir())
}
