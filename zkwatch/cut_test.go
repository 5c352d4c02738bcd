package zkwatch

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// ZooKeeper's opcodes for the requests the tests make the cutter lose.
const (
	opCreate = 1
	opDelete = 2
)

// cutter forwards ZooKeeper client connections to a real ZooKeeper and
// cuts the connection in the middle of a call, as a failing network would:
// armed with an opcode, it either forwards the next request of that kind
// and drops ZooKeeper's answer to it (the request took effect, and the
// client does not know it), or drops the request itself; then it closes the
// connection.
type cutter struct {
	t        *testing.T
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu    sync.Mutex
	armed map[int32]cut // opcode -> what to lose
	cuts  int           // calls cut so far
	conns map[net.Conn]bool
}

func newCutter(t *testing.T, upstream string) *cutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &cutter{t: t, ln: ln, upstream: upstream, armed: map[int32]cut{}, conns: map[net.Conn]bool{}}
	k.wg.Add(1)
	go k.serve()
	t.Cleanup(k.close)
	return k
}

func (k *cutter) addr() string { return k.ln.Addr().String() }

// cut tells what the cutter loses of the next request of an opcode.
type cut int

const (
	loseAnswer  cut = iota + 1 // ZooKeeper's answer
	loseRequest                // the request itself
)

// arm makes the cutter cut the next request of opcode op.
func (k *cutter) arm(op int32, what cut) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.armed[op] = what
}

// lost returns how many calls the cutter has cut.
func (k *cutter) lost() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cuts
}

func (k *cutter) close() {
	k.ln.Close()
	k.mu.Lock()
	for c := range k.conns {
		c.Close()
	}
	k.mu.Unlock()
	k.wg.Wait()
}

func (k *cutter) serve() {
	defer k.wg.Done()
	for {
		client, err := k.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", k.upstream)
		if err != nil {
			client.Close()
			continue
		}
		k.mu.Lock()
		k.conns[client], k.conns[server] = true, true
		k.mu.Unlock()
		k.wg.Add(2)
		var cutXid sync.Map // xids whose answers to lose
		go k.pipe(client, server, func(frame []byte) bool {
			// A request: length, xid, opcode, body.
			if len(frame) < 12 {
				return true
			}
			xid, op := int32(binary.BigEndian.Uint32(frame[4:])), int32(binary.BigEndian.Uint32(frame[8:]))
			k.mu.Lock()
			defer k.mu.Unlock()
			switch k.armed[op] {
			case loseAnswer:
				cutXid.Store(xid, true)
			case loseRequest:
				k.cuts++
				delete(k.armed, op)
				return false
			}
			delete(k.armed, op)
			return true
		})
		go k.pipe(server, client, func(frame []byte) bool {
			// An answer: length, xid, zxid, error, body.
			if len(frame) < 8 {
				return true
			}
			if _, cut := cutXid.Load(int32(binary.BigEndian.Uint32(frame[4:]))); cut {
				k.mu.Lock()
				k.cuts++
				k.mu.Unlock()
				return false
			}
			return true
		})
	}
}

// pipe copies length-prefixed frames from src to dst while pass lets them
// through; the first frame, the handshake, always passes. It closes both
// connections when it stops.
func (k *cutter) pipe(src, dst net.Conn, pass func(frame []byte) bool) {
	defer k.wg.Done()
	defer func() {
		src.Close()
		dst.Close()
	}()
	for first := true; ; first = false {
		var head [4]byte
		if _, err := io.ReadFull(src, head[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(head[:])
		if n > 1<<20 {
			k.t.Errorf("cutter: frame of %d bytes", n)
			return
		}
		frame := make([]byte, 4+n)
		copy(frame, head[:])
		if _, err := io.ReadFull(src, frame[4:]); err != nil {
			return
		}
		if !first && !pass(frame) {
			return
		}
		if _, err := dst.Write(frame); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				k.t.Logf("cutter: %v", err)
			}
			return
		}
	}
}
