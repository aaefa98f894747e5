package http

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// triggerRoutes registers the /v1/triggers routes (docs/TRIGGERS.md).
func (s *server) triggerRoutes() {
	s.handle("PUT /v1/triggers/{name}", ScopeWrite, s.handleTriggerDefine)
	s.handle("GET /v1/triggers", ScopeRead, s.handleTriggerList)
	s.handle("GET /v1/triggers/{name}", ScopeRead, s.handleTriggerStatus)
	s.handle("POST /v1/triggers/{name}/claim", ScopeWrite, s.handleTriggerClaim)
	s.handle("POST /v1/triggers/{name}/ack", ScopeWrite, s.handleTriggerAck)
	s.handle("POST /v1/triggers/{name}/nack", ScopeWrite, s.handleTriggerNack)
	s.handle("POST /v1/triggers/{name}/renew", ScopeWrite, s.handleTriggerRenew)
	s.handle("GET /v1/triggers/{name}/parked", ScopeRead, s.handleTriggerParked)
	s.handle("POST /v1/triggers/{name}/parked/replay", ScopeWrite, s.handleTriggerReplay)
	s.handle("POST /v1/triggers/{name}/reset", ScopeAdmin, s.handleTriggerReset)
	s.handle("DELETE /v1/triggers/{name}", ScopeAdmin, s.handleTriggerDelete)
}

// handleTriggerDelete serves DELETE /v1/triggers/{name}: the trigger and
// all of its state. cellar's own triggers go with their index.
func (s *server) handleTriggerDelete(w http.ResponseWriter, r *http.Request) error {
	if _, err := consumedTriggerName(r); err != nil {
		return err
	}
	return s.triggerAction(w, r, func(ctx context.Context, name string) (any, error) {
		err := s.opts.Triggers.Delete(ctx, name)
		return struct {
			Deleted bool `json:"deleted"`
		}{err == nil}, err
	})
}

// claimMargin is kept from the request deadline for answering a long poll.
const claimMargin = 250 * time.Millisecond

// triggerJSON is a trigger's definition as served.
type triggerJSON struct {
	Name          string   `json:"name"`
	Columns       []string `json:"columns"`
	Start         string   `json:"start"`
	MaxAttempts   int      `json:"max_attempts"`
	ParkThreshold int      `json:"park_threshold"`
	CreatedAt     string   `json:"created_at"`
	UpdatedAt     string   `json:"updated_at"`
}

func newTriggerJSON(t trigger.Trigger) triggerJSON {
	return triggerJSON{Name: t.Name, Columns: t.Columns, Start: t.Start, MaxAttempts: t.MaxAttempts, ParkThreshold: t.ParkThreshold,
		CreatedAt: cellar.FormatTime(t.CreatedAt), UpdatedAt: cellar.FormatTime(t.UpdatedAt)}
}

func triggerName(r *http.Request) (string, error) {
	name := pathSegment(r, "name")
	return name, trigger.ValidateName(name)
}

// consumedTriggerName is triggerName for the routes that define or
// consume a trigger: cellar's own triggers (index maintenance) are
// consumed inside cellar, and an outside consumer's claims and acks would
// take their cells from it.
func consumedTriggerName(r *http.Request) (string, error) {
	name, err := triggerName(r)
	if err == nil && strings.HasPrefix(name, "_") {
		err = cellar.Errorf(cellar.EINVALID, "trigger names starting with _ are reserved for cellar's own triggers (such as index maintenance)")
	}
	return name, err
}

// handleTriggerDefine serves PUT /v1/triggers/{name} with {"columns",
// "start", "max_attempts", "park_threshold"}: 201 when created, 200 when
// updated.
func (s *server) handleTriggerDefine(w http.ResponseWriter, r *http.Request) error {
	name, err := consumedTriggerName(r)
	if err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	def, err := decodeTriggerDef(raw)
	if err != nil {
		return err
	}
	t, created, err := s.opts.Triggers.Define(r.Context(), name, def)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.writeJSON(w, r, status, newTriggerJSON(t))
	return nil
}

// handleTriggerList serves GET /v1/triggers.
func (s *server) handleTriggerList(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	ts, err := s.opts.Triggers.Triggers(r.Context())
	if err != nil {
		return err
	}
	out := make([]triggerJSON, len(ts))
	for i, t := range ts {
		out[i] = newTriggerJSON(t)
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Triggers []triggerJSON `json:"triggers"`
	}{out})
	return nil
}

