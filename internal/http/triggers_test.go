package http

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

type wireClaim struct {
	Lease *struct {
		Shard     int    `json:"shard"`
		Token     int64  `json:"token"`
		ExpiresAt string `json:"expires_at"`
	} `json:"lease"`
	Cells  []wireCell `json:"cells"`
	Paused bool       `json:"paused"`
	Replay bool       `json:"replay"`
}

// newTriggerServer serves a SQLite node with triggers on it (one node is
// its own metadata node and its only cell node).
func newTriggerServer(tb testing.TB, opts Options) (*client, *sqlstore.Store) {
	tb.Helper()
	st := openStore(tb)
	e, err := trigger.New(trigger.Options{Cells: st, State: st, Heads: st.ShardHeads, ShardCount: testShards, PollInterval: 5 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	opts.Triggers = e
	return newServer(tb, st, opts), st
}

func TestTriggersHTTP(t *testing.T) {
	c, _ := newTriggerServer(t, Options{})
	c.do("PUT", "/v1/triggers/mail", `{"columns": ["a"], "max_attempts": 2, "park_threshold": 5}`).want(t, 201, "")
	tr := decode[triggerJSON](t, c.do("PUT", "/v1/triggers/mail", `{"columns": ["a"], "max_attempts": 1, "park_threshold": 5}`).want(t, 200, ""))
	if tr.Name != "mail" || tr.MaxAttempts != 1 || tr.Start != "earliest" || strings.Join(tr.Columns, ",") != "a" {
		t.Errorf("updated trigger = %+v", tr)
	}
	for i := 0; i < 3; i++ {
		c.do("PUT", fmt.Sprintf("/v1/cells/r%d/a/1", i), `{"n": 1}`).want(t, 201, "")
	}
	c.do("PUT", "/v1/cells/r0/b/1", `{"n": 1}`).want(t, 201, "")

	// Claim and ack shard by shard until nothing is left.
	var got []string
	for i := 0; i < 10; i++ {
		cl := decode[wireClaim](t, c.do("POST", "/v1/triggers/mail/claim", `{"consumer": "w1", "max_cells": 10}`).want(t, 200, ""))
		if cl.Lease == nil {
			if cl.Cells == nil || len(cl.Cells) != 0 {
				t.Fatalf("empty claim has cells %v; want []", cl.Cells)
			}
			break
		}
		if _, err := time.Parse(time.RFC3339, cl.Lease.ExpiresAt); err != nil {
			t.Errorf("expires_at %q: %v", cl.Lease.ExpiresAt, err)
		}
		for _, cell := range cl.Cells {
			got = append(got, cell.RowKey+"/"+cell.Column)
		}
		last := cl.Cells[len(cl.Cells)-1]
		c.do("POST", "/v1/triggers/mail/ack", fmt.Sprintf(`{"token": %d, "shard": %d, "added_id": %d}`, cl.Lease.Token, cl.Lease.Shard, last.AddedID)).want(t, 200, "")
		// A stale token is refused.
		c.do("POST", "/v1/triggers/mail/ack", fmt.Sprintf(`{"token": %d, "shard": %d, "added_id": %d}`, cl.Lease.Token+1, cl.Lease.Shard, last.AddedID)).want(t, 409, cellar.ECONFLICT)
	}
	if len(got) != 3 {
		t.Fatalf("delivered %v; want the 3 cells of column a", got)
	}

	// A failing cell is parked after max_attempts (1), the trigger pauses
	// past its threshold... not yet with one parked cell.
	cell := decode[wireCell](t, c.do("PUT", "/v1/cells/r9/a/1", `{"n": 2}`).want(t, 201, ""))
	cl := decode[wireClaim](t, c.do("POST", "/v1/triggers/mail/claim", `{"consumer": "w1", "wait_ms": 1000}`).want(t, 200, ""))
	if cl.Lease == nil || len(cl.Cells) != 1 {
		t.Fatalf("claim = %+v", cl)
	}
	nack := c.do("POST", "/v1/triggers/mail/nack", fmt.Sprintf(`{"token": %d, "shard": %d, "added_id": %d, "error": "smtp down"}`, cl.Lease.Token, cell.Shard, cell.AddedID)).want(t, 200, "")
	if !strings.Contains(string(nack.body), `"parked":true`) {
		t.Errorf("nack = %s; want parked", nack.body)
	}
	parked := decode[struct {
		Parked []parkedJSON `json:"parked"`
		Next   *string      `json:"next"`
	}](t, c.do("GET", "/v1/triggers/mail/parked", "").want(t, 200, ""))
	if len(parked.Parked) != 1 || parked.Parked[0].Key.RowKey != "r9" || parked.Parked[0].LastError != "smtp down" || parked.Next != nil {
		t.Fatalf("parked = %+v", parked)
	}
	status := c.do("GET", "/v1/triggers/mail", "").want(t, 200, "")
	for _, want := range []string{`"parked":1`, `"paused":false`, `"lag_cells":0`} {
		if !strings.Contains(string(status.body), want) {
			t.Errorf("status %s lacks %s", status.body, want)
		}
	}
	if r := c.do("POST", "/v1/triggers/mail/parked/replay", "").want(t, 200, ""); !strings.Contains(string(r.body), `"replayed":1`) {
		t.Errorf("replay = %s", r.body)
	}
	cl = decode[wireClaim](t, c.do("POST", "/v1/triggers/mail/claim", `{"consumer": "w1"}`).want(t, 200, ""))
	if cl.Lease == nil || !cl.Replay || len(cl.Cells) != 1 || cl.Cells[0].RowKey != "r9" {
		t.Fatalf("claim after replay = %+v", cl)
	}
	list := c.do("GET", "/v1/triggers", "").want(t, 200, "")
	if !strings.Contains(string(list.body), `"name":"mail"`) {
		t.Errorf("list = %s", list.body)
	}
	c.do("POST", "/v1/triggers/mail/reset", "{}").want(t, 200, "")
	cl = decode[wireClaim](t, c.do("POST", "/v1/triggers/mail/claim", `{"consumer": "w2", "max_cells": 1000}`).want(t, 200, ""))
	if cl.Lease == nil {
		t.Fatalf("claim after reset = %+v; want cells again", cl)
	}
}

func TestTriggersHTTPErrors(t *testing.T) {
	c, _ := newTriggerServer(t, Options{})
	c.do("PUT", "/v1/triggers/t", `{"columns": ["a"]}`).want(t, 201, "")
	for _, tc := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"PUT", "/v1/triggers/bad%20name", `{"columns": ["a"]}`, 400, cellar.EINVALID},
		{"PUT", "/v1/triggers/t", `{}`, 400, cellar.EINVALID},
		{"PUT", "/v1/triggers/t", `{"columns": ["a"], "Columns": ["b"]}`, 400, cellar.EINVALID},
		{"PUT", "/v1/triggers/t", `{"columns": ["a"], "columns": ["b"]}`, 400, cellar.EINVALID},
		{"PUT", "/v1/triggers/t", `{"columns": ["a"], "start": "now"}`, 400, cellar.EINVALID},
		{"PUT", "/v1/triggers/t", `{"columns": ["a"], "max_attempts": 1.5}`, 400, cellar.EINVALID},
		{"PUT", "/v1/triggers/t", `{"columns": ["a"]} x`, 400, cellar.EINVALID},
		// park_threshold 0 is refused, not taken for the default 100.
		{"PUT", "/v1/triggers/t", `{"columns": ["a"], "park_threshold": 0}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/claim", `{}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/claim", `{"consumer": "c", "max_cells": 0}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/claim", `{"consumer": "c", "wait_ms": -1}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/claim", `{"consumer": "c", "wait_ms": 600000}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/nope/claim", `{"consumer": "c"}`, 404, cellar.ENOTFOUND},
		{"POST", "/v1/triggers/t/ack", `{"token": 1, "shard": 0}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/ack", `{"token": 1, "shard": 0, "added_id": 1, "error": "x"}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/ack", `{"token": 0, "shard": 1000, "added_id": 1}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/ack", `{"token": 5, "shard": 1, "added_id": 1}`, 409, cellar.ECONFLICT},
		// An unknown trigger is 404 for an ack and a nack too, not a stale
		// lease or a cell not delivered.
		{"POST", "/v1/triggers/nope/ack", `{"token": 5, "shard": 1, "added_id": 1}`, 404, cellar.ENOTFOUND},
		{"POST", "/v1/triggers/nope/ack", `{"token": 0, "shard": 1, "added_id": 1}`, 404, cellar.ENOTFOUND},
		{"POST", "/v1/triggers/nope/nack", `{"token": 5, "shard": 1, "added_id": 1}`, 404, cellar.ENOTFOUND},
		{"POST", "/v1/triggers/t/renew", `{"token": 1}`, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/renew", `{"token": 5, "shard": 1}`, 409, cellar.ECONFLICT},
		{"POST", "/v1/triggers/nope/renew", `{"token": 5, "shard": 1}`, 404, cellar.ENOTFOUND},
		{"GET", "/v1/triggers/nope", ``, 404, cellar.ENOTFOUND},
		{"GET", "/v1/triggers/t/parked?after=zz", ``, 400, cellar.EINVALID},
		{"GET", "/v1/triggers/t/parked?limit=0", ``, 400, cellar.EINVALID},
		{"POST", "/v1/triggers/t/parked/replay", `{"x": 1}`, 400, cellar.EINVALID},
	} {
		t.Run(tc.method+" "+tc.path+" "+tc.body, func(t *testing.T) {
			c.do(tc.method, tc.path, tc.body).want(t, tc.status, tc.code)
		})
	}
}

// TestTriggersHTTPScopes checks that claims and renewals need the write
// scope, status the read scope, and reset the admin scope.
func TestTriggersHTTPScopes(t *testing.T) {
	c, _ := newTriggerServer(t, Options{Tokens: []Token{{Secret: "r", Scopes: []string{ScopeRead}}, {Secret: "w", Scopes: []string{ScopeWrite}}}})
	c.token = "w"
	c.do("PUT", "/v1/triggers/t", `{"columns": ["a"]}`).want(t, 201, "")
	c.do("POST", "/v1/triggers/t/reset", ``).want(t, 403, cellar.EPERMISSION)
	c.token = "r"
	c.do("GET", "/v1/triggers/t", ``).want(t, 200, "")
	c.do("POST", "/v1/triggers/t/claim", `{"consumer": "c"}`).want(t, 403, cellar.EPERMISSION)
	c.do("POST", "/v1/triggers/t/renew", `{"token": 1, "shard": 0}`).want(t, 403, cellar.EPERMISSION)
	c.token = "w"
	c.do("POST", "/v1/triggers/t/renew", `{"token": 1, "shard": 0}`).want(t, 409, cellar.ECONFLICT)
}

// TestTriggersHTTPLongPoll checks that a claim waits for a cell and that
// the wait never runs past the request deadline.
func TestTriggersHTTPLongPoll(t *testing.T) {
	c, _ := newTriggerServer(t, Options{RequestTimeout: 400 * time.Millisecond})
	c.do("PUT", "/v1/triggers/t", `{"columns": ["a"]}`).want(t, 201, "")
	start := time.Now()
	cl := decode[wireClaim](t, c.do("POST", "/v1/triggers/t/claim", `{"consumer": "c", "wait_ms": 30000}`).want(t, 200, ""))
	if cl.Lease != nil || time.Since(start) > 2*time.Second {
		t.Fatalf("claim = %+v after %v; want an empty answer within the request timeout", cl, time.Since(start))
	}
	done := make(chan wireClaim, 1)
	go func() {
		done <- decode[wireClaim](t, c.do("POST", "/v1/triggers/t/claim", `{"consumer": "c", "wait_ms": 5000}`))
	}()
	time.Sleep(50 * time.Millisecond)
	c.do("PUT", "/v1/cells/r/a/1", `{}`).want(t, 201, "")
	if cl := <-done; cl.Lease == nil || len(cl.Cells) != 1 {
		t.Fatalf("long poll = %+v; want the new cell", cl)
	}
}

// FuzzTriggerRequests sends arbitrary trigger requests and checks that the
// handler never panics or answers 500, and that every refusal is a client
// error with a code.
func FuzzTriggerRequests(f *testing.F) {
	for _, s := range []struct{ method, path, body string }{
		{"PUT", "/v1/triggers/t", `{"columns":["a","b"],"start":"latest","max_attempts":3,"park_threshold":0}`},
		{"PUT", "/v1/triggers/t", `{"columns":[],"start":null}`},
		{"POST", "/v1/triggers/t/claim", `{"consumer":"c","max_cells":5,"wait_ms":0}`},
		{"POST", "/v1/triggers/t/claim", `{"consumer":"\xff"}`},
		{"POST", "/v1/triggers/t/ack", `{"token":1,"shard":0,"added_id":1}`},
		{"POST", "/v1/triggers/t/nack", `{"token":1,"shard":0,"added_id":1,"error":"x"}`},
		{"POST", "/v1/triggers/t/ack", `{"token":1e3,"shard":-1,"added_id":9223372036854775808}`},
		{"POST", "/v1/triggers/t/renew", `{"token":1,"shard":0}`},
		{"POST", "/v1/triggers/t/renew", `{"token":0,"shard":63,"added_id":1}`},
		{"POST", "/v1/triggers/t/renew", `{"token":-1,"shard":64}`},
		{"POST", "/v1/triggers/t/renew", `[{"token":1,"shard":0}]`},
		{"GET", "/v1/triggers/t/parked?after=1:2&limit=3", ""},
		{"POST", "/v1/triggers/t/parked/replay", ""},
		{"POST", "/v1/triggers/t/reset", "{}"},
		{"GET", "/v1/triggers", ""},
	} {
		f.Add(s.method, s.path, []byte(s.body))
	}
	c, _ := newTriggerServer(f, Options{})
	c.do("PUT", "/v1/triggers/t", `{"columns":["a"]}`).want(f, 201, "")
	c.do("PUT", "/v1/cells/r/a/1", `{}`).want(f, 201, "")
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		switch method {
		case "GET", "PUT", "POST", "DELETE":
		default:
			return
		}
		if !strings.HasPrefix(path, "/v1/triggers") || strings.ContainsAny(path, " \r\n#") {
			return
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return
		}
		c := &client{tb: t, url: c.url}
		r := c.do(method, path, string(body))
		if r.status >= 500 {
			t.Fatalf("%s %s %q: status %d %s", method, path, body, r.status, r.body)
		}
		if r.status >= 400 && errCode(t, r.body) == "" && r.status != 405 {
			t.Fatalf("%s %s %q: status %d without an error code: %s", method, path, body, r.status, r.body)
		}
	})
}

