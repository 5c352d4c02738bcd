package chain_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/chaintable/chaintable/cli"
	"github.com/chaintable/chaintable/internal/cluster"
)

// TestE2ELargeValues puts values on both sides of the framing boundaries,
// up to 16 MB, through a chain of three, and reads each back byte-exact:
// first one at a time, then six 16 MB values while the middle node is
// frozen, so that they wait at the head together, 96 MB, more than a node
// takes in one frame; then through a node that joins and gets them in
// its snapshot.
func TestE2ELargeValues(t *testing.T) {
	// Long sessions: the middle node is frozen for a while, not dropped.
	c := cluster.Start(t, cluster.Options{Nodes: 3, SessionTimeout: 20 * time.Second})
	c.WaitTailServes(recoverTimeout)
	cl := c.ClientWith(cli.Options{RetryFor: 20 * time.Second, AttemptTimeout: 10 * time.Second})
	ctx := context.Background()

	values := map[string][]byte{}
	value := func(key string, n int) []byte {
		// A block of prime length repeated: no two nearby offsets alike.
		block := make([]byte, 251)
		for i := range block {
			block[i] = byte(i*7 + len(values))
		}
		v := bytes.Repeat(block, n/len(block)+1)[:n]
		values[key] = v
		return v
	}
	for _, n := range []int{0, 65534, 65535, 65536, 16 << 20} {
		key := fmt.Sprint("size-", n)
		if err := cl.Put(ctx, key, value(key, n)); err != nil {
			t.Fatalf("put of %d bytes: %v", n, err)
		}
		got, err := cl.Get(ctx, key)
		if err != nil || !bytes.Equal(got, values[key]) {
			t.Fatalf("get of %d bytes: %d bytes back, equal %v, err %v", n, len(got), bytes.Equal(got, values[key]), err)
		}
	}

	errs := make([]error, 6)
	var big [][]byte
	for i := range errs {
		big = append(big, value(fmt.Sprint("together-", i), 16<<20))
	}
	head, err := cli.Dial(ctx, cli.Direct(c.At(0).Addr), cli.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer head.Close()
	before, err := head.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	middle := c.At(1)
	middle.Stop()
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = cl.Put(ctx, fmt.Sprint("together-", i), big[i]) })
	}
	// The head applies a write as it takes it, before it sends it on.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := head.Stats(ctx)
		if err != nil {
			t.Fatalf("stats of the head: %v", err)
		}
		if st.Ops >= before.Ops+len(errs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the head took %d of %d puts in 20s", st.Ops-before.Ops, len(errs))
		}
	}
	middle.Cont()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent put %d of 16 MB: %v", i, err)
		}
	}
	checkValues(t, cl, values)

	n := c.Add()
	waitServingTail(t, c, n, -1)
	checkValues(t, cl, values)
}

// checkValues reads every key of want through cl and compares the bytes.
func checkValues(t *testing.T, cl *cli.Client, want map[string][]byte) {
	t.Helper()
	for key, v := range want {
		got, err := cl.Get(context.Background(), key)
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("get %s: %d bytes back of %d, equal %v, err %v", key, len(got), len(v), bytes.Equal(got, v), err)
		}
	}
}
