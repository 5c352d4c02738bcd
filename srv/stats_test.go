package srv

import (
	"strconv"
	"testing"
	"time"

	"github.com/chaintable/chaintable/codec"
)

func TestStatsCountRequestsByOutcome(t *testing.T) {
	s, _ := startStore(t, Config{})
	w := dial(t, s.Addr())
	type want struct {
		op     codec.MessageT_Opcode
		status codec.Status
	}
	tests := []struct {
		frame []byte
		want  want
	}{
		{mustFrame(codec.PutRequest("k", []byte("v"))), want{codec.OpPut, codec.Status_STATUS_OK}},
		{mustFrame(&codec.MessageT{Opcode: codec.OpPut, CType: codec.CtEntry, Entry: &codec.EntryT{Key: "k2", Value: []byte("v")}}), want{codec.OpPut, codec.Status_STATUS_OK}},
		{mustFrame(codec.GetRequest("k")), want{codec.OpGet, codec.Status_STATUS_OK}},
		{mustFrame(codec.GetRequest("missing")), want{codec.OpGet, codec.Status_STATUS_NOT_FOUND}},
		{mustFrame(codec.DelRequest("missing")), want{codec.OpDel, codec.Status_STATUS_NOT_FOUND}},
		{mustFrame(codec.DelRequest("k2")), want{codec.OpDel, codec.Status_STATUS_OK}},
		{mustFrame(codec.Request(codec.OpSize)), want{codec.OpSize, codec.Status_STATUS_OK}},
		{mustFrame(codec.Request(codec.OpGetKeys)), want{codec.OpGetKeys, codec.Status_STATUS_OK}},
		{mustFrame(codec.Request(codec.OpGetTable)), want{codec.OpGetTable, codec.Status_STATUS_OK}},
		{mustFrame(codec.Request(codec.OpStats)), want{codec.OpStats, codec.Status_STATUS_OK}},
		{mustFrame(&codec.MessageT{Opcode: codec.OpSize, CType: codec.CtEntry}), want{codec.OpSize, codec.Status_STATUS_BAD_REQUEST}},
		{mustFrame(&codec.MessageT{Opcode: 1234, CType: codec.CtNone}), want{codec.MessageT_OP_BAD, codec.Status_STATUS_BAD_REQUEST}},
		{codec.AppendFrame(nil, []byte{0xff, 0xff, 0xff}), want{codec.MessageT_OP_BAD, codec.Status_STATUS_BAD_REQUEST}},
	}
	var expect [len(RequestOps)][NumStatuses]uint64
	for _, tt := range tests {
		w.sendRaw(tt.frame)
		w.recv()
		expect[opRow(tt.want.op)][tt.want.status]++
	}
	if got := s.cfg.Stats.Requests(); got != expect {
		t.Errorf("requests counted:\n%v\nwant:\n%v", got, expect)
	}
	if got := s.cfg.Stats.OpTime(); sum(got.Counts[:]) != 9 {
		t.Errorf("table operations timed: %d, want 9 (every table request but stats)", sum(got.Counts[:]))
	}
}

func sum(xs []uint64) uint64 {
	var n uint64
	for _, x := range xs {
		n += x
	}
	return n
}