// TestTriggersHTTPReservedNames guards cellar's own triggers (index
// maintenance, names starting with _): their status and parked cells can
// be read, but no outside consumer may claim, ack, nack or renew their cells,
// which would take them from the index.
func TestTriggersHTTPReservedNames(t *testing.T) {
	c, st := newTriggerServer(t, Options{})
	def := sqlstore.TriggerDef{Name: "_index.x.1", Columns: []string{"a"}, Start: trigger.StartEarliest, MaxAttempts: 5, ParkThreshold: 100}
	if _, err := st.PutTrigger(t.Context(), def, nil); err != nil {
		t.Fatal(err)
	}
	c.do("PUT", "/v1/cells/r/a/1", `{}`).want(t, 201, "")
	c.do("GET", "/v1/triggers/_index.x.1", ``).want(t, 200, "")
	c.do("GET", "/v1/triggers/_index.x.1/parked", ``).want(t, 200, "")
	c.do("POST", "/v1/triggers/_index.x.1/claim", `{"consumer": "outsider"}`).want(t, 400, cellar.EINVALID)
	c.do("POST", "/v1/triggers/_index.x.1/ack", `{"token": 1, "shard": 0, "added_id": 1}`).want(t, 400, cellar.EINVALID)
	c.do("POST", "/v1/triggers/_index.x.1/nack", `{"token": 1, "shard": 0, "added_id": 1}`).want(t, 400, cellar.EINVALID)
	c.do("POST", "/v1/triggers/_index.x.1/renew", `{"token": 1, "shard": 0}`).want(t, 400, cellar.EINVALID)
}