// handleTriggerStatus serves GET /v1/triggers/{name}: per-shard offsets,
// lag, owners and parked counts, and totals.
func (s *server) handleTriggerStatus(w http.ResponseWriter, r *http.Request) error {
	name, err := triggerName(r)
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	st, err := s.opts.Triggers.Status(r.Context(), name)
	if err != nil {
		return err
	}
	type shardJSON struct {
		trigger.ShardStatus
		ExpiresAt *string `json:"expires_at,omitempty"`
		RetryAt   *string `json:"retry_at,omitempty"`
	}
	shards := make([]shardJSON, len(st.Shards))
	for i, ss := range st.Shards {
		shards[i] = shardJSON{ShardStatus: ss, ExpiresAt: formatTimePtr(ss.ExpiresAt), RetryAt: formatTimePtr(ss.RetryAt)}
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Trigger triggerJSON    `json:"trigger"`
		Paused  bool           `json:"paused"`
		Reason  string         `json:"reason,omitempty"`
		Shards  []shardJSON    `json:"shards"`
		Totals  trigger.Totals `json:"totals"`
	}{newTriggerJSON(st.Trigger), st.Paused, st.Reason, shards, st.Totals})
	return nil
}

func formatTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := cellar.FormatTime(*t)
	return &s
}

type leaseJSON struct {
	Shard     int    `json:"shard"`
	Token     int64  `json:"token"`
	ExpiresAt string `json:"expires_at"`
	LeaseMS   int64  `json:"lease_ms"`
}

func newLeaseJSON(l trigger.Lease) leaseJSON {
	return leaseJSON{Shard: l.Shard, Token: l.Token, ExpiresAt: cellar.FormatTime(l.ExpiresAt), LeaseMS: l.TTL.Milliseconds()}
}

// handleTriggerClaim serves POST /v1/triggers/{name}/claim with
// {"consumer", "max_cells", "wait_ms"}. The wait is cut short to answer
// within the request deadline.
func (s *server) handleTriggerClaim(w http.ResponseWriter, r *http.Request) error {
	name, err := consumedTriggerName(r)
	if err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	req, err := decodeClaim(raw)
	if err != nil {
		return err
	}
	wait := time.Duration(req.waitMS) * time.Millisecond
	if wait > trigger.MaxWait {
		return cellar.Errorf(cellar.EINVALID, "wait_ms must be 0..%d", trigger.MaxWait.Milliseconds())
	}
	ctx := r.Context()
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, max(time.Until(d)-s.claimReserve(), 0))
	}
	c, err := s.opts.Triggers.Claim(ctx, name, req.consumer, req.maxCells, wait)
	if err != nil {
		return err
	}
	var lease *leaseJSON
	if c.Lease != nil {
		l := newLeaseJSON(*c.Lease)
		lease = &l
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Lease  *leaseJSON    `json:"lease"`
		Cells  []cellar.Cell `json:"cells"`
		Replay bool          `json:"replay,omitempty"`
		Paused bool          `json:"paused,omitempty"`
	}{lease, c.Cells, c.Replay, c.Paused})
	return nil
}

// claimReserve is the part of the request deadline a long poll leaves for
// leasing and reading the cells once they come.
func (s *server) claimReserve() time.Duration {
	return max(claimMargin, s.opts.RequestTimeout/4)
}

// handleTriggerAck serves POST /v1/triggers/{name}/ack with {"token",
// "shard", "added_id"}; 409 for a stale lease.
func (s *server) handleTriggerAck(w http.ResponseWriter, r *http.Request) error {
	name, req, err := s.ackRequest(w, r, opAck)
	if err != nil {
		return err
	}
	if err := s.opts.Triggers.Ack(r.Context(), name, req.token, req.shard, req.addedID); err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Shard   int   `json:"shard"`
		AddedID int64 `json:"added_id"`
	}{req.shard, req.addedID})
	return nil
}

// handleTriggerNack serves POST /v1/triggers/{name}/nack with {"token",
// "shard", "added_id", "error"}.
func (s *server) handleTriggerNack(w http.ResponseWriter, r *http.Request) error {
	name, req, err := s.ackRequest(w, r, opNack)
	if err != nil {
		return err
	}
	res, err := s.opts.Triggers.Nack(r.Context(), name, req.token, req.shard, req.addedID, req.errMsg)
	if err != nil {
		return err
	}
	var retryAt *string
	if !res.Parked {
		retryAt = formatTimePtr(&res.RetryAt)
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Parked   bool    `json:"parked"`
		Attempts int     `json:"attempts"`
		RetryAt  *string `json:"retry_at,omitempty"`
	}{res.Parked, res.Attempts, retryAt})
	return nil
}

// handleTriggerRenew serves POST /v1/triggers/{name}/renew with {"token",
// "shard"}: the lease is renewed for lease_ms from now; 409 for a stale
// lease.
func (s *server) handleTriggerRenew(w http.ResponseWriter, r *http.Request) error {
	name, req, err := s.ackRequest(w, r, opRenew)
	if err != nil {
		return err
	}
	l, err := s.opts.Triggers.Renew(r.Context(), name, req.token, req.shard)
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Lease leaseJSON `json:"lease"`
	}{newLeaseJSON(l)})
	return nil
}

