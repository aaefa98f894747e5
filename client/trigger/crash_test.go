package trigger_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
	"github.com/cellar-db/cellar/internal/dbtest"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	engine "github.com/cellar-db/cellar/internal/trigger"
)

// Environment of a consumer process started by TestKillNineConsumers.
const (
	consumerURLEnv  = "CELLAR_TEST_CONSUMER_URL"
	consumerLogEnv  = "CELLAR_TEST_CONSUMER_LOG"
	consumerNameEnv = "CELLAR_TEST_CONSUMER_NAME"
)

// TestConsumerProcess is the consumer process of TestKillNineConsumers (the
// test binary runs itself): it appends "shard added_id" to its log for
// every cell it handles, before the handler returns, until it is killed.
func TestConsumerProcess(t *testing.T) {
	url := os.Getenv(consumerURLEnv)
	if url == "" {
		t.Skip("runs only as TestKillNineConsumers's consumer process")
	}
	f, err := os.OpenFile(os.Getenv(consumerLogEnv), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	handler := func(ctx context.Context, cell cellar.Cell) error {
		// One write per cell: a kill -9 cannot lose what was written.
		if _, err := fmt.Fprintf(f, "%d %d\n", cell.Shard, cell.AddedID); err != nil {
			return err
		}
		time.Sleep(time.Duration(rng.IntN(4000)) * time.Microsecond)
		return nil
	}
	err = trigger.Run(context.Background(), client.New(url), "t", os.Getenv(consumerNameEnv), handler,
		trigger.Options{Concurrency: 3, MaxCells: 20, Wait: 200 * time.Millisecond, RetryDelay: 50 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)})
	t.Fatalf("Run returned %v", err)
}

