package srv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

// TestAttackFastSenderThatReads: a client that pipelines small gets far
// ahead and reads every reply as fast as it can is paused while its
// reading falls behind by the budget, and is never closed, though gnet
// goes on reading a paused socket and the client runs megabytes ahead.
// A paused connection may hold only about ReplyBudget of requests from a
// client that does not read; one that reads (its TCP acknowledges replies,
// SIOCOUTQ) is served past that. Without that distinction it was closed
// as a client that sends and does not read after 1.5-4 million replies,
// and with the old limit (ReplyBudget + MaxFrame of requests) after 65 MiB
// of them. A 64 KiB budget, under the race detector (the slower server of
// a loaded machine).
func TestAttackFastSenderThatReads(t *testing.T) {
	s, store := startStore(t, Config{EventLoops: 1, ReplyBudget: 64 << 10})
	store.Table.Put("k", []byte("v"))
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(120 * time.Second))
	frame := mustFrame(codec.GetRequest("k"))
	batch := []byte(strings.Repeat(string(frame), (1<<20)/len(frame)))
	const rounds = 8 // MiB of requests
	total := rounds * (len(batch) / len(frame))
	var replies atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		r := bufio.NewReaderSize(nc, 1<<20)
		var m codec.MessageT
		for range total {
			if err := codec.ReadMessage(r, codec.DefaultMaxFrame, &m); err != nil {
				readErr <- fmt.Errorf("reply %d of %d: %w", replies.Load(), total, err)
				return
			}
			replies.Add(1)
		}
		readErr <- nil
	}()
	mem0 := memBytes()
	var peak uint64
	for range rounds {
		if _, err := nc.Write(batch); err != nil {
			_, closed := store.Stats.Connections()
			pauses, _, _ := store.Stats.Backpressure()
			t.Fatalf("a client that reads every reply as it comes: %v (after %d replies; closed by reason %v; paused %d times)", err, replies.Load(), closed, pauses)
		}
		peak = max(peak, memBytes())
	}
	for done := false; !done; {
		select {
		case err := <-readErr:
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			done = true
		case <-time.After(10 * time.Millisecond):
			peak = max(peak, memBytes())
		}
	}
	grew := int64(peak) - int64(mem0)
	t.Logf("sent %d MiB of requests, read all %d replies; server process grew by %d MiB at most", rounds, replies.Load(), grew>>20)
	if grew > 64<<20 {
		t.Fatalf("memory grew by %d MiB for one client that reads every reply (budget 64 KiB): undecoded requests pile up in gnet's inbound buffer", grew>>20)
	}
}

// TestAttackHugeReplyOverBudget: a get of a 16 MiB value, pipelined
// four times, against the default 1 MiB budget: each reply alone is
// over the budget, and the client, which reads them all, must get them
// all, in order.
func TestAttackHugeReplyOverBudget(t *testing.T) {
	s, store := startStore(t, Config{EventLoops: 1})
	value := []byte(strings.Repeat("0123456789abcdef", 1<<20)) // 16 MiB
	store.Table.Put("huge", value)
	store.Table.Put("small", []byte("s"))
	w := dial(t, s.Addr())
	var batch []byte
	for range 4 {
		batch = append(batch, mustFrame(codec.GetRequest("huge"))...)
		batch = append(batch, mustFrame(codec.GetRequest("small"))...)
	}
	w.sendRaw(batch)
	for i := range 8 {
		var m codec.MessageT
		if err := codec.ReadMessage(w.r, codec.DefaultMaxFrame, &m); err != nil {
			t.Fatalf("reply %d of 8: %v", i, err)
		}
		want := "s"
		if i%2 == 0 {
			want = string(value)
		}
		if m.Opcode != codec.OpGet+1 || string(m.Value) != want {
			t.Fatalf("reply %d: opcode %v, %d bytes of value, want %d", i, m.Opcode, len(m.Value), len(want))
		}
	}
}

// TestAttackPausedHogsHoldTheirRequests: the bound (the attack
// grows the server by less than 256 MiB) against hogs that, instead of a
// few KB of gettables, each pipeline 40 MiB of small gets and never read.
// gnet reads a paused socket on, so a paused connection may hold only
// ReplyBudget of requests (and a large one arriving) for longer than
// pauseGrace without its client reading. When it might hold ReplyBudget +
// MaxFrame (65 MiB by default), the server grew by 743-1114 MiB.
func TestAttackPausedHogsHoldTheirRequests(t *testing.T) {
	s, store := startStore(t, Config{EventLoops: 2, SendBuffer: 64 << 10})
	store.Table.Put("k", []byte(strings.Repeat("v", 1<<10)))
	batch := []byte(strings.Repeat(string(mustFrame(codec.GetRequest("k"))), (1<<20)/9))
	mem0 := memBytes()
	const hogs, mib = 8, 40
	conns := make([]*net.TCPConn, hogs)
	for i := range conns {
		conns[i] = dialSmallWindow(t, s.Addr())
		conns[i].SetDeadline(time.Now().Add(60 * time.Second))
	}
	sent := make(chan int, hogs)
	for _, c := range conns {
		go func() {
			n := 0
			for range mib {
				if _, err := c.Write(batch); err != nil {
					break
				}
				n++
			}
			sent <- n
		}()
	}
	var peak uint64
	var total int
	for range hogs {
		for waiting := true; waiting; {
			select {
			case n := <-sent:
				total += n
				waiting = false
			case <-time.After(10 * time.Millisecond):
				peak = max(peak, memBytes())
			}
		}
	}
	time.Sleep(200 * time.Millisecond) // the last bytes reach gnet's buffers
	peak = max(peak, memBytes())
	_, closed := store.Stats.Connections()
	pauses, pausedNow, held := store.Stats.Backpressure()
	grew := int64(peak) - int64(mem0)
	t.Logf("%d hogs sent %d MiB in all; server grew by %d MiB; paused %d times, %d now, holding %d MiB; closed for not reading: %d", hogs, total, grew>>20, pauses, pausedNow, held>>20, closed[CloseUnread])
	if grew > 256<<20 {
		t.Fatalf("%d clients that never read grew the server by %d MiB (issue 11: under 256 MiB), though each was paused: their undecoded requests are held", hogs, grew>>20)
	}
}
