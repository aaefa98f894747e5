package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cellar-db/cellar"
)

// TriggerDefinition is what a trigger consumes and how it handles
// failures. Zero fields take the server's defaults.
type TriggerDefinition struct {
	Columns       []string `json:"columns"`
	Start         string   `json:"start,omitempty"` // "earliest" (default) or "latest"
	MaxAttempts   int      `json:"max_attempts,omitempty"`
	ParkThreshold int      `json:"park_threshold,omitempty"`
}

// Trigger is a trigger's stored definition.
type Trigger struct {
	Name          string    `json:"name"`
	Columns       []string  `json:"columns"`
	Start         string    `json:"start"`
	MaxAttempts   int       `json:"max_attempts"`
	ParkThreshold int       `json:"park_threshold"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// TriggerLease is a consumer's lease on one shard of a trigger.
type TriggerLease struct {
	Shard     int       `json:"shard"`
	Token     int64     `json:"token"`
	ExpiresAt time.Time `json:"expires_at"` // by the server's clock
	// LeaseMS is how long the lease lasts from its grant, and from each
	// ack and renewal, in milliseconds: time renewals by it on the local clock (0 from
	// servers older than this field).
	LeaseMS int64 `json:"lease_ms"`
}

// TriggerClaim is the answer to a claim: a lease and its cells in
// added_id order, or no lease when nothing was there to deliver.
type TriggerClaim struct {
	Lease  *TriggerLease `json:"lease"`
	Cells  []cellar.Cell `json:"cells"`
	Replay bool          `json:"replay"`
	Paused bool          `json:"paused"`
}

// TriggerShardStatus is one shard's progress in a trigger.
type TriggerShardStatus struct {
	Shard        int        `json:"shard"`
	Offset       int64      `json:"offset"`
	Head         int64      `json:"head"`
	LagCells     int64      `json:"lag_cells"`
	LagSeconds   float64    `json:"lag_seconds"`
	Owner        string     `json:"owner"`
	Token        int64      `json:"token"`
	ExpiresAt    *time.Time `json:"expires_at"`
	Parked       int        `json:"parked"`
	RetryAddedID int64      `json:"retry_added_id"`
	Attempts     int        `json:"attempts"`
	LastError    string     `json:"last_error"`
	RetryAt      *time.Time `json:"retry_at"`
}

// TriggerStatus is a trigger's progress.
type TriggerStatus struct {
	Trigger Trigger              `json:"trigger"`
	Paused  bool                 `json:"paused"`
	Reason  string               `json:"reason"`
	Shards  []TriggerShardStatus `json:"shards"`
	Totals  struct {
		LagCells     int64   `json:"lag_cells"`
		LagSeconds   float64 `json:"lag_seconds"`
		Parked       int     `json:"parked"`
		Leases       int     `json:"leases"`
		ShardsBehind int     `json:"shards_behind"`
		Unknown      int     `json:"unknown"`
	} `json:"totals"`
}

// ParkedCell is a cell whose handler failed max_attempts times.
type ParkedCell struct {
	Shard     int        `json:"shard"`
	AddedID   int64      `json:"added_id"`
	Key       cellar.Key `json:"key"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error"`
	ParkedAt  time.Time  `json:"parked_at"`
	Replaying bool       `json:"replaying"`
}

// NackResult says what became of a failed cell.
type NackResult struct {
	Parked   bool       `json:"parked"`
	Attempts int        `json:"attempts"`
	RetryAt  *time.Time `json:"retry_at"`
}

func triggerPath(name string) (string, error) {
	seg, err := segment("trigger name", name)
	if err != nil {
		return "", err
	}
	return "/v1/triggers/" + seg, nil
}

// DefineTrigger creates trigger name or updates its definition; created
// tells which.
func (c *Client) DefineTrigger(ctx context.Context, name string, def TriggerDefinition) (t Trigger, created bool, err error) {
	path, err := triggerPath(name)
	if err != nil {
		return t, false, err
	}
	body, err := encode(def)
	if err != nil {
		return t, false, cellar.Internal(err, "encode trigger definition")
	}
	status, err := c.do(ctx, http.MethodPut, path, nil, body, &t)
	return t, status == http.StatusCreated, err
}

