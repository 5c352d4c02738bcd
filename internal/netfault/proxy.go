// Package netfault injects network faults between processes on loopback:
// a TCP Proxy that forwards connections to one of its upstreams and can
// reset them, refuse new ones, or silently stall them, as a partition
// would. Tests put one between a node and ZooKeeper, or in front of a
// node's port.
package netfault

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// proxyDialTimeout bounds the proxy's connection to an upstream.
const proxyDialTimeout = time.Second

// Proxy forwards TCP connections from a loopback address to one of its
// upstreams, and injects network faults into them: Block resets every
// connection and refuses new ones, Pause silently stops the bytes, and Heal
// undoes either.
//
// Its methods are safe for concurrent use.
type Proxy struct {
	ln        net.Listener
	upstreams []string
	wg        sync.WaitGroup

	mu      sync.Mutex
	next    int           // the upstream the next connection tries first
	blocked bool          // Block: connections are reset, new ones refused
	resumed chan struct{} // non-nil while paused; closed by Heal
	closed  bool
	conns   map[net.Conn]string // open connections; upstream ones map to the upstream's address
	counts  ProxyCounts
}

// ProxyCounts count what a Proxy did, for test logs.
type ProxyCounts struct {
	Accepted int // connections accepted
	Refused  int // connections closed at once: blocked, or no upstream reachable
	Reset    int // connections closed by Block
}

// NewProxy listens on listen (a loopback "host:port"; port 0 picks a free
// one) and forwards each connection to the first of upstreams that accepts
// it, trying them round-robin, as a ZooKeeper client goes through the
// members of an ensemble. It is closed when the test ends.
func NewProxy(tb testing.TB, listen string, upstreams ...string) *Proxy {
	tb.Helper()
	p, err := Listen(listen, upstreams...)
	if err != nil {
		tb.Fatalf("netfault: %v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Listen is NewProxy for callers that handle the error and the Close
// themselves, such as a harness that retries on another port.
func Listen(listen string, upstreams ...string) (*Proxy, error) {
	if len(upstreams) == 0 {
		return nil, fmt.Errorf("proxy on %s: no upstream", listen)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstreams: upstreams, conns: make(map[net.Conn]string)}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr returns the address the proxy listens on, to give clients instead
// of an upstream's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Upstreams returns the addresses the proxy forwards to.
func (p *Proxy) Upstreams() []string { return append([]string(nil), p.upstreams...) }

// Block closes every connection through the proxy and refuses new ones
// (it accepts them and closes them at once) until Heal: a partition that
// peers notice at once, as when a firewall answers with resets.
func (p *Proxy) Block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = true
	for c := range p.conns {
		c.Close()
		p.counts.Reset++
	}
}

// Pause stops forwarding until Heal without closing anything: connections,
// old and new, stay open but carry no byte, as when a network drops every
// packet and TCP keeps retransmitting. What was sent meanwhile arrives once
// the proxy is healed, unless a peer gave up on its connection before.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil {
		p.resumed = make(chan struct{})
	}
}

// Heal undoes Block and Pause: connections go through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blocked = false
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
}

// ConnectedTo returns the upstream of each connection open through the
// proxy, in no particular order: for a node's way to ZooKeeper, the
// ensemble member its session is on.
func (p *Proxy) ConnectedTo() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var addrs []string
	for _, up := range p.conns {
		if up != "" {
			addrs = append(addrs, up)
		}
	}
	return addrs
}

// Counts returns what the proxy did so far.
func (p *Proxy) Counts() ProxyCounts {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts
}

// Close stops the proxy, closes every connection through it and waits for
// its goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		p.counts.Accepted++
		p.mu.Unlock()
		if !p.track(c, "") {
			p.refuse(c)
			continue
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

// refuse closes a connection the proxy does not forward.
func (p *Proxy) refuse(c net.Conn) {
	c.Close()
	p.mu.Lock()
	p.counts.Refused++
	p.mu.Unlock()
}

// track adds c, connected to upstream (or "" for a client's connection),
// to the connections that Block closes. It reports false if the proxy is
// blocked or closed.
func (p *Proxy) track(c net.Conn, upstream string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.blocked || p.closed {
		return false
	}
	p.conns[c] = upstream
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// dial connects to the first upstream that accepts, starting with the one
// after the previous connection's first choice. The connection comes from
// 127.0.0.1, the host every node advertises, so that a node behind a
// proxy still sees its predecessor's links come from the predecessor's
// host.
func (p *Proxy) dial() (net.Conn, string, error) {
	p.mu.Lock()
	first := p.next
	p.next = (p.next + 1) % len(p.upstreams)
	p.mu.Unlock()
	d := net.Dialer{Timeout: proxyDialTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
	var errs []error
	for i := range p.upstreams {
		addr := p.upstreams[(first+i)%len(p.upstreams)]
		c, err := d.Dial("tcp", addr)
		if err == nil {
			return c, addr, nil
		}
		errs = append(errs, err)
	}
	return nil, "", fmt.Errorf("no upstream reachable: %w", errors.Join(errs...))
}

func (p *Proxy) forward(client net.Conn) {
	defer p.wg.Done()
	server, upstream, err := p.dial()
	if err != nil {
		p.untrack(client)
		p.mu.Lock()
		p.counts.Refused++
		p.mu.Unlock()
		return
	}
	if !p.track(server, upstream) {
		p.untrack(client, server)
		return
	}
	done := make(chan struct{})
	go func() {
		p.copy(server, client)
		p.untrack(client, server)
		close(done)
	}()
	p.copy(client, server)
	p.untrack(client, server)
	<-done
}

// copy forwards what src sends to dst until either fails, holding every
// chunk while the proxy is paused.
func (p *Proxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.flowing() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// flowing waits while the proxy is paused. It reports false once the proxy
// is blocked or closed, when the connection is being closed anyway.
func (p *Proxy) flowing() bool {
	for {
		p.mu.Lock()
		resumed, stop := p.resumed, p.blocked || p.closed
		p.mu.Unlock()
		if stop {
			return false
		}
		if resumed == nil {
			return true
		}
		<-resumed
	}
}
