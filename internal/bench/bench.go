// Package bench is the harness behind `cellar bench`. It measures cellar's
// HTTP API (the real handler over the sharding layer over one node, served
// on a loopback port in this process) against the floor: the same SQL
// statements issued straight through the database/sql driver, at the same
// concurrency, on the same connection pool. The API is driven twice: by a
// lean load generator (package loadgen), which measures the server, and
// through the public Go client, which decodes every response. It also
// measures what SQLite's group commit buys.
//
// Every backend run gets a fresh database (a temporary directory for
// SQLite; CREATE DATABASE cellar_bench_<random> on PostgreSQL and MySQL,
// dropped at the end).
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cellar-db/cellar/internal/buildinfo"

	"github.com/cellar-db/cellar"
)

// Config says what to measure.
type Config struct {
	Backends    []string // from Backends
	Ops         []string // from Ops
	Concurrency []int
	Duration    time.Duration // measured time of each cell of the matrix, per side
	Warmup      time.Duration // unmeasured time before each measured window
	// Rounds splits each side's measured time into this many windows,
	// the sides (lean load generator, Go client, direct) taking turns, so
	// that a noisy neighbour weighs on them alike; default 1.
	Rounds int
	// Rows is the number of preloaded rows; each has 2 cells.
	Rows int
	// Shards is the datastore's shard count (default
	// cellar.DefaultShardCount).
	Shards int
	// PostgresDSN and MySQLDSN name servers on which to create scratch
	// databases; a backend without one is skipped.
	PostgresDSN string
	MySQLDSN    string
	// SQLiteDir is where SQLite's temporary directories go (default
	// os.TempDir()). Put it on the disk whose fsync you mean to measure.
	SQLiteDir string
	// GroupCommit runs the SQLite group commit comparison, at
	// GroupCommitConcurrency (default 64), if sqlite and put are measured.
	GroupCommit            bool
	GroupCommitConcurrency int
	// CoalesceReads is the node's sqlstore.Options.CoalesceReads: 0 for
	// the default, negative to read every get and latest alone.
	CoalesceReads int
	// ProfileDir, if set, receives a CPU profile of each measured cell.
	ProfileDir string
	// Command is the command line, for the report.
	Command string
	// Log receives progress and the servers' warnings (default: discarded).
	Log io.Writer
}

// Targets from the issue.
const (
	// TargetLatestRatio is the share of direct-driver throughput that
	// latest reads over HTTP should reach on PostgreSQL at TargetConc.
	TargetLatestRatio = 0.5
	TargetConc        = 64
	// TargetGroupCommit is the speed-up group commit should give durable
	// SQLite puts at TargetConc.
	TargetGroupCommit = 5.0
)

// Report is the outcome of Run.
type Report struct {
	Command     string   `json:"command"`
	Date        string   `json:"date"`
	Commit      string   `json:"commit"`
	GoVersion   string   `json:"go_version"`
	Platform    string   `json:"platform"`
	GOMAXPROCS  int      `json:"gomaxprocs"`
	NumCPU      int      `json:"num_cpu"`
	CPU         string   `json:"cpu,omitempty"`
	LoadBefore  string   `json:"load_average_before,omitempty"`
	LoadAfter   string   `json:"load_average_after,omitempty"`
	Duration    string   `json:"duration"`
	Warmup      string   `json:"warmup"`
	Rounds      int      `json:"rounds"`
	Rows        int      `json:"rows"`
	CellsPerRow int      `json:"cells_per_row"`
	Shards      int      `json:"shards"`
	BatchKeys   int      `json:"batch_keys"`
	BodyBytes   int      `json:"body_bytes"`
	Method      []string `json:"method"`

	Backends    []BackendReport `json:"backends"`
	GroupCommit *GroupCommit    `json:"group_commit,omitempty"`
	Targets     []Target        `json:"targets"`
}

// BackendReport holds one backend's matrix.
type BackendReport struct {
	Name    string   `json:"name"`
	Skipped string   `json:"skipped,omitempty"` // why it did not run
	Error   string   `json:"error,omitempty"`   // why it stopped
	Server  string   `json:"server,omitempty"`
	Results []Result `json:"results,omitempty"`
}

