package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
)

// buildCellar builds the cellar binary for tests that run it as a real
// process.
func buildCellar(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "cellar")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var servingRE = regexp.MustCompile(`msg="cellar serving" addr=(\S+)`)

// startProcess runs `cellar serve` on the embedded datastore in dataDir and
// returns the process and a client once it listens.
func startProcess(tb testing.TB, bin, dataDir string) (*exec.Cmd, *client.Client) {
	tb.Helper()
	return startCmd(tb, exec.Command(bin, "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0"))
}

// startCmd starts cmd, a `cellar serve`, and returns it and a client once
// it listens. The process is killed when tb ends.
func startCmd(tb testing.TB, cmd *exec.Cmd) (*exec.Cmd, *client.Client) {
	tb.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if line := sc.Text(); regexp.MustCompile(`level=(WARN|ERROR)`).MatchString(line) {
				tb.Log("server: " + line)
			}
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case a := <-addr:
		return cmd, client.New("http://" + a)
	case <-time.After(60 * time.Second):
		tb.Fatal("cellar serve did not start")
	}
	return nil, nil
}

// TestKillNineLosesNothing puts cells from many clients into the embedded
// SQLite datastore and kills the server with SIGKILL mid-stream, three
// times. After each restart every acknowledged cell must be there, with the
// added_id it was acknowledged with.
func TestKillNineLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real server")
	}
	bin := buildCellar(t)
	dataDir := t.TempDir()
	type ack struct {
		key     cellar.Key
		addedID int64
		shard   int
	}
	var (
		mu    sync.Mutex // protects acked
		acked []ack
	)
	var sent, failed atomic.Int64
	for round := 0; round < 3; round++ {
		cmd, c := startProcess(t, bin, dataDir)
		ctx, cancel := context.WithCancel(context.Background())
		var n atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < 32; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					k := cellar.Key{RowKey: fmt.Sprintf("round%d/writer%d", round, w), Column: "c", RefKey: int64(i)}
					sent.Add(1)
					cell, _, err := c.Put(ctx, cellar.NewCell{Key: k, Body: []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))})
					if err != nil {
						failed.Add(1)
						return // the server is gone
					}
					mu.Lock()
					acked = append(acked, ack{k, cell.AddedID, cell.Shard})
					mu.Unlock()
					n.Add(1)
				}
			}()
		}
		// Kill once enough puts were acknowledged in this round, so the
		// kill lands while commits are in flight.
		for n.Load() < 500 {
			time.Sleep(5 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		wg.Wait()
		cancel()
	}

	_, c := startProcess(t, bin, dataDir)
	ctx := context.Background()
	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for start := 0; start < len(acked); start += cellar.MaxBatchKeys {
		end := min(start+cellar.MaxBatchKeys, len(acked))
		keys := make([]cellar.LookupKey, 0, end-start)
		for _, a := range acked[start:end] {
			ref := a.key.RefKey
			keys = append(keys, cellar.LookupKey{RowKey: a.key.RowKey, Column: a.key.Column, RefKey: &ref})
		}
		res := c.BatchGet(ctx, keys)
		// Unavailable is not lost: a loaded machine may miss the node
		// deadline. Ask again before counting.
		for try := 0; try < 10 && errors.Is(res[0].Err, cellar.ErrUnavailable); try++ {
			time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
			res = c.BatchGet(ctx, keys)
		}
		for i, r := range res {
			a := acked[start+i]
			if r.Err != nil || r.Cell.AddedID != a.addedID || r.Cell.Shard != a.shard {
				lost++
				if lost <= 5 {
					t.Errorf("acknowledged %v (shard %d added_id %d) after restart: %+v, %v", a.key, a.shard, a.addedID, r.Cell, r.Err)
				}
			}
		}
	}
	t.Logf("3 kills: %d puts sent, %d acknowledged, %d failed in flight, %d acknowledged puts lost", sent.Load(), len(acked), failed.Load(), lost)
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged puts were lost", lost, len(acked))
	}
	if len(acked) < 1500 {
		t.Fatalf("only %d puts were acknowledged; the test did not exercise the server", len(acked))
	}
}
