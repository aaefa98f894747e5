// Package loadgen is the lean HTTP/1.1 load generator of cellar's
// benchmarks, in the manner of wrk: each worker owns one keep-alive
// connection, writes a request it has built itself, and reads the
// response's status line, headers and body without decoding the JSON.
//
// On a machine that the load generator shares with the server and the
// database, every microsecond the generator spends is taken from them; a
// general-purpose client (net/http's Transport with its two goroutines per
// connection, and a JSON decoder) costs about as much CPU per request as
// the server does. A benchmark of a server measures the server, so its
// headline figures use this generator, and the Go client's figures are
// reported beside them.
//
// It does not pipeline: a Conn has one request in flight at a time.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Conn is one keep-alive HTTP/1.1 connection to a server. It connects on
// first use and again after the server closes it or a request fails. A
// Conn is not safe for concurrent use: each worker has its own.
type Conn struct {
	addr     string
	conn     net.Conn
	br       *bufio.Reader
	deadline time.Time // set on conn
	body     []byte    // the last response's body; reused
}

// NewConn returns a Conn to the server at addr ("host:port"). It connects
// on the first Do.
func NewConn(addr string) *Conn {
	return &Conn{addr: addr}
}

// Close closes the connection, if open.
func (c *Conn) Close() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.br = nil, nil
	return err
}

// maxBody bounds a response body, so that a broken server cannot make the
// generator allocate without limit.
const maxBody = 256 << 20

// Do writes req, a complete HTTP/1.1 request such as AppendRequest builds,
// and reads the response. It returns the status code and the body, which
// stays valid until the next call. ctx's deadline, if any, bounds the
// exchange (it is set on the connection, which costs a timer update only
// when it changes); a failed exchange closes the connection, and the next
// call connects again.
//
// Responses must carry a Content-Length: the cellar server always sends
// one for its JSON answers, and reading chunked bodies is work the
// generator has no need of.
func (c *Conn) Do(ctx context.Context, req []byte) (status int, body []byte, err error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	if c.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, nil, err
		}
		c.conn, c.br, c.deadline = conn, bufio.NewReaderSize(conn, 16<<10), time.Time{}
	}
	if dl, _ := ctx.Deadline(); !dl.Equal(c.deadline) {
		if err := c.conn.SetDeadline(dl); err != nil {
			c.Close()
			return 0, nil, err
		}
		c.deadline = dl
	}
	status, body, keep, err := c.exchange(req)
	if err != nil || !keep {
		c.Close()
	}
	return status, body, err
}

func (c *Conn) exchange(req []byte) (status int, body []byte, keep bool, err error) {
	if _, err := c.conn.Write(req); err != nil {
		return 0, nil, false, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, fmt.Errorf("read status line: %w", err)
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("bad status line %q", line)
	}
	keep = line[7] == '1' // HTTP/1.1 keeps the connection by default
	length := -1
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, fmt.Errorf("read header: %w", err)
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, nil, false, fmt.Errorf("bad header line %q", h)
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 || n > maxBody {
				return 0, nil, false, fmt.Errorf("bad Content-Length %q", value)
			}
			length = n
		case asciiEqualFold(name, "Transfer-Encoding"):
			return 0, nil, false, fmt.Errorf("response has Transfer-Encoding %q; loadgen reads only Content-Length bodies", value)
		case asciiEqualFold(name, "Connection"):
			if asciiEqualFold(value, "close") {
				keep = false
			}
		}
	}
	if length < 0 {
		return 0, nil, false, errors.New("response has no Content-Length")
	}
	if cap(c.body) < length {
		c.body = make([]byte, length)
	}
	c.body = c.body[:length]
	if _, err := io.ReadFull(c.br, c.body); err != nil {
		return 0, nil, false, fmt.Errorf("read body: %w", err)
	}
	return status, c.body, keep, nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// AppendRequest appends to dst an HTTP/1.1 request for target (a path and
// query, already escaped) on host, with body as application/json if body
// is not nil, and returns the extended buffer.
func AppendRequest(dst []byte, method, host, target string, body []byte) []byte {
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, target...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	if body != nil {
		dst = append(dst, "\r\nContent-Type: application/json\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
	}
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, body...)
}

// CheckJSON returns an error unless status is want and body looks like a
// JSON object: the checks the generator makes of every response, in place
// of decoding it.
func CheckJSON(status, want int, body []byte) error {
	if status != want {
		return fmt.Errorf("status %d, want %d: %s", status, want, truncate(body, 200))
	}
	if len(body) == 0 || body[0] != '{' {
		return fmt.Errorf("status %d with a body that is not a JSON object: %q", status, truncate(body, 200))
	}
	return nil
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return b[:n]
}