// Coalesced counts the node's statements that answered more than one get
// or latest (sqlstore.Store.CoalesceStats) during one cell of the matrix,
// both cellar sides and their warm-ups included.
type Coalesced struct {
	Statements int64 `json:"statements"`
	Reads      int64 `json:"reads"`
}

// Result is one cell of the matrix: an operation at a concurrency, over
// cellar's HTTP API and directly through the driver.
type Result struct {
	Op          string    `json:"op"`
	Concurrency int       `json:"concurrency"`
	Coalesced   Coalesced `json:"coalesced"`
	// Cellar is the HTTP API driven by the lean load generator.
	Cellar Stats `json:"cellar"`
	// Client is the HTTP API driven through the public Go client.
	Client Stats `json:"client"`
	Direct Stats `json:"direct"`
	// Ratio is cellar's throughput over the direct driver's, and
	// ClientRatio the same through the Go client.
	Ratio       float64 `json:"ratio"`
	ClientRatio float64 `json:"client_ratio"`
}

// GroupCommit compares durable SQLite puts over HTTP with group commit and
// with one transaction per put, driven by the lean load generator and, as
// a second measurement, through the Go client.
type GroupCommit struct {
	Concurrency  int     `json:"concurrency"`
	Group        Stats   `json:"group_commit"`
	Single       Stats   `json:"one_tx_per_put"`
	Ratio        float64 `json:"ratio"`
	ClientGroup  Stats   `json:"client_group_commit"`
	ClientSingle Stats   `json:"client_one_tx_per_put"`
	ClientRatio  float64 `json:"client_ratio"`
	// RoundRatios holds each round's ratio (with Config.Rounds > 1), and
	// ClientRoundRatios the same through the Go client.
	RoundRatios       []float64 `json:"round_ratios,omitempty"`
	ClientRoundRatios []float64 `json:"client_round_ratios,omitempty"`
	Error             string    `json:"error,omitempty"`
}

// Target is one of the targets and whether this run met it.
type Target struct {
	Name     string `json:"name"`
	Measured bool   `json:"measured"`
	Met      bool   `json:"met"`
	Detail   string `json:"detail"`
}

// Run measures what cfg asks for. A backend that fails is reported as
// such and the others still run; the error returned then says which
// failed. If ctx ends, Run returns what it has measured so far.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	rep := newReport(&cfg)
	err := runAll(ctx, &runner{cfg: &cfg}, rep)
	rep.Targets = targets(rep)
	rep.LoadAfter = loadAverage()
	return rep, err
}

func runAll(ctx context.Context, rn *runner, rep *Report) error {
	cfg := rn.cfg
	var errs []error
	for _, engine := range cfg.Backends {
		br := rn.backend(ctx, engine)
		rep.Backends = append(rep.Backends, br)
		if err := ctx.Err(); err != nil {
			return err
		}
		if br.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", engine, br.Error))
		}
	}
	if cfg.GroupCommit && contains(cfg.Backends, "sqlite") && contains(cfg.Ops, "put") {
		gc := rn.groupCommit(ctx)
		rep.GroupCommit = &gc
		if err := ctx.Err(); err != nil {
			return err
		}
		if gc.Error != "" {
			errs = append(errs, fmt.Errorf("group commit: %s", gc.Error))
		}
	}
	return errors.Join(errs...)
}

