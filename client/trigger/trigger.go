// Package trigger runs a handler under a cellar trigger: every cell of the
// trigger's columns is passed to it at least once, each shard's cells in
// added_id order, with several shards handled at once and the work shared
// with every other process running the same trigger.
//
//	err := trigger.Run(ctx, c, "welcome-mail", hostname, func(ctx context.Context, cell cellar.Cell) error {
//		return sendWelcome(ctx, cell)
//	}, trigger.Options{})
//
// A handler may see a cell more than once (after a crash, or when a lease
// ran out before its batch was acknowledged), so it should be idempotent.
// A handler error (or panic) retries the cell after a backoff; the server parks it
// after the trigger's max_attempts and the shard moves on.
package trigger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
)

// Handler handles one cell. An error fails this attempt at the cell.
type Handler func(ctx context.Context, cell cellar.Cell) error

// Options configure Run. Zero values take the defaults.
type Options struct {
	// Concurrency is how many shards are handled at once (default 4).
	Concurrency int
	// MaxCells is how many cells one claim asks for (default 100).
	MaxCells int
	// Wait is how long a claim waits for cells to arrive (default 2s; the
	// server cuts it to fit its request timeout).
	Wait time.Duration
	// RetryDelay is the pause after a claim failed, for example while the
	// server is unreachable (default 1s); it doubles with each failure in a
	// row, up to 8 times itself.
	RetryDelay time.Duration
	// Logger receives failed claims and refused acks (default
	// slog.Default()).
	Logger *slog.Logger
}