// Triggers lists the triggers, by name.
func (c *Client) Triggers(ctx context.Context) ([]Trigger, error) {
	var resp struct {
		Triggers []Trigger `json:"triggers"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/triggers", nil, nil, &resp)
	return resp.Triggers, err
}

// TriggerStatus returns the progress of trigger name. Returns ErrNotFound
// if there is no such trigger.
func (c *Client) TriggerStatus(ctx context.Context, name string) (TriggerStatus, error) {
	var st TriggerStatus
	path, err := triggerPath(name)
	if err != nil {
		return st, err
	}
	_, err = c.do(ctx, http.MethodGet, path, nil, nil, &st)
	return st, err
}

// ClaimTrigger leases a shard of trigger name with cells for consumer and
// returns up to maxCells of them (0: the server's default), waiting up to
// wait for some to arrive. The server cuts the wait short to answer within
// its request timeout.
func (c *Client) ClaimTrigger(ctx context.Context, name, consumer string, maxCells int, wait time.Duration) (TriggerClaim, error) {
	var cl TriggerClaim
	path, err := triggerPath(name)
	if err != nil {
		return cl, err
	}
	req := struct {
		Consumer string `json:"consumer"`
		MaxCells int    `json:"max_cells,omitempty"`
		WaitMS   int64  `json:"wait_ms"`
	}{consumer, maxCells, wait.Milliseconds()}
	body, err := encode(req)
	if err != nil {
		return cl, cellar.Internal(err, "encode claim")
	}
	_, err = c.do(ctx, http.MethodPost, path+"/claim", nil, body, &cl)
	return cl, err
}

type ackBody struct {
	Token   int64   `json:"token"`
	Shard   int     `json:"shard"`
	AddedID int64   `json:"added_id"`
	Error   *string `json:"error,omitempty"`
}

// AckTrigger records that the cells of shard up to addedID, delivered
// under the lease with token, were handled. Returns ErrConflict if the
// lease is stale (it expired and another consumer took the shard): the
// ack changed nothing.
func (c *Client) AckTrigger(ctx context.Context, name string, token int64, shard int, addedID int64) error {
	path, err := triggerPath(name)
	if err != nil {
		return err
	}
	body, err := encode(ackBody{token, shard, addedID, nil})
	if err != nil {
		return cellar.Internal(err, "encode ack")
	}
	var resp struct{}
	_, err = c.do(ctx, http.MethodPost, path+"/ack", nil, body, &resp)
	return err
}

// NackTrigger records that the handler failed on cell addedID of shard
// with message msg; the cells before it in the batch count as handled.
// Returns ErrConflict for a stale lease, as AckTrigger does.
func (c *Client) NackTrigger(ctx context.Context, name string, token int64, shard int, addedID int64, msg string) (NackResult, error) {
	var res NackResult
	path, err := triggerPath(name)
	if err != nil {
		return res, err
	}
	body, err := encode(ackBody{token, shard, addedID, &msg})
	if err != nil {
		return res, cellar.Internal(err, "encode nack")
	}
	_, err = c.do(ctx, http.MethodPost, path+"/nack", nil, body, &res)
	return res, err
}

// RenewTrigger renews the lease with token on shard of trigger name for
// its lease_ms from now, without acknowledging anything, and returns it:
// a handler that takes long on one cell keeps its shard. Returns
// ErrConflict if the lease is stale (it expired and another consumer took
// the shard, the trigger was reset, or a nack ended it): the renewal
// changed nothing, and the shard's cells will be delivered to its new
// owner.
func (c *Client) RenewTrigger(ctx context.Context, name string, token int64, shard int) (TriggerLease, error) {
	var resp struct {
		Lease TriggerLease `json:"lease"`
	}
	path, err := triggerPath(name)
	if err != nil {
		return resp.Lease, err
	}
	body, err := encode(struct {
		Token int64 `json:"token"`
		Shard int   `json:"shard"`
	}{token, shard})
	if err != nil {
		return resp.Lease, cellar.Internal(err, "encode renewal")
	}
	_, err = c.do(ctx, http.MethodPost, path+"/renew", nil, body, &resp)
	return resp.Lease, err
}

// ParkedCells returns up to limit parked cells of trigger name after the
// cursor after ("" for the first page), and the cursor of the next page
// ("" after the last). limit is 1..1000; the server refuses others.
func (c *Client) ParkedCells(ctx context.Context, name, after string, limit int) ([]ParkedCell, string, error) {
	path, err := triggerPath(name)
	if err != nil {
		return nil, "", err
	}
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	q.Set("limit", strconv.Itoa(limit))
	var resp struct {
		Parked []ParkedCell `json:"parked"`
		Next   *string      `json:"next"`
	}
	if _, err := c.do(ctx, http.MethodGet, path+"/parked", q, nil, &resp); err != nil {
		return nil, "", err
	}
	next := ""
	if resp.Next != nil {
		next = *resp.Next
	}
	return resp.Parked, next, nil
}

// ReplayParked delivers every parked cell of trigger name again, and
// returns how many.
func (c *Client) ReplayParked(ctx context.Context, name string) (int64, error) {
	path, err := triggerPath(name)
	if err != nil {
		return 0, err
	}
	var resp struct {
		Replayed int64 `json:"replayed"`
	}
	_, err = c.do(ctx, http.MethodPost, path+"/parked/replay", nil, []byte("{}"), &resp)
	return resp.Replayed, err
}

// DeleteTrigger removes trigger name with all of its state (offsets,
// leases, parked cells). It needs a token with the admin scope; an
// unknown trigger is ErrNotFound.
func (c *Client) DeleteTrigger(ctx context.Context, name string) error {
	path, err := triggerPath(name)
	if err != nil {
		return err
	}
	var resp struct{}
	_, err = c.do(ctx, http.MethodDelete, path, nil, []byte("{}"), &resp)
	return err
}

// ResetTrigger sets every offset of trigger name back to the start (every
// cell is delivered again) and ends every lease. It needs the admin scope.
func (c *Client) ResetTrigger(ctx context.Context, name string) error {
	path, err := triggerPath(name)
	if err != nil {
		return err
	}
	var resp struct{}
	_, err = c.do(ctx, http.MethodPost, path+"/reset", nil, []byte("{}"), &resp)
	return err
}