func (cfg *Config) check() error {
	if len(cfg.Backends) == 0 || len(cfg.Ops) == 0 || len(cfg.Concurrency) == 0 {
		return fmt.Errorf("bench: backends, ops and concurrency must not be empty")
	}
	for _, b := range cfg.Backends {
		if !contains(Backends, b) {
			return fmt.Errorf("bench: unknown backend %q", b)
		}
	}
	for _, o := range cfg.Ops {
		if !contains(Ops, o) {
			return fmt.Errorf("bench: unknown op %q", o)
		}
	}
	if cfg.Duration <= 0 || cfg.Warmup < 0 {
		return fmt.Errorf("bench: duration must be positive and warm-up not negative")
	}
	if cfg.Rows < 1 {
		return fmt.Errorf("bench: rows must be positive")
	}
	if cfg.Rounds == 0 {
		cfg.Rounds = 1
	}
	if cfg.Rounds < 0 || cfg.Duration/time.Duration(cfg.Rounds) <= 0 {
		return fmt.Errorf("bench: rounds must be 1 or more, and at most the duration in nanoseconds")
	}
	if cfg.Shards == 0 {
		cfg.Shards = cellar.DefaultShardCount
	}
	if cfg.GroupCommitConcurrency == 0 {
		cfg.GroupCommitConcurrency = TargetConc
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}

func contains[T comparable](xs []T, x T) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func newReport(cfg *Config) *Report {
	return &Report{
		Command:     cfg.Command,
		Date:        time.Now().UTC().Format(time.RFC3339),
		Commit:      gitCommit(),
		GoVersion:   runtime.Version(),
		Platform:    runtime.GOOS + "/" + runtime.GOARCH,
		GOMAXPROCS:  runtime.GOMAXPROCS(0),
		NumCPU:      runtime.NumCPU(),
		CPU:         cpuModel(),
		LoadBefore:  loadAverage(),
		Duration:    cfg.Duration.String(),
		Warmup:      cfg.Warmup.String(),
		Rounds:      cfg.Rounds,
		Rows:        cfg.Rows,
		CellsPerRow: refs,
		Shards:      cfg.Shards,
		BatchKeys:   batchKeys,
		BodyBytes:   len(body(0)),
		Method: []string{
			"cellar: the real HTTP handler (internal/http over the sharding layer over one node, wired as `cellar serve` wires it, metrics on) served by net/http on 127.0.0.1:0 in this process, driven by the lean load generator (internal/bench/loadgen, as wrk does): each worker owns one keep-alive HTTP/1.1 connection and writes its request as bytes (read requests built once per data set, batchGet and put requests built per operation), one request in flight per connection (no pipelining), and reads the status line, headers and body without decoding the JSON; it checks the status (201 for puts, 200 otherwise), that the body is a JSON object and, for batchGet, that every key's cell came back.",
			"via Go client: the same server driven through the public client package (net/http Transport, keep-alive, MaxIdleConnsPerHost >= 128); responses are decoded into cellar.Cell values. ratio via Go client = its ops/s / direct ops/s.",
			"direct: the statements sqlstore issues, sent through database/sql on the node's own connection pool (SQLite puts: a single write connection like the node's), results scanned into the same Go types; put = InsertSeq once per shard, then BEGIN; LockSeq; InsertCell; UPDATE shard_seq; COMMIT.",
			"Each op and concurrency runs warm-up then the measured window, over HTTP with the lean generator, then through the Go client, then direct; with rounds > 1, each side's measured time is split into that many windows (each after its own warm-up) and the three sides take turns, round by round, so that other work on the machine weighs on all of them; workers issue operations back to back; operations completing inside the window count; latency of every operation is kept and p50/p99 are exact (linear interpolation between closest ranks). ratio = cellar ops/s / direct ops/s.",
			"CPU: this process's CPU time (server and load generator) from /proc/self/stat, the database server's (PostgreSQL: the backends connected to the bench's database, not the shared background processes such as the WAL writer; MySQL: the whole server process, whatever else it serves) from /proc/<pid>/stat, and the whole machine's from /proc/stat, each at the edges of the measured window, per successful operation. With --cpuprofile-dir, the profiles label goroutines role=server, role=loadgen, role=client or role=direct (`go tool pprof -tags`).",
			fmt.Sprintf("Data: %d rows x %d ref_keys in column %q, spread over %d shards; reads pick a row (and ref_key) uniformly; puts write new rows; batchGet = %d keys per request (5 exact ref_key, 5 latest); bodies are %d-byte JSON objects.",
				cfg.Rows, refs, column, cfg.Shards, batchKeys, len(body(0))),
			"The load generator, the server and the database servers share this machine's CPUs.",
		},
	}
}

// runner runs the measurements of one Run, one at a time.
type runner struct {
	cfg   *Config
	cells int // measured so far; numbers put keys, to keep them unique
}

// backend runs the matrix on a fresh datastore of engine.
func (rn *runner) backend(ctx context.Context, engine string) BackendReport {
	cfg := rn.cfg
	br := BackendReport{Name: engine}
	switch {
	case engine == "postgres" && cfg.PostgresDSN == "":
		br.Skipped = "no DSN: set --postgres-dsn or CELLAR_TEST_POSTGRES_DSN"
		fmt.Fprintf(cfg.Log, "%s: skipped (%s)\n", engine, br.Skipped)
		return br
	case engine == "mysql" && cfg.MySQLDSN == "":
		br.Skipped = "no DSN: set --mysql-dsn or CELLAR_TEST_MYSQL_DSN"
		fmt.Fprintf(cfg.Log, "%s: skipped (%s)\n", engine, br.Skipped)
		return br
	}
	fail := func(err error) BackendReport {
		br.Error = err.Error()
		fmt.Fprintf(cfg.Log, "%s: %v\n", engine, err)
		return br
	}
	t, err := openTarget(ctx, cfg, engine, false)
	if err != nil {
		return fail(fmt.Errorf("open: %w", err))
	}
	defer func() {
		if err := t.Close(); err != nil {
			fmt.Fprintf(cfg.Log, "%s: close: %v\n", engine, err)
		}
	}()
	br.Server = t.info
	if err := rn.setUp(ctx, t); err != nil {
		return fail(err)
	}
	for _, opName := range cfg.Ops {
		for _, conc := range cfg.Concurrency {
			r := Result{Op: opName, Concurrency: conc}
			sides := []struct {
				mode  string
				newOp func(*workload) op
				dst   *Stats
			}{
				{"cellar", func(wl *workload) op { return t.lean.op(opName, wl) }, &r.Cellar},
				{"client", func(wl *workload) op { return cellarOp(t.client, opName, wl) }, &r.Client},
				{"direct", func(wl *workload) op { return t.direct.op(opName, wl) }, &r.Direct},
			}
			// In rounds, the sides take turns, so that other work on the
			// machine weighs on them alike.
			stmts0, reads0 := t.node.CoalesceStats()
			got := make([]measured, len(sides))
			for round := range cfg.Rounds {
				suffix := ""
				if cfg.Rounds > 1 {
					suffix = fmt.Sprintf("-r%d", round+1)
				}
				for i, sd := range sides {
					m, err := rn.window(ctx, t, sd.mode, opName, conc, cfg.Duration/time.Duration(cfg.Rounds), suffix, sd.newOp)
					t.lean.closeConns()
					if err != nil {
						return fail(err)
					}
					got[i].add(m)
				}
			}
			for i, sd := range sides {
				*sd.dst = rn.summarize(t, sd.mode, opName, conc, got[i])
			}
			stmts, reads := t.node.CoalesceStats()
			r.Coalesced = Coalesced{Statements: stmts - stmts0, Reads: reads - reads0}
			if r.Direct.OpsPerSec > 0 {
				r.Ratio = r.Cellar.OpsPerSec / r.Direct.OpsPerSec
				r.ClientRatio = r.Client.OpsPerSec / r.Direct.OpsPerSec
			}
			br.Results = append(br.Results, r)
		}
	}
	return br
}

// modes name the sides of a measurement in progress lines and profiles.
var modes = map[string]string{"cellar": "loadgen", "client": "client", "direct": "direct"}

// setUp brings a fresh datastore to the state of one that has been in use
// for a while: every shard's sequence row exists (created in one
// transaction, not by the first write to each shard, which costs a commit
// per shard), the data set is loaded, and the planner's statistics are
// fresh, as autovacuum or a DBA would have left them.
func (rn *runner) setUp(ctx context.Context, t *target) error {
	cfg := rn.cfg
	start := time.Now()
	fmt.Fprintf(cfg.Log, "%s: preloading %d cells\n", t.engine, cfg.Rows*refs)
	if err := t.direct.createSeqs(ctx); err != nil {
		return err
	}
	if err := preload(ctx, t.node, cfg.Rows); err != nil {
		return err
	}
	var stmt string
	switch t.engine {
	case "postgres":
		stmt = "ANALYZE cells"
	case "mysql":
		stmt = "ANALYZE TABLE cells"
	}
	if stmt != "" {
		if _, err := t.node.DB().ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("analyze: %w", err)
		}
	}
	fmt.Fprintf(cfg.Log, "%s: preloaded in %s\n", t.engine, time.Since(start).Round(time.Millisecond))
	return nil
}