// Run handles the cells of trigger name as consumer until ctx is done, and
// then returns nil once the batches in progress have stopped: a batch cut
// short acknowledges what it handled. consumer names this process among
// the trigger's consumers; use one name per process (a host name and pid).
//
// Run returns an error without waiting for ctx only for errors that
// retrying cannot mend: an unknown trigger, a bad argument, a refused
// token.
func Run(ctx context.Context, c *client.Client, name, consumer string, handler Handler, opts Options) error {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 4
	}
	if opts.MaxCells <= 0 {
		opts.MaxCells = 100
	}
	if opts.Wait <= 0 {
		opts.Wait = 2 * time.Second
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &worker{c: c, name: name, consumer: consumer, handler: handler, opts: opts}
	var wg sync.WaitGroup
	var once sync.Once
	var failed error // the first error a loop could not mend
	for i := 0; i < opts.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.loop(ctx); err != nil {
				once.Do(func() { failed = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	return failed
}

type worker struct {
	c        *client.Client
	name     string
	consumer string
	handler  Handler
	opts     Options
}

// fatal reports errors that retrying cannot mend.
func fatal(err error) bool {
	switch cellar.ErrorCode(err) {
	case cellar.ENOTFOUND, cellar.EINVALID, cellar.EUNAUTHENTICATED, cellar.EPERMISSION:
		return true
	}
	return false
}

// loop claims and handles batches until ctx is done.
func (w *worker) loop(ctx context.Context) error {
	delay := w.opts.RetryDelay
	for ctx.Err() == nil {
		cl, err := w.c.ClaimTrigger(ctx, w.name, w.consumer, w.opts.MaxCells, w.opts.Wait)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if fatal(err) {
				return err
			}
			w.opts.Logger.WarnContext(ctx, "trigger claim failed", "trigger", w.name, "err", err, "retry_in", delay)
			// A server that is down is not hammered by every consumer
			// loop at once: the pause doubles, with some jitter.
			sleep(ctx, delay-time.Duration(rand.Int64N(int64(delay)/4+1)))
			delay = min(2*delay, 8*w.opts.RetryDelay)
			continue
		}
		delay = w.opts.RetryDelay
		if cl.Lease == nil {
			if cl.Paused {
				w.opts.Logger.WarnContext(ctx, "trigger is paused: too many parked cells", "trigger", w.name)
				sleep(ctx, w.opts.RetryDelay)
			}
			continue
		}
		if err := w.batch(ctx, cl); err != nil {
			return err
		}
	}
	return nil
}

// batch handles a claim's cells in order. It acknowledges progress when
// half the lease has gone, so that a long batch keeps its lease, and at
// the end; a failed cell is nacked (which acknowledges those before it)
// and ends the batch.
func (w *worker) batch(ctx context.Context, cl client.TriggerClaim) error {
	lease := *cl.Lease
	// Each ack renews the lease for lease_ms: renew every half of that,
	// timed on this clock (the server's expires_at is on its own; servers
	// older than lease_ms leave only that).
	ttl := time.Duration(lease.LeaseMS) * time.Millisecond
	if ttl <= 0 {
		ttl = time.Until(lease.ExpiresAt)
	}
	half := ttl / 2
	renewAt := time.Now().Add(half)
	// The lease's end on this clock, renewed with each ack: an ack or
	// nack sent after Run was told to stop waits for an answer no longer
	// than the lease lasts, after which it is moot.
	expires := time.Now().Add(ttl)
	settle := func() (context.Context, context.CancelFunc) {
		return context.WithDeadline(context.WithoutCancel(ctx), expires)
	}
	var done, acked int64 // added_ids of the last cell handled, and acked
	for _, cell := range cl.Cells {
		if ctx.Err() != nil {
			break
		}
		if err := w.handle(ctx, cell); err != nil {
			msg := err.Error()
			// Stopping is not the cell's fault: acknowledge what was done.
			if ctx.Err() != nil {
				break
			}
			sctx, cancel := settle()
			nerr := retry(sctx, func(ctx context.Context) error {
				_, err := w.c.NackTrigger(ctx, w.name, lease.Token, lease.Shard, cell.AddedID, msg)
				return err
			})
			cancel()
			return w.settled(ctx, lease, nerr)
		}
		done = cell.AddedID
		if time.Now().After(renewAt) {
			sent := time.Now()
			sctx, cancel := settle()
			err := retry(sctx, func(ctx context.Context) error { return w.c.AckTrigger(ctx, w.name, lease.Token, lease.Shard, done) })
			cancel()
			if err != nil {
				return w.settled(ctx, lease, err)
			}
			acked = done
			renewAt, expires = sent.Add(half), sent.Add(ttl)
		}
	}
	if done == acked {
		// Nothing handled since the last ack. (Acking a replayed cell
		// again is refused once a reset put it above the offset.)
		return nil
	}
	sctx, cancel := settle()
	defer cancel()
	err := retry(sctx, func(ctx context.Context) error { return w.c.AckTrigger(ctx, w.name, lease.Token, lease.Shard, done) })
	return w.settled(ctx, lease, err)
}

// retry sends an ack or nack until it is not refused as unavailable, or
// ctx (the lease) ends. Acks and nacks can be repeated: a repeated one
// answers as the first did.
func retry(ctx context.Context, send func(ctx context.Context) error) error {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := send(ctx)
		if cellar.ErrorCode(err) != cellar.EUNAVAILABLE || ctx.Err() != nil {
			return err
		}
		if sleep(ctx, wait); ctx.Err() != nil {
			return err
		}
	}
}

// handle runs the handler on cell; a panic fails the attempt like an
// error (and is nacked, so that a cell that always panics is parked after
// max_attempts instead of killing every consumer that claims it).
func (w *worker) handle(ctx context.Context, cell cellar.Cell) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
			w.opts.Logger.ErrorContext(ctx, "trigger handler panicked", "trigger", w.name, "shard", cell.Shard, "added_id", cell.AddedID, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	return w.handler(ctx, cell)
}

// settled handles the outcome of an ack or nack: a stale lease or an
// unreachable server means the batch will be delivered again (to this
// consumer or another), which at-least-once allows.
func (w *worker) settled(ctx context.Context, lease client.TriggerLease, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cellar.ErrConflict):
		w.opts.Logger.WarnContext(ctx, "trigger lease was lost; its cells will be delivered again", "trigger", w.name, "shard", lease.Shard, "err", err)
		return nil
	case cellar.ErrorCode(err) == cellar.EUNAUTHENTICATED || cellar.ErrorCode(err) == cellar.EPERMISSION:
		return err
	default:
		w.opts.Logger.WarnContext(ctx, "trigger ack failed", "trigger", w.name, "shard", lease.Shard, "err", err)
		return nil
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
