package mysql_test

import (
	"context"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, shards int) cellar.Store {
		s, err := mysql.Open(context.Background(), dbtest.MySQL(tb), mysql.Options{
			Options: sqlstore.Options{Name: "my", ShardCount: shards, Create: true},
		})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		return s
	})
}