// window runs one warm-up and one measured window of d of one side.
// profileSuffix tells the profiles of a side's rounds apart.
func (rn *runner) window(ctx context.Context, t *target, mode, opName string, conc int, d time.Duration, profileSuffix string, newOp func(*workload) op) (measured, error) {
	cfg := rn.cfg
	rn.cells++
	base, _, _ := strings.Cut(mode, "/")
	w := window{conc: conc, warmup: cfg.Warmup, measure: d, role: modes[base], dbPIDs: t.dbPIDs}
	if cfg.ProfileDir != "" {
		w.profile = filepath.Join(cfg.ProfileDir, fmt.Sprintf("%s-%s-c%d-%s%s.pprof", t.engine, opName, conc, strings.ReplaceAll(mode, "/", "-"), profileSuffix))
	}
	prefix := fmt.Sprintf("put-%s-%d", mode, rn.cells)
	return run(ctx, w, func(worker int) op {
		return newOp(newWorkload(cfg.Rows, fmt.Sprintf("%s-%d", prefix, worker), worker))
	})
}

// summarize turns what one side measured into its Stats and reports them
// on the log.
func (rn *runner) summarize(t *target, mode, opName string, conc int, m measured) Stats {
	st := m.stats()
	st.Load1 = load1()
	line := fmt.Sprintf("%s %s c=%d %s: %.0f ops/s, p50 %.3f ms, p99 %.3f ms; CPU: process %.2f cores (%.0f µs/op), database %.2f cores (%.0f µs/op), machine %.2f cores (%.0f µs/op), load %.2f",
		t.engine, opName, conc, mode, st.OpsPerSec, st.P50Ms, st.P99Ms, st.ProcessCores, st.ProcessCPUPerOpUs,
		st.DBCores, st.DBCPUPerOpUs, st.MachineCores, st.MachineCPUPerOpUs, st.Load1)
	if st.Errors > 0 {
		line += fmt.Sprintf(", %d errors (first: %s)", st.Errors, st.FirstError)
	}
	fmt.Fprintln(rn.cfg.Log, line)
	return st
}

