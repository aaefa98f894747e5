package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// Init is idempotent, and several processes may run it at once on new
// nodes (`cellar init` twice, or embedded servers on their first start):
// all succeed. Before, the losers of the datastore record's insert failed
// on its unique key, and SQLite opens of a new file failed busy while
// another switched it to WAL.
func TestConcurrentInitSQLite(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for round := 0; round < 10; round++ {
		dir := t.TempDir()
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cfg := defaultConfig()
				cfg.DataDir = dir
				cfg.Shards = 16
				errs[i] = initDatastore(context.Background(), cfg, log)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: concurrent init %d: %v", round, i, err)
			}
		}
	}
}

// The same race on PostgreSQL, narrowed to the step that lost it:
// CreateDatastore from several processes at once on a migrated, empty
// metadata node.
func TestConcurrentCreateDatastorePostgres(t *testing.T) {
	ctx := context.Background()
	for round := 0; round < 5; round++ {
		cfg := defaultConfig()
		cfg.DataDir = t.TempDir()
		cfg.Shards = 16
		cfg.Nodes = []NodeConfig{{Name: "pg", Driver: "postgres", DSN: dbtest.Postgres(t)}}
		if err := cfg.complete(); err != nil {
			t.Fatal(err)
		}
		stores := make([]*sqlstore.Store, 8)
		for i := range stores {
			s, err := openNode(ctx, cfg, cfg.Nodes[0], cfg.Shards, i == 0, false)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			stores[i] = s
		}
		start := make(chan struct{})
		errs := make([]error, len(stores))
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = s.CreateDatastore(ctx, sqlstore.Datastore{ShardCount: cfg.Shards})
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: concurrent CreateDatastore %d: %v", round, i, err)
			}
		}
		if err := stores[0].CreateDatastore(ctx, sqlstore.Datastore{ShardCount: 8}); err == nil {
			t.Fatalf("round %d: CreateDatastore with another shard count succeeded; want a conflict", round)
		}
	}
}

// A data directory whose path holds characters special in a SQLite URI
// ('#' ends the path, '?' starts the query, '%' an escape) holds the node
// where the config says: /srv/a#1 and /srv/a#2 must not share /srv/a.
func TestDataDirWithURICharacters(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, name := range []string{"data#1", "data?x=1", "data%41"} {
		cfg := defaultConfig()
		cfg.DataDir = filepath.Join(t.TempDir(), name)
		if err := initDatastore(context.Background(), cfg, log); err != nil {
			t.Fatalf("init in %s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "local.db")); err != nil {
			ents, _ := os.ReadDir(filepath.Dir(cfg.DataDir))
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("data_dir %s: node file not in it: %v; files beside it: %v", name, err, names)
		}
	}
}

// TestInitDataDirFlagWhateverItsValue guards that init takes --data-dir
// when given, even empty (the current directory), as serve does: it kept
// the file's data_dir, so init and serve with the same flags used two
// places. (Review of stop 19.)
func TestInitDataDirFlagWhateverItsValue(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	fileDir := filepath.Join(dir, "from-file")
	p := writeConfig(t, "data_dir: "+fileDir+"\nshards: 16\n")
	var out, errb strings.Builder
	if code := runInit(context.Background(), []string{"--config", p, "--data-dir", ""}, &out, &errb); code != 0 {
		t.Fatalf("init --data-dir \"\": exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "local.db")); err != nil {
		t.Errorf("init --data-dir \"\" did not create the node in the current directory: %v", err)
	}
	if _, err := os.Stat(fileDir); err == nil {
		t.Errorf("init --data-dir \"\" used the file's data_dir %s", fileDir)
	}
}