// DELETE /v1/triggers/{name} drops a trigger with its state: a lease
// taken before answers not found, the name is free again and starts over.
// It needs the admin scope; cellar's own triggers go with their index;
// a body other than {} is refused, deleting nothing.
func TestTriggersHTTPDelete(t *testing.T) {
	c, st := newTriggerServer(t, Options{})
	c.do("PUT", "/v1/triggers/mail", `{"columns": ["a"]}`).want(t, 201, "")
	c.do("PUT", "/v1/cells/r/a/1", `{}`).want(t, 201, "")
	cl := decode[wireClaim](t, c.do("POST", "/v1/triggers/mail/claim", `{"consumer": "w1"}`).want(t, 200, ""))
	if cl.Lease == nil {
		t.Fatal("no lease")
	}
	c.do("DELETE", "/v1/triggers/mail", `{"keep": tru`).want(t, 400, cellar.EINVALID)
	c.do("GET", "/v1/triggers/mail", ``).want(t, 200, "")
	c.do("DELETE", "/v1/triggers/mail", ``).want(t, 200, "")
	c.do("GET", "/v1/triggers/mail", ``).want(t, 404, cellar.ENOTFOUND)
	c.do("POST", "/v1/triggers/mail/ack", fmt.Sprintf(`{"token": %d, "shard": %d, "added_id": 1}`, cl.Lease.Token, cl.Lease.Shard)).want(t, 404, cellar.ENOTFOUND)
	c.do("DELETE", "/v1/triggers/mail", ``).want(t, 404, cellar.ENOTFOUND)
	c.do("PUT", "/v1/triggers/mail", `{"columns": ["a"]}`).want(t, 201, "")
	again := decode[wireClaim](t, c.do("POST", "/v1/triggers/mail/claim", `{"consumer": "w1"}`).want(t, 200, ""))
	if again.Lease == nil || len(again.Cells) != 1 {
		t.Errorf("claim after the name was defined again = %+v; want the cell from the start", again)
	}

	def := sqlstore.TriggerDef{Name: "_index.x.1", Columns: []string{"a"}, Start: trigger.StartEarliest, MaxAttempts: 5, ParkThreshold: 100}
	if _, err := st.PutTrigger(t.Context(), def, nil); err != nil {
		t.Fatal(err)
	}
	c.do("DELETE", "/v1/triggers/_index.x.1", ``).want(t, 400, cellar.EINVALID)
	c.do("GET", "/v1/triggers/_index.x.1", ``).want(t, 200, "")

	a, _ := newTriggerServer(t, Options{Tokens: []Token{{Secret: "w", Scopes: []string{ScopeWrite}}, {Secret: "a", Scopes: []string{ScopeAdmin}}}})
	a.token = "a"
	a.do("PUT", "/v1/triggers/t", `{"columns": ["a"]}`).want(t, 201, "")
	a.token = "w"
	a.do("DELETE", "/v1/triggers/t", ``).want(t, 403, cellar.EPERMISSION)
	a.token = "a"
	a.do("DELETE", "/v1/triggers/t", ``).want(t, 200, "")
}