// groupCommitOrder is the order of the group commit comparison's sides
// (group commit and one transaction per put by the lean generator, the
// same through the Go client) in round: the modes take turns at going
// first, so that neither always runs in the other's wake (its
// checkpointer still copying a WAL the other wrote, say).
func groupCommitOrder(round int) []int {
	if round%2 == 1 {
		return []int{1, 0, 3, 2}
	}
	return []int{0, 1, 2, 3}
}

// groupCommit measures durable SQLite puts over HTTP with and without
// group commit, each mode on a fresh datastore preloaded like the
// matrix's, by the lean load generator and through the Go client. In
// rounds, the four sides take turns (both modes by the lean generator,
// then both through the Go client, the modes' order swapped every other
// round), each mode's datastore carrying on from its last round, so that
// other work on the machine weighs on the modes alike; every round's ratio
// is kept besides the ratio of the totals.
func (rn *runner) groupCommit(ctx context.Context) GroupCommit {
	cfg := rn.cfg
	gc := GroupCommit{Concurrency: cfg.GroupCommitConcurrency}
	fail := func(err error) GroupCommit {
		gc.Error = err.Error()
		fmt.Fprintf(cfg.Log, "sqlite group commit: %v\n", err)
		return gc
	}
	var targets [2]*target // group commit, one transaction per put
	for i, single := range []bool{false, true} {
		t, err := openTarget(ctx, cfg, "sqlite", single)
		if err != nil {
			return fail(fmt.Errorf("open: %w", err))
		}
		defer func() {
			if err := t.Close(); err != nil {
				fmt.Fprintf(cfg.Log, "sqlite: close: %v\n", err)
			}
		}()
		if err := rn.setUp(ctx, t); err != nil {
			return fail(err)
		}
		targets[i] = t
	}
	sides := []struct {
		t         *target
		viaClient bool
		mode      string
		dst       *Stats
	}{
		{targets[0], false, "cellar/group-commit", &gc.Group},
		{targets[1], false, "cellar/one-tx-per-put", &gc.Single},
		{targets[0], true, "client/group-commit", &gc.ClientGroup},
		{targets[1], true, "client/one-tx-per-put", &gc.ClientSingle},
	}
	got := make([]measured, len(sides))
	for round := range cfg.Rounds {
		suffix := ""
		if cfg.Rounds > 1 {
			suffix = fmt.Sprintf("-r%d", round+1)
		}
		var rates [4]float64
		for _, i := range groupCommitOrder(round) {
			sd := sides[i]
			newOp := func(wl *workload) op { return sd.t.lean.op("put", wl) }
			if sd.viaClient {
				newOp = func(wl *workload) op { return cellarOp(sd.t.client, "put", wl) }
			}
			m, err := rn.window(ctx, sd.t, sd.mode, "put", cfg.GroupCommitConcurrency, cfg.Duration/time.Duration(cfg.Rounds), suffix, newOp)
			sd.t.lean.closeConns()
			if err != nil {
				return fail(err)
			}
			rates[i] = m.stats().OpsPerSec
			got[i].add(m)
		}
		if rates[1] > 0 {
			gc.RoundRatios = append(gc.RoundRatios, rates[0]/rates[1])
		}
		if rates[3] > 0 {
			gc.ClientRoundRatios = append(gc.ClientRoundRatios, rates[2]/rates[3])
		}
	}
	for i, sd := range sides {
		*sd.dst = rn.summarize(sd.t, sd.mode, "put", cfg.GroupCommitConcurrency, got[i])
	}
	if gc.Single.OpsPerSec > 0 {
		gc.Ratio = gc.Group.OpsPerSec / gc.Single.OpsPerSec
	}
	if gc.ClientSingle.OpsPerSec > 0 {
		gc.ClientRatio = gc.ClientGroup.OpsPerSec / gc.ClientSingle.OpsPerSec
	}
	return gc
}

