package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// TestTriggersSurviveServerKill9 runs consumers (client/trigger.Run over
// HTTP) and writers against a real `cellar serve` process on a PostgreSQL
// datastore, and kills the server with SIGKILL again and again, restarting
// it on the same address. Once the writers stop and the consumers catch
// up, every acknowledged cell must have been handled at least once.
func TestTriggersSurviveServerKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real server")
	}
	pgDSN := dbtest.Postgres(t)
	bin := buildCellar(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfgPath := filepath.Join(dir, "cellar.yaml")
	cfg := fmt.Sprintf("listen: %s\ndata_dir: %s\nshards: 64\nmetadata: pg\nnodes:\n  - {name: pg, driver: postgres, dsn: %q}\nshard_map:\n  - {node: pg, shards: 0-63}\n",
		addr, dir, pgDSN)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "init", "--config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("cellar init: %v\n%s", err, out)
	}
	start := func() *exec.Cmd {
		cmd, _ := startProcessArgs(t, bin, "serve", "--config", cfgPath)
		return cmd
	}
	server := start()
	url := "http://" + addr
	ctx := context.Background()
	if _, _, err := client.New(url).DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"c"}}); err != nil {
		t.Fatal(err)
	}

	var (
		mu      sync.Mutex // protects handled and acked
		handled = map[[2]int64]int{}
		acked   [][2]int64
	)
	runCtx, stopConsumers := context.WithCancel(ctx)
	var consumers sync.WaitGroup
	for i := 0; i < 3; i++ {
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			h := func(ctx context.Context, c cellar.Cell) error {
				mu.Lock()
				handled[[2]int64{int64(c.Shard), c.AddedID}]++
				mu.Unlock()
				return nil
			}
			_ = trigger.Run(runCtx, client.New(url), "t", fmt.Sprintf("consumer-%d", i), h, trigger.Options{
				Concurrency: 4, MaxCells: 20, Wait: 200 * time.Millisecond, RetryDelay: 20 * time.Millisecond,
				Logger: slog.New(slog.DiscardHandler)})
		}()
	}
	writeCtx, stopWriters := context.WithCancel(ctx)
	var writers sync.WaitGroup
	for w := 0; w < 4; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			c := client.New(url)
			for i := 0; writeCtx.Err() == nil; i++ {
				cell, _, err := c.Put(writeCtx, cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("w%d/%d", w, i), Column: "c", RefKey: 1}, Body: []byte(`{}`)})
				if err != nil {
					time.Sleep(20 * time.Millisecond) // the server is down; the cell may or may not be there
					continue
				}
				mu.Lock()
				acked = append(acked, [2]int64{int64(cell.Shard), cell.AddedID})
				mu.Unlock()
			}
		}()
	}
	const kills = 5
	for k := 0; k < kills; k++ {
		time.Sleep(700 * time.Millisecond)
		if err := server.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		server.Wait()
		server = start()
	}
	time.Sleep(500 * time.Millisecond)
	stopWriters()
	writers.Wait()

	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := 0
		var example [2]int64
		for _, a := range acked {
			if handled[a] == 0 {
				missing++
				example = a
			}
		}
		n, dups := len(acked), 0
		for _, c := range handled {
			if c > 1 {
				dups++
			}
		}
		mu.Unlock()
		if missing == 0 {
			t.Logf("%d kills: %d cells acknowledged, all handled; %d handled more than once", kills, n, dups)
			if n < 200 {
				t.Errorf("only %d cells were acknowledged; the test did not exercise the server", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged cells were never handled (e.g. shard %d added_id %d)", missing, n, example[0], example[1])
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopConsumers()
	consumers.Wait()
}

// startProcessArgs runs the cellar binary with args and returns the process
// and a client once it listens.
func startProcessArgs(tb testing.TB, bin string, args ...string) (*exec.Cmd, *client.Client) {
	tb.Helper()
	return startCmd(tb, exec.Command(bin, args...))
}
