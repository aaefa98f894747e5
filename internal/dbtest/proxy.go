package dbtest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a real server, and can cut it off the
// way a failing machine would: Stop refuses and drops connections, Hang
// accepts them but never answers. It lets a test take one database node away
// from cellar without stopping the shared server other tests use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // accept loop and forwarders

	mu        sync.Mutex // protects conns, hung, stopped, swallowed
	conns     map[net.Conn]struct{}
	hung      bool
	stopped   bool
	swallowed int64 // bytes received while hung
}

// NewProxy listens on a free loopback port and forwards to target. It is
// stopped when tb ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Stop)
	return p
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[c] = struct{}{}
		hung := p.hung
		p.mu.Unlock()
		if hung {
			continue // hold the connection open and say nothing
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[up] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hung := p.hung
			p.mu.Unlock()
			if hung {
				// Swallow traffic: the peer waits forever.
				p.mu.Lock()
				p.swallowed += int64(n)
				p.mu.Unlock()
				continue
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if err != io.EOF {
				break
			}
			break
		}
	}
	dst.Close()
	src.Close()
}

// Hang makes the proxy stop answering: open connections go silent and new
// ones are accepted but never served.
func (p *Proxy) Hang() {
	p.mu.Lock()
	p.hung = true
	p.mu.Unlock()
}

// Swallowed returns how many bytes arrived while the proxy was hung: a
// test can wait for it to know a request reached the node.
func (p *Proxy) Swallowed() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.swallowed
}

// Stop closes the listener and every connection: the node is gone.
func (p *Proxy) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