// targets checks the targets against rep.
func targets(rep *Report) []Target {
	latest := Target{Name: fmt.Sprintf("PostgreSQL latest over HTTP at concurrency %d >= %.0f%% of direct-driver throughput", TargetConc, 100*TargetLatestRatio)}
	latest.Detail = fmt.Sprintf("needs backend postgres, op latest and concurrency %d in the matrix", TargetConc)
	for _, b := range rep.Backends {
		if b.Name != "postgres" {
			continue
		}
		for _, r := range b.Results {
			if r.Op == "latest" && r.Concurrency == TargetConc {
				latest.Measured = true
				latest.Met = r.Ratio >= TargetLatestRatio
				latest.Detail = fmt.Sprintf("cellar %.0f ops/s / direct %.0f ops/s = %.1f%%; through the Go client %.0f ops/s = %.1f%%",
					r.Cellar.OpsPerSec, r.Direct.OpsPerSec, down(100*r.Ratio, 1), r.Client.OpsPerSec, down(100*r.ClientRatio, 1))
			}
		}
	}
	group := Target{Name: fmt.Sprintf("SQLite durable puts at concurrency %d: group commit >= %.0fx one transaction per put", TargetConc, TargetGroupCommit)}
	group.Detail = fmt.Sprintf("needs backend sqlite and op put, group commit at concurrency %d", TargetConc)
	if gc := rep.GroupCommit; gc != nil && gc.Error == "" && gc.Concurrency == TargetConc {
		group.Measured = true
		group.Met = gc.Ratio >= TargetGroupCommit
		group.Detail = fmt.Sprintf("group commit %.0f ops/s / one tx per put %.0f ops/s = %.2fx; through the Go client %.0f / %.0f ops/s = %.2fx",
			gc.Group.OpsPerSec, gc.Single.OpsPerSec, down(gc.Ratio, 2), gc.ClientGroup.OpsPerSec, gc.ClientSingle.OpsPerSec, down(gc.ClientRatio, 2))
	}
	return []Target{latest, group}
}

// gitCommit returns the commit the running binary was built from (the
// VCS stamp go build records), else the short commit of the working
// directory's repository, marked if the tree had changes, or "unknown".
// The stamp comes first: a binary built earlier and run in a checkout
// that has moved on reports what it is.
func gitCommit() string {
	if bi := buildinfo.Read(); len(bi.Revision) >= 7 {
		rev := bi.Revision[:7]
		if bi.Modified {
			rev += " (built with uncommitted changes)"
		}
		return rev
	}
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	commit := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		commit += " (with uncommitted changes)"
	}
	return commit
}

// loadAverage returns the 1, 5 and 15 minute load averages where the
// system reports them.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// load1 returns the 1-minute load average, or 0 where it is unknown.
func load1() float64 {
	f := strings.Fields(loadAverage())
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64) // 0 if unparsable, as documented
	return v
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