// TestKillNineConsumers runs three consumer processes under a steady write
// load and kills them with SIGKILL over and over, starting a new one each
// time; every second it also restarts the server (a new engine over
// reopened nodes, on the same address). Once the writes stop and the last
// consumers catch up, every cell written must have been handled by some
// process at least once.
func TestKillNineConsumers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and kills real consumer processes")
	}
	for _, be := range []struct {
		name string
		// opener returns a function that opens the same node each time.
		opener func(t *testing.T) func() *sqlstore.Store
	}{
		{"sqlite", func(t *testing.T) func() *sqlstore.Store {
			path := filepath.Join(t.TempDir(), "n.db")
			return func() *sqlstore.Store {
				st, err := sqlite.Open(context.Background(), path, sqlite.Options{Options: sqlstore.Options{Name: "n", ShardCount: shards, Create: true}})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
		}},
		{"postgres", func(t *testing.T) func() *sqlstore.Store {
			dsn := dbtest.Postgres(t)
			return func() *sqlstore.Store {
				st, err := postgres.Open(context.Background(), dsn, postgres.Options{Options: sqlstore.Options{Name: "n", ShardCount: shards, Create: true}})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
		}},
	} {
		t.Run(be.name, func(t *testing.T) {
			killNine(t, be.opener(t))
		})
	}
}

// server is a cellar server that can be restarted on the same address.
type server struct {
	t    *testing.T
	open func() *sqlstore.Store
	addr string
	l    *ledger

	st  *sqlstore.Store
	e   *engine.Engine
	srv *http.Server
}

func (s *server) start() {
	s.st = s.open()
	cells := newSharded(s.t, s.st)
	// Real processes need a real clock: leases last 500ms, so a killed
	// consumer's shards are taken over quickly.
	e := cells.start(s.t, func(o *engine.Options) {
		o.LeaseTTL, o.PollInterval = 500*time.Millisecond, 10*time.Millisecond
	})
	s.e = e
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	h := cellarhttp.NewHandler(cells.cells, cellarhttp.Options{Triggers: e, Logger: slog.New(slog.DiscardHandler)})
	s.srv = &http.Server{Handler: s.l.record(h)}
	go s.srv.Serve(ln)
}

func (s *server) stop() {
	s.srv.Close()
	s.e.Close()
	s.st.Close()
}

func killNine(t *testing.T, open func() *sqlstore.Store) {
	l := &ledger{ackedAt: map[[2]int64]int64{}}
	srv := &server{t: t, open: open, l: l}
	srv.start()
	defer func() { srv.stop() }()
	url := "http://" + srv.addr
	c := client.New(url)
	ctx := context.Background()
	if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var mu sync.Mutex // protects procs and logs
	var procs [3]*exec.Cmd
	var logs []string
	start := func(slot, gen int) {
		log := filepath.Join(dir, fmt.Sprintf("c%d-%d.log", slot, gen))
		cmd := exec.Command(bin, "-test.run=^TestConsumerProcess$")
		cmd.Env = append(os.Environ(), consumerURLEnv+"="+url, consumerLogEnv+"="+log, fmt.Sprintf("%s=c%d-%d", consumerNameEnv, slot, gen))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		procs[slot] = cmd
		logs = append(logs, log)
		mu.Unlock()
	}
	kill := func(slot int) {
		mu.Lock()
		cmd := procs[slot]
		mu.Unlock()
		cmd.Process.Kill() // SIGKILL
		cmd.Wait()
	}
	for i := range procs {
		start(i, 0)
	}
	defer func() {
		for i := range procs {
			kill(i)
		}
	}()

	// Three writers for 4s, as the consumers are killed every 50-250ms.
	var wmu sync.Mutex // protects written
	written := map[[2]int64]bool{}
	var writing atomic.Bool
	writing.Store(true)
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; writing.Load(); i++ {
				col := "a"
				if i%5 == 4 {
					col = "b"
				}
				nc := cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("k%d-%d", w, i), Column: col, RefKey: 1}, Body: []byte(`{}`)}
				cell, _, err := c.Put(ctx, nc)
				for tries := 0; err != nil && tries < 500; tries++ {
					time.Sleep(10 * time.Millisecond) // the server is restarting
					cell, _, err = c.Put(ctx, nc)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if col == "a" {
					wmu.Lock()
					written[[2]int64{int64(cell.Shard), cell.AddedID}] = true
					wmu.Unlock()
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	kills, restarts := 0, 0
	rng := rand.New(rand.NewPCG(1, 2))
	lastRestart := time.Now()
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); kills++ {
		time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
		slot := rng.IntN(len(procs))
		kill(slot)
		start(slot, kills+1)
		if time.Since(lastRestart) > time.Second {
			srv.stop()
			srv.start()
			restarts++
			lastRestart = time.Now()
		}
	}
	writing.Store(false)
	wg.Wait()

	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := c.TriggerStatus(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		if st.Totals.LagCells == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumers did not catch up: %+v", st.Totals)
		}
		time.Sleep(50 * time.Millisecond)
	}

	handled := map[[2]int64]int{}
	mu.Lock()
	defer mu.Unlock()
	for _, log := range logs {
		f, err := os.Open(log)
		if os.IsNotExist(err) {
			continue // killed before it handled anything
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var shard, id int64
			if _, err := fmt.Sscanf(sc.Text(), "%d %d", &shard, &id); err != nil {
				continue // a line cut by the kill
			}
			handled[[2]int64{shard, id}]++
		}
		f.Close()
	}
	missing, dups := 0, 0
	for k := range written {
		switch n := handled[k]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	// Duplicates only from batches that were not acknowledged: no claim
	// that began after an ack covering a cell returned delivered it.
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.deliveries {
		for _, id := range d.ids {
			if at, ok := l.ackedAt[[2]int64{int64(d.shard), id}]; ok && at < d.startSeq {
				t.Fatalf("cell %d of shard %d was delivered again after an ack covering it returned", id, d.shard)
			}
		}
	}
	t.Logf("%d cells written, %d consumer processes killed with SIGKILL, %d server restarts, %d handled again, %d batches delivered",
		len(written), kills, restarts, dups, len(l.deliveries))
	if missing > 0 {
		t.Fatalf("%d of %d cells were never handled", missing, len(written))
	}
	if kills == 0 || restarts == 0 || len(written) == 0 {
		t.Fatal("nothing was killed, restarted or written")
	}
}

// ledger records, as the server sees them, which cells each claim
// delivered and when acks covering cells returned, in one sequence.
type ledger struct {
	mu         sync.Mutex // protects the fields below
	seq        int64
	deliveries []delivery
	ackedAt    map[[2]int64]int64 // (shard, added_id) -> seq of the first ack covering it
}

type delivery struct {
	startSeq int64
	shard    int
	ids      []int64
}

func (l *ledger) next() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

// record wraps h to note claims, acks and nacks.
func (l *ledger) record(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := path.Base(r.URL.Path)
		if r.Method != http.MethodPost || (op != "claim" && op != "ack" && op != "nack") {
			h.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		start := l.next()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		if rec.Code != http.StatusOK {
			return
		}
		end := l.next()
		l.mu.Lock()
		defer l.mu.Unlock()
		switch op {
		case "claim":
			var cl client.TriggerClaim
			if json.Unmarshal(rec.Body.Bytes(), &cl) != nil || cl.Lease == nil {
				return
			}
			d := delivery{startSeq: start, shard: cl.Lease.Shard}
			for _, c := range cl.Cells {
				d.ids = append(d.ids, c.AddedID)
			}
			l.deliveries = append(l.deliveries, d)
		case "ack", "nack":
			var req struct {
				Shard   int   `json:"shard"`
				AddedID int64 `json:"added_id"`
			}
			if json.Unmarshal(body, &req) != nil {
				return
			}
			upTo := req.AddedID
			if op == "nack" {
				upTo-- // a nack acknowledges the cells before the failed one
			}
			// Every delivered cell of the shard up to upTo is covered.
			for _, d := range l.deliveries {
				if d.shard != req.Shard {
					continue
				}
				for _, id := range d.ids {
					k := [2]int64{int64(req.Shard), id}
					if _, ok := l.ackedAt[k]; id <= upTo && !ok {
						l.ackedAt[k] = end
					}
				}
			}
		}
	})
}
