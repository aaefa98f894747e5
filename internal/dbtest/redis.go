package dbtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisEnv names a Redis server the tests may use. Tests that need Redis
// start servers of their own (Redis), so that they can stop them and so
// that they never touch another test's data; the variable says Redis is
// part of the test setup.
const RedisEnv = "CELLAR_TEST_REDIS_ADDR" // e.g. 127.0.0.1:6379

// RedisServer is a redis-server process that keeps nothing on disk, or,
// started by RedisWithSnapshots, only what SAVE writes.
type RedisServer struct {
	tb   testing.TB
	addr string
	dir  string   // where SAVE writes and a start loads the snapshot; "" for none
	args []string // more arguments of redis-server

	mu  sync.Mutex // protects cmd
	cmd *exec.Cmd  // nil once killed
}

// Redis starts a fresh redis-server on a free loopback port, without
// persistence, and kills it when tb ends. It skips tb (or fails it under
// CELLAR_TEST_STRICT) unless CELLAR_TEST_REDIS_ADDR is set and redis-server
// is installed.
func Redis(tb testing.TB) *RedisServer {
	tb.Helper()
	return startRedis(tb, "")
}

// RedisWithSnapshots is Redis for a server that writes an RDB snapshot
// when told (the SAVE command; never by itself) and loads it when it
// starts again after Kill, as a server restored from a backup, or
// restarted from its last snapshot, would.
func RedisWithSnapshots(tb testing.TB) *RedisServer {
	tb.Helper()
	return startRedis(tb, tb.TempDir())
}

// RedisWithout is Redis for a server that does not know commands, as an
// older version would not (renamed away with --rename-command).
func RedisWithout(tb testing.TB, commands ...string) *RedisServer {
	tb.Helper()
	var args []string
	for _, c := range commands {
		args = append(args, "--rename-command", c, "")
	}
	return startRedis(tb, "", args...)
}

func startRedis(tb testing.TB, dir string, args ...string) *RedisServer {
	tb.Helper()
	Need(tb, RedisEnv)
	if _, err := exec.LookPath("redis-server"); err != nil {
		if Strict() {
			tb.Fatalf("redis-server is not installed, and %s forbids skipping this test", StrictEnv)
		}
		tb.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &RedisServer{tb: tb, addr: addr, dir: dir, args: args}
	s.Start()
	tb.Cleanup(s.Kill)
	return s
}

// Strict reports whether CELLAR_TEST_STRICT forbids skipping tests.
func Strict() bool { return os.Getenv(StrictEnv) != "" }

// Addr returns the server's host:port.
func (s *RedisServer) Addr() string { return s.addr }

// Start starts the server (again after Kill: empty, or with the last
// snapshot SAVE wrote) on its port and waits until it answers.
func (s *RedisServer) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(s.addr)
	args := []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"}
	if s.dir != "" {
		args = append(args, "--dir", s.dir, "--dbfilename", "dump.rdb")
	}
	args = append(args, s.args...)
	cmd := exec.Command("redis-server", args...)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start redis-server: %v", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			// Accepting is not serving while it loads; PING must answer.
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, werr := c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			n, rerr := c.Read(buf)
			c.Close()
			if werr == nil && rerr == nil && string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redis-server on %s did not start: %v", s.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill stops the server with SIGKILL: everything it held is gone.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// PauseWrites makes the server hold writes back for d (CLIENT PAUSE
// WRITE, as a failover does before it promotes a replica), and lets them
// go when the test ends, if d has not passed by then.
func (s *RedisServer) PauseWrites(d time.Duration) {
	s.tb.Helper()
	s.command(fmt.Sprintf("CLIENT PAUSE %d WRITE", d.Milliseconds()))
	s.tb.Cleanup(func() { s.command("CLIENT UNPAUSE") })
}

// command sends cmd as an inline command on a connection of its own and
// fails the test unless the server answers +OK.
func (s *RedisServer) command(cmd string) {
	s.tb.Helper()
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		s.tb.Fatalf("%s: %v", cmd, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		s.tb.Fatalf("%s: %v", cmd, err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "+OK\r\n" {
		s.tb.Fatalf("%s: answer %q, %v", cmd, buf[:n], err)
	}
}

// String returns the address, for logs.
func (s *RedisServer) String() string { return fmt.Sprintf("redis-server %s", s.addr) }
