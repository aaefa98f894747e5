package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers with the request's method, path and body in a JSON object,
// and with the status a "status" query parameter asks for.
func echo(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read request body: %v", err)
		}
		status := http.StatusOK
		switch r.URL.Query().Get("status") {
		case "404":
			status = http.StatusNotFound
		case "close":
			w.Header().Set("Connection", "close")
		case "chunked":
			w.WriteHeader(status)
			w.(http.Flusher).Flush() // forces chunked encoding
			io.WriteString(w, "{}")
			return
		}
		out := `{"method":"` + r.Method + `","path":"` + r.URL.EscapedPath() + `","type":"` + r.Header.Get("Content-Type") + `","body":"` + string(body) + `"}`
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, out)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func TestDo(t *testing.T) {
	srv, conns := echo(t)
	addr := srv.Listener.Addr().String()
	c := NewConn(addr)
	defer c.Close()
	ctx := context.Background()

	for i := range 3 {
		status, body, err := c.Do(ctx, AppendRequest(nil, "GET", addr, "/v1/cells/a%2Fb/c", nil))
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		if want := `{"method":"GET","path":"/v1/cells/a%2Fb/c","type":"","body":""}`; status != 200 || string(body) != want {
			t.Errorf("GET %d = %d %s; want 200 %s", i, status, body, want)
		}
	}
	status, body, err := c.Do(ctx, AppendRequest(nil, "PUT", addr, "/x", []byte("[1]")))
	if want := `{"method":"PUT","path":"/x","type":"application/json","body":"[1]"}`; err != nil || status != 200 || string(body) != want {
		t.Errorf("PUT = %d %s, %v; want 200 %s", status, body, err, want)
	}
	status, body, err = c.Do(ctx, AppendRequest(nil, "GET", addr, "/?status=404", nil))
	if err != nil || status != 404 || CheckJSON(status, 200, body) == nil || CheckJSON(status, 404, body) != nil {
		t.Errorf("GET 404 = %d %s, %v", status, body, err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 requests; want 1 (keep-alive)", n)
	}

	// The server closes: the next request connects again.
	if status, _, err := c.Do(ctx, AppendRequest(nil, "GET", addr, "/?status=close", nil)); err != nil || status != 200 {
		t.Errorf("GET with Connection: close = %d, %v", status, err)
	}
	if status, _, err := c.Do(ctx, AppendRequest(nil, "GET", addr, "/", nil)); err != nil || status != 200 {
		t.Errorf("GET after close = %d, %v", status, err)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections; want 2", n)
	}

	// A chunked response is refused, and the connection given up.
	if _, _, err := c.Do(ctx, AppendRequest(nil, "GET", addr, "/?status=chunked", nil)); err == nil || !strings.Contains(err.Error(), "Transfer-Encoding") {
		t.Errorf("chunked response: err = %v; want a Transfer-Encoding error", err)
	}
	if status, _, err := c.Do(ctx, AppendRequest(nil, "GET", addr, "/", nil)); err != nil || status != 200 {
		t.Errorf("GET after a failure = %d, %v", status, err)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections; want 3", n)
	}
}

func TestDoDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accepts and never answers
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c := NewConn(ln.Addr().String())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := c.Do(ctx, AppendRequest(nil, "GET", "x", "/", nil)); err == nil {
		t.Fatal("Do on a server that never answers succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Do returned after %v; want about the 100ms deadline", d)
	}
	if _, _, err := c.Do(ctx, nil); err == nil {
		t.Error("Do with an expired context succeeded")
	}
}

func TestAppendRequest(t *testing.T) {
	got := AppendRequest([]byte("x"), "POST", "h:1", "/a?b=c", []byte(`{"by":1}`))
	want := "xPOST /a?b=c HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"by\":1}"
	if string(got) != want {
		t.Errorf("AppendRequest = %q; want %q", got, want)
	}
	got = AppendRequest(nil, "GET", "h:1", "/", nil)
	if want := "GET / HTTP/1.1\r\nHost: h:1\r\n\r\n"; string(got) != want {
		t.Errorf("AppendRequest = %q; want %q", got, want)
	}
	// What it builds is a request net/http parses.
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(AppendRequest(nil, "PUT", "h:1", "/v1/cells/r/c/1", []byte(`{}`)))))
	if err != nil || req.Method != "PUT" || req.URL.Path != "/v1/cells/r/c/1" || req.ContentLength != 2 {
		t.Errorf("ReadRequest = %+v, %v", req, err)
	}
}

func TestCheckJSON(t *testing.T) {
	for _, tt := range []struct {
		status, want int
		body         string
		ok           bool
	}{
		{200, 200, `{"a":1}`, true},
		{201, 201, `{}`, true},
		{200, 201, `{}`, false},
		{500, 200, `{"error":{}}`, false},
		{200, 200, ``, false},
		{200, 200, `[1]`, false},
		{200, 200, `404 page not found`, false},
	} {
		if err := CheckJSON(tt.status, tt.want, []byte(tt.body)); (err == nil) != tt.ok {
			t.Errorf("CheckJSON(%d, %d, %q) = %v; want ok %v", tt.status, tt.want, tt.body, err, tt.ok)
		}
	}
}
