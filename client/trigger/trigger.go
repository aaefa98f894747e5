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
// Run renews the lease of a batch while it is handled, so a handler may
// take longer than the lease on one cell; when the lease is lost anyway
// (another consumer took the shard), the handler's context is cancelled
// with cause ErrLeaseLost.
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
	"unicode/utf8"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
)

// Handler handles one cell. An error fails this attempt at the cell. ctx
// is cancelled when Run stops, and with cause ErrLeaseLost when the lease
// of the cell's batch was lost: the handler should then stop, as the cell
// will be delivered again.
type Handler func(ctx context.Context, cell cellar.Cell) error

// The server's limits on a claim, which Options are held to.
const (
	maxClaimCells = 1000
	maxClaimWait  = time.Minute
	// maxErrorBytes is how much of a handler's error a nack sends: what
	// the server keeps. The whole of a long one would be refused (its
	// body too large), and the cell never nacked nor parked.
	maxErrorBytes = 1000
)

// Options configure Run. Zero values take the defaults.
type Options struct {
	// Concurrency is how many shards are handled at once (default 4).
	Concurrency int
	// MaxCells is how many cells one claim asks for (default 100; at most
	// 1000, the server's limit: more is asked as 1000).
	MaxCells int
	// Wait is how long a claim waits for cells to arrive (default 2s; at
	// most 1 minute, the server's limit: longer is asked as 1 minute; the
	// server cuts it further to fit its request timeout).
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
	opts.MaxCells = min(opts.MaxCells, maxClaimCells)
	if opts.Wait <= 0 {
		opts.Wait = 2 * time.Second
	}
	// The server takes whole milliseconds: a wait below one would be none,
	// and an idle loop would claim without a pause.
	opts.Wait = min(max(opts.Wait, time.Millisecond), maxClaimWait)
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = time.Second
	}
	opts.RetryDelay = min(opts.RetryDelay, time.Hour) // 8 times it must not overflow
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

