package wal

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/chaintable/chaintable/codec"
	"github.com/chaintable/chaintable/diskfs"
)

// Every field of a write comes back from the log, for the replay and for
// a successor's delta: a del's outcome, the client's window, the expiry
// point, the epoch.
func TestReadFromKeepsEveryField(t *testing.T) {
	w, err := Create(diskfs.NewMem(), "/log", 1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := &codec.WriteT{Seq: 1, Op: codec.OpDel, Key: "k", Value: []byte("v"), ClientId: 3, RequestId: 4,
		Found: true, FirstUnacked: 2, ExpireSeq: 7, Epoch: 1 << 40}
	if err := w.Append([]*codec.WriteT{want}); err != nil {
		t.Fatal(err)
	}
	r, err := w.ReadFrom(1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Next()
	if err != nil || !proto.Equal(got, want) {
		t.Errorf("ReadFrom(1).Next() = %v, %v; want %v", got, err, want)
	}
}