// TestStatsCountCloseReasons provokes each way a connection closes and
// checks that it is counted under its reason, and under no other.
func TestStatsCountCloseReasons(t *testing.T) {
	tests := []struct {
		reason  CloseReason
		cfg     Config
		provoke func(t *testing.T, s *Server, store *Store)
	}{
		{CloseByPeer, Config{}, func(t *testing.T, s *Server, _ *Store) {
			w := dial(t, s.Addr())
			w.do(codec.Request(codec.OpSize))
			w.conn.Close()
		}},
		{CloseIdle, Config{IdleTimeout: 200 * time.Millisecond}, func(t *testing.T, s *Server, _ *Store) {
			if !closedSoon(dial(t, s.Addr())) {
				t.Fatal("idle connection left open")
			}
		}},
		{CloseUnread, Config{MaxOutbound: 1 << 20, ReplyBudget: 8 << 20, SendBuffer: 64 << 10}, func(t *testing.T, s *Server, store *Store) {
			store.Table.Put("big", make([]byte, 64<<10))
			w := dial(t, s.Addr())
			var batch []byte
			for range 64 { // 4 MiB of replies, none read
				batch = append(batch, mustFrame(codec.GetRequest("big"))...)
			}
			w.sendRaw(batch)
			if !closedSoon(w) {
				t.Fatal("a client that does not read was kept")
			}
		}},
		{CloseBadFrame, Config{MaxFrame: 1024}, func(t *testing.T, s *Server, _ *Store) {
			w := dial(t, s.Addr())
			w.sendRaw([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // declares 4 GiB
			if !closedSoon(w) {
				t.Fatal("connection left open after a 4 GiB frame header")
			}
		}},
		{CloseOverLimit, Config{MaxConns: 1}, func(t *testing.T, s *Server, _ *Store) {
			w := dial(t, s.Addr())
			w.do(codec.Request(codec.OpSize))
			if !closedSoon(dial(t, s.Addr())) {
				t.Fatal("a second connection stayed open with MaxConns 1")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.reason.String(), func(t *testing.T) {
			s, store := startStore(t, tt.cfg)
			tt.provoke(t, s, store)
			var closed [numCloseReasons]uint64
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if _, closed = store.Stats.Connections(); closed[tt.reason] > 0 {
					break
				}
			}
			var want [numCloseReasons]uint64
			want[tt.reason] = 1
			if closed != want {
				t.Errorf("closed by reason %v, want %v", closed, want)
			}
			if opened, _ := store.Stats.Connections(); opened == 0 {
				t.Error("no connection counted as opened")
			}
		})
	}
}

// BenchmarkStoreGet and BenchmarkStorePut measure the get and write paths
// without the network, from both CPUs at once over keys spread across
// the stripes, so that what the statistics cost them (atomic additions
// to counters both CPUs share) shows.
func BenchmarkStoreGet(b *testing.B) {
	store, _ := NewStore(16)
	keys := benchKeys()
	for _, k := range keys {
		store.Table.Put(string(k), make([]byte, 32))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var dst []byte
		for i := 0; pb.Next(); i++ {
			dst = store.AppendGet(dst[:0], keys[i%len(keys)])
		}
	})
}

func BenchmarkStorePut(b *testing.B) {
	store, _ := NewStore(16)
	keys := benchKeys()
	value := make([]byte, 32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c := new(Conn)
		w := &codec.WriteRequest{Op: codec.OpPut, Value: value}
		for i := 0; pb.Next(); i++ {
			w.Key = keys[i%len(keys)]
			store.ServeWrite(c, w)
			c.out, c.answers = c.out[:0], 0
		}
	})
}

func benchKeys() [][]byte {
	keys := make([][]byte, 1024)
	for i := range keys {
		keys[i] = []byte("key:" + strconv.Itoa(i))
	}
	return keys
}

// TestStatsRecordOps checks that a batch of operations adds up exactly,
// and that the histogram counts each at the batch's mean.
func TestStatsRecordOps(t *testing.T) {
	var s Stats
	s.RecordOps(4, 4000*time.Nanosecond)
	s.RecordOps(1, -time.Second) // a clock that went back counts as 0
	s.RecordOps(0, time.Second)  // no operations: nothing
	ops, micros, _ := s.Snapshot()
	if ops != 5 || micros != 4 {
		t.Errorf("ops, micros = %d, %d; want 5, 4", ops, micros)
	}
	got := s.OpTime()
	if got.Counts[10] != 4 || got.Counts[0] != 1 || sum(got.Counts[:]) != 5 || got.Sum != 4000 {
		t.Errorf("histogram = %v, want 4 in bucket 10 (1000 ns each, below 2^10), 1 in bucket 0, sum 4000", got)
	}
}