// shardLease is a shard's lease as the status shows it.
type shardLease struct {
	Owner     string `json:"owner"`
	Token     int64  `json:"token"`
	ExpiresAt string `json:"expires_at"`
}

func leaseOf(tb testing.TB, c *client, name string, shard int) shardLease {
	tb.Helper()
	st := decode[struct {
		Shards []struct {
			Shard int `json:"shard"`
			shardLease
		} `json:"shards"`
	}](tb, c.do("GET", "/v1/triggers/"+name, "").want(tb, 200, ""))
	for _, s := range st.Shards {
		if s.Shard == shard {
			return s.shardLease
		}
	}
	return shardLease{}
}

type wireLease struct {
	Shard     int    `json:"shard"`
	Token     int64  `json:"token"`
	ExpiresAt string `json:"expires_at"`
	LeaseMS   int64  `json:"lease_ms"`
}

// POST /v1/triggers/{name}/renew extends the lease for lease_ms from now
// and answers it; a stale token (another consumer's lease, a reset) is 409
// and bad input 400, neither changing the lease.
func TestTriggersHTTPRenew(t *testing.T) {
	c, _ := newTriggerServer(t, Options{})
	c.do("PUT", "/v1/triggers/mail", `{"columns": ["a"]}`).want(t, 201, "")
	c.do("PUT", "/v1/cells/r/a/1", `{}`).want(t, 201, "")
	cl := decode[wireClaim](t, c.do("POST", "/v1/triggers/mail/claim", `{"consumer": "w1"}`).want(t, 200, ""))
	if cl.Lease == nil {
		t.Fatal("no lease")
	}
	shard, token := cl.Lease.Shard, cl.Lease.Token
	renew := func(body string) response {
		time.Sleep(5 * time.Millisecond) // so that a renewal moves expires_at
		return c.do("POST", "/v1/triggers/mail/renew", body)
	}
	body := fmt.Sprintf(`{"token": %d, "shard": %d}`, token, shard)
	got := decode[struct {
		Lease wireLease `json:"lease"`
	}](t, renew(body).want(t, 200, "")).Lease
	if got.Shard != shard || got.Token != token || got.LeaseMS != trigger.DefaultLeaseTTL.Milliseconds() || got.ExpiresAt <= cl.Lease.ExpiresAt {
		t.Fatalf("renewal = %+v; want shard %d, token %d, lease_ms %d, expiring after the claim's %s",
			got, shard, token, trigger.DefaultLeaseTTL.Milliseconds(), cl.Lease.ExpiresAt)
	}
	if l := leaseOf(t, c, "mail", shard); l.Owner != "w1" || l.Token != token || l.ExpiresAt != got.ExpiresAt {
		t.Fatalf("status after the renewal shows lease %+v; want w1's token %d until %s", l, token, got.ExpiresAt)
	}

	before := leaseOf(t, c, "mail", shard)
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{fmt.Sprintf(`{"token": %d, "shard": %d}`, token+1, shard), 409, cellar.ECONFLICT},
		{fmt.Sprintf(`{"token": %d, "shard": %d}`, token-1, shard), 409, cellar.ECONFLICT},
		{fmt.Sprintf(`{"token": %d}`, token), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"shard": %d}`, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d, "shard": -1}`, token), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d, "shard": %d}`, token, testShards), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d, "shard": 99999999999}`, token), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": -1, "shard": %d}`, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d.0, "shard": %d}`, token, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": "%d", "shard": %d}`, token, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d, "shard": %d, "added_id": 1}`, token, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d, "shard": %d, "error": "x"}`, token, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d, "shard": %d, "shard": %d}`, token, shard, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`{"token": %d, "shard": %d} {}`, token, shard), 400, cellar.EINVALID},
		{fmt.Sprintf(`[{"token": %d, "shard": %d}]`, token, shard), 400, cellar.EINVALID},
		{`null`, 400, cellar.EINVALID},
		{`"renew"`, 400, cellar.EINVALID},
		{``, 400, cellar.EINVALID},
		{`{"token": 1, "shard": `, 400, cellar.EINVALID},
	} {
		renew(tc.body).want(t, tc.status, tc.code)
		if l := leaseOf(t, c, "mail", shard); l != before {
			t.Fatalf("renewal %s (%d) changed the lease from %+v to %+v", tc.body, tc.status, before, l)
		}
	}
	c.do("POST", "/v1/triggers/nope/renew", body).want(t, 404, cellar.ENOTFOUND)
	c.do("POST", "/v1/triggers/bad%20name/renew", body).want(t, 400, cellar.EINVALID)

	// A reset ends the lease: its renewal is refused from then on.
	c.do("POST", "/v1/triggers/mail/reset", "{}").want(t, 200, "")
	reset := leaseOf(t, c, "mail", shard)
	renew(body).want(t, 409, cellar.ECONFLICT)
	if l := leaseOf(t, c, "mail", shard); l != reset {
		t.Fatalf("renewal after reset changed the lease from %+v to %+v", reset, l)
	}
}