func (s *server) ackRequest(w http.ResponseWriter, r *http.Request, op leaseOp) (string, ackReq, error) {
	name, err := consumedTriggerName(r)
	if err != nil {
		return "", ackReq{}, err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return "", ackReq{}, err
	}
	req, err := decodeAck(raw, op)
	return name, req, err
}

type parkedJSON struct {
	Shard     int        `json:"shard"`
	AddedID   int64      `json:"added_id"`
	Key       cellar.Key `json:"key"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error"`
	ParkedAt  string     `json:"parked_at"`
	Replaying bool       `json:"replaying"`
}

// handleTriggerParked serves GET /v1/triggers/{name}/parked?limit=N&after=S:ID
// in (shard, added_id) order; "next" is the after of the next page.
func (s *server) handleTriggerParked(w http.ResponseWriter, r *http.Request) error {
	name, err := triggerName(r)
	if err != nil {
		return err
	}
	q, err := query(r, "limit", "after")
	if err != nil {
		return err
	}
	limit := int64(100)
	if v, ok := q["limit"]; ok {
		if limit, err = parseUint("limit", v, 1, trigger.MaxCells); err != nil {
			return err
		}
	}
	afterShard, afterID := -1, int64(0)
	if v, ok := q["after"]; ok {
		if afterShard, afterID, err = parseParkedCursor(v); err != nil {
			return err
		}
	}
	cells, err := s.opts.Triggers.Parked(r.Context(), name, afterShard, afterID, int(limit))
	if err != nil {
		return err
	}
	out := make([]parkedJSON, len(cells))
	for i, p := range cells {
		out[i] = newParkedJSON(p)
	}
	var next *string
	if len(cells) == int(limit) {
		last := cells[len(cells)-1]
		n := strconv.Itoa(last.Shard) + ":" + strconv.FormatInt(last.AddedID, 10)
		next = &n
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Parked []parkedJSON `json:"parked"`
		Next   *string      `json:"next"`
	}{out, next})
	return nil
}

func newParkedJSON(p sqlstore.ParkedCell) parkedJSON {
	return parkedJSON{Shard: p.Shard, AddedID: p.AddedID, Key: p.Key, Attempts: p.Attempts, LastError: p.LastError,
		ParkedAt: cellar.FormatTime(p.ParkedAt), Replaying: p.Replay > 0}
}

// parseParkedCursor parses "shard:added_id".
func parseParkedCursor(v string) (int, int64, error) {
	for i := 0; i < len(v); i++ {
		if v[i] != ':' {
			continue
		}
		shard, err := parseUint("after shard", v[:i], 0, cellar.MaxShardCount)
		if err != nil {
			return 0, 0, err
		}
		id, err := parseUint("after added_id", v[i+1:], 0, 1<<63-1)
		if err != nil {
			return 0, 0, err
		}
		return int(shard), id, nil
	}
	return 0, 0, cellar.Errorf(cellar.EINVALID, "after must be SHARD:ADDED_ID, as a page's next")
}

// handleTriggerReplay serves POST /v1/triggers/{name}/parked/replay: every
// parked cell is delivered again.
func (s *server) handleTriggerReplay(w http.ResponseWriter, r *http.Request) error {
	return s.triggerAction(w, r, func(ctx context.Context, name string) (any, error) {
		n, err := s.opts.Triggers.Replay(ctx, name)
		return struct {
			Replayed int64 `json:"replayed"`
		}{n}, err
	})
}

// handleTriggerReset serves POST /v1/triggers/{name}/reset: every offset
// goes back to the start and every lease ends.
func (s *server) handleTriggerReset(w http.ResponseWriter, r *http.Request) error {
	return s.triggerAction(w, r, func(ctx context.Context, name string) (any, error) {
		err := s.opts.Triggers.Reset(ctx, name)
		return struct {
			Reset bool `json:"reset"`
		}{err == nil}, err
	})
}

// triggerAction serves a POST on a trigger that takes no body (an empty
// one, or {}).
func (s *server) triggerAction(w http.ResponseWriter, r *http.Request, f func(ctx context.Context, name string) (any, error)) error {
	name, err := triggerName(r)
	if err != nil {
		return err
	}
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	if err := decodeEmpty(raw); err != nil {
		return err
	}
	v, err := f(r.Context(), name)
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, v)
	return nil
}