// batch handles a claim's cells in order. A keeper renews the lease in
// the background while the cells are handled, so that a handler may take
// longer than the lease on one cell; progress is acknowledged when half
// the lease has gone (so that a crash or a lost lease delivers again less
// of a long batch), and at the end. A failed cell is nacked (which
// acknowledges those before it) and ends the batch. A lost lease cancels
// the handler's context with ErrLeaseLost and ends the batch with neither
// ack nor nack.
func (w *worker) batch(ctx context.Context, cl client.TriggerClaim) error {
	lease := *cl.Lease
	// Each ack and renewal renews the lease for lease_ms: time that on
	// this clock (the server's expires_at is on its own; servers older
	// than lease_ms leave only that).
	ttl := time.Duration(lease.LeaseMS) * time.Millisecond
	if ttl <= 0 {
		ttl = time.Until(lease.ExpiresAt)
	}
	half := ttl / 2
	start := time.Now()
	renewAt := start.Add(half)
	k := w.keep(ctx, lease, ttl, start)
	defer k.close()
	// An ack or nack sent after Run was told to stop waits for an answer
	// no longer than the lease lasts (on this clock), after which it is
	// moot.
	settle := func() (context.Context, context.CancelFunc) {
		return context.WithDeadline(context.WithoutCancel(ctx), k.expiry())
	}
	var done, acked int64 // added_ids of the last cell handled, and acked
	for _, cell := range cl.Cells {
		if k.ctx.Err() != nil {
			break
		}
		if err := w.handle(k.ctx, cell); err != nil {
			msg := cut(err.Error(), maxErrorBytes)
			// Stopping, or losing the lease, is not the cell's fault.
			if k.ctx.Err() != nil {
				break
			}
			if k.halt() != nil {
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
		if k.ctx.Err() == nil && time.Now().After(renewAt) {
			sent := time.Now()
			sctx, cancel := settle()
			err := retry(sctx, func(ctx context.Context) error { return w.c.AckTrigger(ctx, w.name, lease.Token, lease.Shard, done) })
			cancel()
			if err != nil {
				k.halt()
				return w.settled(ctx, lease, err)
			}
			acked = done
			renewAt = sent.Add(half)
			k.renewed(sent)
		}
	}
	if err := k.halt(); err != nil {
		// Acking under the lost token would be refused; the cells since
		// the last ack will be delivered again.
		w.opts.Logger.WarnContext(ctx, "trigger lease was lost while its batch was handled; its cells will be delivered again",
			"trigger", w.name, "shard", lease.Shard, "err", err)
		return nil
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

// ErrLeaseLost is what the cause (context.Cause) with which a handler's
// context is cancelled matches (errors.Is; the cause says which lease
// and why) when the lease of its batch was lost: a renewal
// was refused as stale (the lease expired and another consumer took the
// shard, or the trigger was reset), or no renewal reached the server
// before the lease ran out on this clock. The batch's cells will be
// delivered again, maybe to another consumer: the handler should stop.
var ErrLeaseLost = errors.New("trigger lease lost")

// keeper renews a batch's lease every third of lease_ms, from when it is
// started until it is halted (before the batch's last ack or nack), and
// cancels ctx, the handlers' context, once the lease is lost. batch owns
// it: it starts it with the batch and closes it when the batch ends.
type keeper struct {
	w     *worker
	lease client.TriggerLease
	ttl   time.Duration
	// ctx is the handlers' context: Run's, cancelled with ErrLeaseLost
	// when the lease is lost.
	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   context.CancelFunc // stops the renewals
	done   chan struct{}      // closed when the renewals have stopped

	mu      sync.Mutex // protects expires and lost
	expires time.Time  // the lease's end on this clock, moved by each renewal and ack
	lost    error      // why the lease was lost; nil while it is held
}

// keep starts a keeper of lease, granted for ttl at granted (on this
// clock).
func (w *worker) keep(ctx context.Context, lease client.TriggerLease, ttl time.Duration, granted time.Time) *keeper {
	k := &keeper{w: w, lease: lease, ttl: ttl, expires: granted.Add(ttl), done: make(chan struct{})}
	k.ctx, k.cancel = context.WithCancelCause(ctx)
	// Renewals go on after Run is told to stop, until the batch is acked
	// or nacked (halt): a handler finishing its cell keeps its shard, and
	// the ack of what it handled has the lease to be sent in.
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	k.stop = stop
	if ttl/3 <= 0 {
		close(k.done) // no lease left to renew
		return k
	}
	go k.run(rctx, ttl/3)
	return k
}

// run renews the lease every interval until ctx is done, the lease is
// lost, or the server answers not found (a server older than renewals, or
// the trigger is gone; then only acks renew the lease). A renewal that
// fails otherwise (unavailable, internal) is tried again at the next tick
// while the lease lasts on this clock.
func (k *keeper) run(ctx context.Context, every time.Duration) {
	defer close(k.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		end := k.expiry()
		if !sent.Before(end) {
			k.lose(fmt.Errorf("%w: no renewal of shard %d (token %d) reached the server within the lease (%v)", ErrLeaseLost, k.lease.Shard, k.lease.Token, k.ttl))
			return
		}
		// An attempt waits no longer than a tick, nor than the lease lasts.
		if next := sent.Add(every); next.Before(end) {
			end = next
		}
		rctx, cancel := context.WithDeadline(ctx, end)
		_, err := k.w.c.RenewTrigger(rctx, k.w.name, k.lease.Token, k.lease.Shard)
		cancel()
		switch {
		case err == nil:
			k.renewed(sent)
		case ctx.Err() != nil:
			return // halted
		case errors.Is(err, cellar.ErrConflict):
			k.lose(fmt.Errorf("%w: shard %d (token %d): %w", ErrLeaseLost, k.lease.Shard, k.lease.Token, err))
			return
		case errors.Is(err, cellar.ErrNotFound):
			// A server older than renewals (or the trigger is gone).
			k.w.opts.Logger.WarnContext(ctx, "trigger lease renewal refused; the lease is renewed by acks only", "trigger", k.w.name, "shard", k.lease.Shard, "err", err)
			return
		default:
			// Unavailable, or any other failure: tried again at the next
			// tick while the lease lasts on this clock.
			k.w.opts.Logger.WarnContext(ctx, "trigger lease renewal failed; trying again", "trigger", k.w.name, "shard", k.lease.Shard, "err", err)
		}
	}
}

// renewed records a renewal (or ack) sent at sent and accepted.
func (k *keeper) renewed(sent time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if end := sent.Add(k.ttl); end.After(k.expires) {
		k.expires = end
	}
}

// expiry returns the lease's end on this clock.
func (k *keeper) expiry() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.expires
}

// lose records that the lease was lost, and cancels the handlers.
func (k *keeper) lose(err error) {
	k.mu.Lock()
	k.lost = err
	k.mu.Unlock()
	k.cancel(err)
}

// halt stops the renewals, waits for them, and returns why the lease was
// lost, or nil.
func (k *keeper) halt() error {
	k.stop()
	<-k.done
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost
}

// close halts the keeper and releases the handlers' context.
func (k *keeper) close() {
	k.halt()
	k.cancel(context.Canceled)
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

// cut returns s cut to at most n bytes on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
