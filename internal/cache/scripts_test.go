package cache

import (
	"context"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// The scripts that keep Redis's latest entries moving forward, run on a
// real Redis.
func TestLatestScripts(t *testing.T) {
	srv := dbtest.Redis(t)
	rc := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rc.Close() })
	ctx := context.Background()
	const k = "latest"
	value := func(ref int64) string {
		// A row key and a body that mention ref_key must not fool the
		// scripts.
		c := cellar.Cell{Key: cellar.Key{RowKey: `x "ref_key":99999999999999999999`, Column: "c", RefKey: ref}, Body: []byte(`{"ref_key":99999999999999999999}`)}
		v, err := encodeCell(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	storedRef := func() int64 {
		t.Helper()
		v, err := rc.Get(ctx, k).Result()
		if err == goredis.Nil {
			return -1
		}
		if err != nil {
			t.Fatal(err)
		}
		_, v, _ = cutBound(v)
		c, err := decodeCell(key{kind: kindLatest, row: `x "ref_key":99999999999999999999`, col: "c"}, v)
		if err != nil {
			t.Fatal(err)
		}
		return c.RefKey
	}
	// fillBy fills as a process whose bound is bound would, with ttl
	// left of it.
	fillBy := func(bound time.Duration, ref int64, ttl time.Duration) {
		t.Helper()
		v := fmt.Sprintf("%d|%s", bound.Milliseconds(), value(ref))
		if err := rc.Eval(ctx, latestFillScript, []string{k}, ref, v, ttl.Milliseconds(), bound.Milliseconds()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	fill := func(ref int64, ttl time.Duration) { t.Helper(); fillBy(time.Hour, ref, ttl) }
	push := func(ref int64) {
		t.Helper()
		if err := rc.Eval(ctx, latestPushScript, []string{k}, ref, value(ref)).Err(); err != nil {
			t.Fatal(err)
		}
	}

	push(5)
	if got := storedRef(); got != -1 {
		t.Errorf("push without an entry stored ref %d; want nothing", got)
	}
	fill(9, time.Minute)
	if got := storedRef(); got != 9 {
		t.Errorf("fill stored %d; want 9", got)
	}
	fill(8, time.Hour) // an older read
	if got := storedRef(); got != 9 {
		t.Errorf("after an older fill: %d; want 9", got)
	}
	fill(9, time.Hour) // the same cell, read later: lives longer
	if ttl := rc.PTTL(ctx, k).Val(); ttl < 59*time.Minute {
		t.Errorf("after a fresher fill of the same cell, TTL = %v; want about an hour", ttl)
	}
	fill(9, time.Second) // the same cell, read earlier
	if ttl := rc.PTTL(ctx, k).Val(); ttl < 59*time.Minute {
		t.Errorf("after an earlier fill of the same cell, TTL = %v; want it kept", ttl)
	}
	push(10) // "10" < "9" as strings
	if got := storedRef(); got != 10 {
		t.Errorf("after push(10): %d; want 10", got)
	}
	if ttl := rc.PTTL(ctx, k).Val(); ttl < 59*time.Minute {
		t.Errorf("push changed the TTL to %v; want it kept", ttl)
	}
	push(9)
	fill(2, time.Hour)
	if got := storedRef(); got != 10 {
		t.Errorf("after an older push and fill: %d; want 10", got)
	}
	push(cellar.MaxRefKey)
	push(cellar.MaxRefKey - 1)
	if got := storedRef(); got != cellar.MaxRefKey {
		t.Errorf("after pushes near the top: %d; want MaxRefKey", got)
	}

	// latestGetScript returns each value with its remaining time.
	rc.Set(ctx, "other", value(3), 0)
	vals, err := rc.Eval(ctx, latestGetScript, []string{k, "missing", "other"}).Slice()
	if err != nil || len(vals) != 6 {
		t.Fatalf("latestGetScript = %v, %v", vals, err)
	}
	if vals[0] != "3600000|"+value(cellar.MaxRefKey) || vals[1].(int64) < 59*60*1000 || vals[2] != nil || vals[3] != int64(-2) || vals[4] != value(3) || vals[5] != int64(-1) {
		t.Errorf("latestGetScript = %v", vals)
	}
}

// Latest entries filled by processes with different bounds (max
// staleness): the fresher read wins whatever its TTL, and a push keeps
// the entry's bound with its TTL, so that a reader can tell its age.
func TestLatestScriptsMixedBounds(t *testing.T) {
	srv := dbtest.Redis(t)
	rc := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rc.Close() })
	ctx := context.Background()
	const k = "latest-mixed"
	c := cellar.Cell{Key: cellar.Key{RowKey: "r", Column: "c", RefKey: 7}, Body: []byte(`{}`)}
	v, err := encodeCell(c)
	if err != nil {
		t.Fatal(err)
	}
	fill := func(bound, ttl time.Duration) {
		t.Helper()
		bv := fmt.Sprintf("%d|%s", bound.Milliseconds(), v)
		if err := rc.Eval(ctx, latestFillScript, []string{k}, c.RefKey, bv, ttl.Milliseconds(), bound.Milliseconds()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() (time.Duration, time.Duration) {
		t.Helper()
		got, err := rc.Get(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		b, _, ok := cutBound(got)
		if !ok {
			t.Fatalf("stored %q: no bound", got)
		}
		return time.Duration(b), rc.PTTL(ctx, k).Val()
	}
	fill(time.Hour, 50*time.Minute)         // read 10 minutes ago by a 1 h process
	fill(time.Second, 900*time.Millisecond) // read 100 ms ago by a 1 s process: fresher
	if b, ttl := stored(); b != time.Second || ttl > time.Second {
		t.Errorf("after a fresher fill with a shorter bound: bound %v, TTL %v; want 1s, at most 1s", b, ttl)
	}
	fill(time.Hour, time.Hour-10*time.Second) // read 10 s ago: older
	if b, _ := stored(); b != time.Second {
		t.Errorf("after an older fill with a longer bound: bound %v; want the fresher 1s entry kept", b)
	}
	fill(time.Hour, time.Hour) // read now by a 1 h process
	c.RefKey = 8
	nv, err := encodeCell(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Eval(ctx, latestPushScript, []string{k}, c.RefKey, nv).Err(); err != nil {
		t.Fatal(err)
	}
	if b, ttl := stored(); b != time.Hour || ttl < 59*time.Minute {
		t.Errorf("after a push: bound %v, TTL %v; want the entry's own 1h and about an hour", b, ttl)
	}
	c.RefKey = 7
	// An entry without a bound (an older version's) whose TTL outlives the
	// filler's bound is of unknown age: a fill replaces it.
	if err := rc.Set(ctx, k, v, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	fill(time.Second, time.Second) // ref 7 again: the same cell
	if b, ttl := stored(); b != time.Second || ttl > time.Second {
		t.Errorf("after a fill over an unbound 1h entry: bound %v, TTL %v; want 1s, at most 1s", b, ttl)
	}
}

func TestWritten(t *testing.T) {
	cells := []cellar.Cell{cell("c", 1), {Key: cellar.Key{RowKey: "a row with spaces: ✓", Column: "_x", RefKey: cellar.MaxRefKey}}}
	got := parseWritten(formatWritten(cells))
	if len(got) != 2 || got[0] != cells[0].Key || got[1] != cells[1].Key {
		t.Errorf("parseWritten(formatWritten(%v)) = %v", cells, got)
	}
	if got := parseWritten("garbage\n1\nx c r\n"); len(got) != 0 {
		t.Errorf("parseWritten(garbage) = %v", got)
	}
}