// int reads a JSON integer literal at path in min..max.
func (d *docDecoder) int(path string, min, max int64) (int64, error) {
	v, err := d.raw()
	if err != nil {
		return 0, err
	}
	n, perr := strconv.ParseInt(string(v), 10, 64)
	if perr != nil || n < min || n > max {
		return 0, cellar.Errorf(cellar.EINVALID, "%s must be an integer in %d..%d, not %s", path, min, max, truncate(string(v), 40))
	}
	return n, nil
}

// decodeTriggerDef parses {"columns": [...], "start", "max_attempts",
// "park_threshold"}; the engine checks the values.
func decodeTriggerDef(raw []byte) (trigger.Definition, error) {
	var def trigger.Definition
	d, err := newDocDecoder(raw)
	if err != nil {
		return def, err
	}
	hasColumns := false
	err = d.object("request", func(name string) error {
		var err error
		var n int64
		switch name {
		case "columns":
			hasColumns = true
			def.Columns = []string{}
			return d.array("columns", trigger.MaxColumns, func(i int) error {
				c, err := d.string("columns[" + strconv.Itoa(i) + "]")
				def.Columns = append(def.Columns, c)
				return err
			})
		case "start":
			def.Start, err = d.string("start")
		case "max_attempts":
			n, err = d.int("max_attempts", 1, 1000)
			def.MaxAttempts = int(n)
		case "park_threshold":
			// 0 would read as "pause at the first parked cell", but the
			// engine takes it for the default: refuse it.
			n, err = d.int("park_threshold", 1, 1<<31-1)
			def.ParkThreshold = int(n)
		default:
			return unknownMember("request", name)
		}
		return err
	})
	if err != nil {
		return def, err
	}
	if !hasColumns {
		return def, missingMember("request", "columns")
	}
	return def, d.end()
}

type claimReq struct {
	consumer string
	maxCells int
	waitMS   int64
}

// decodeClaim parses {"consumer", "max_cells", "wait_ms"}; consumer is
// required.
func decodeClaim(raw []byte) (claimReq, error) {
	req := claimReq{maxCells: trigger.DefaultMaxCells}
	d, err := newDocDecoder(raw)
	if err != nil {
		return req, err
	}
	hasConsumer := false
	err = d.object("request", func(name string) error {
		var err error
		var n int64
		switch name {
		case "consumer":
			hasConsumer = true
			req.consumer, err = d.string("consumer")
		case "max_cells":
			n, err = d.int("max_cells", 1, trigger.MaxCells)
			req.maxCells = int(n)
		case "wait_ms":
			req.waitMS, err = d.int("wait_ms", 0, trigger.MaxWait.Milliseconds())
		default:
			return unknownMember("request", name)
		}
		return err
	})
	if err != nil {
		return req, err
	}
	if !hasConsumer {
		return req, missingMember("request", "consumer")
	}
	return req, d.end()
}

type ackReq struct {
	token   int64
	shard   int
	addedID int64
	errMsg  string
}

// leaseOp says which request made under a lease a body is for: their
// members differ.
type leaseOp int

const (
	opAck   leaseOp = iota // {"token", "shard", "added_id"}
	opNack                 // and "error"
	opRenew                // {"token", "shard"}
)

// decodeAck parses the body of an ack, a nack or a renewal (op): {"token",
// "shard"}, and "added_id" but for a renewal, and "error" for a nack. All
// but "error" are required.
func decodeAck(raw []byte, op leaseOp) (ackReq, error) {
	var req ackReq
	d, err := newDocDecoder(raw)
	if err != nil {
		return req, err
	}
	seen := map[string]bool{}
	err = d.object("request", func(name string) error {
		var err error
		var n int64
		seen[name] = true
		switch {
		case name == "token":
			req.token, err = d.int("token", 0, 1<<63-1)
		case name == "shard":
			n, err = d.int("shard", 0, cellar.MaxShardCount-1)
			req.shard = int(n)
		case name == "added_id" && op != opRenew:
			req.addedID, err = d.int("added_id", 1, 1<<63-1)
		case name == "error" && op == opNack:
			req.errMsg, err = d.string("error")
		default:
			return unknownMember("request", name)
		}
		return err
	})
	if err != nil {
		return req, err
	}
	required := []string{"token", "shard", "added_id"}
	if op == opRenew {
		required = required[:2]
	}
	for _, m := range required {
		if !seen[m] {
			return req, missingMember("request", m)
		}
	}
	return req, d.end()
}

// decodeEmpty accepts an empty body or {}.
func decodeEmpty(raw []byte) error {
	if len(raw) == 0 {
		return nil
	}
	d, err := newDocDecoder(raw)
	if err != nil {
		return err
	}
	if err := d.object("request", func(name string) error { return unknownMember("request", name) }); err != nil {
		return err
	}
	return d.end()
}
