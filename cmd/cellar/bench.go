package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cellar-db/cellar/internal/bench"
)

// runBench implements `cellar bench`.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	backends := fs.String("backends", strings.Join(bench.Backends, ","), "backends to measure")
	ops := fs.String("ops", strings.Join(bench.Ops, ","), "operations to measure")
	conc := fs.String("concurrency", "1,16,64", "concurrency levels (workers issuing requests back to back)")
	duration := fs.Duration("duration", 5*time.Second, "measured time of each op and concurrency, per side")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up before each measurement")
	rounds := fs.Int("rounds", 1, "split each side's measured time into this many rounds, the sides (lean load generator, Go client, direct) taking turns: on a shared machine, other work then weighs on them alike")
	rows := fs.Int("rows", 10000, "rows to preload, 2 cells each")
	pgDSN := fs.String("postgres-dsn", os.Getenv("CELLAR_TEST_POSTGRES_DSN"), "PostgreSQL server on which to create a scratch database (default $CELLAR_TEST_POSTGRES_DSN); empty skips postgres")
	myDSN := fs.String("mysql-dsn", os.Getenv("CELLAR_TEST_MYSQL_DSN"), "MySQL/MariaDB server on which to create a scratch database (default $CELLAR_TEST_MYSQL_DSN); empty skips mysql")
	sqliteDir := fs.String("sqlite-dir", "", "directory for SQLite's scratch databases (default: the system temp dir); its disk's fsync is what puts pay")
	groupCommit := fs.Bool("group-commit", true, "compare SQLite puts with and without group commit (needs sqlite and put)")
	coalesce := fs.Int("coalesce-reads", 0, "point-read statements a node runs at once before further gets and latests are read together (0: the node default; -1: off)")
	profileDir := fs.String("cpuprofile-dir", "", "write a CPU profile of each measurement into this directory")
	format := fs.String("format", "markdown", "output format: markdown or json")
	quiet := fs.Bool("quiet", false, "do not report progress on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cellar bench [flags]\n\nMeasures put, get, latest and batchGet over cellar's HTTP API (driven by a lean\nHTTP/1.1 load generator, and through the Go client) against the same SQL sent\nstraight through the database driver, on fresh scratch databases, and SQLite\nputs with and without group commit. Writes a report to stdout.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cellar bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg := bench.Config{
		Duration:      *duration,
		Warmup:        *warmup,
		Rounds:        *rounds,
		Rows:          *rows,
		PostgresDSN:   *pgDSN,
		MySQLDSN:      *myDSN,
		SQLiteDir:     *sqliteDir,
		GroupCommit:   *groupCommit,
		CoalesceReads: *coalesce,
		ProfileDir:    *profileDir,
		Command:       commandLine("cellar bench", args),
		Log:           stderr,
	}
	if *quiet {
		cfg.Log = io.Discard
	}
	var err error
	if cfg.Backends, err = bench.ParseList("backend", *backends, bench.Backends); err == nil {
		if cfg.Ops, err = bench.ParseList("op", *ops, bench.Ops); err == nil {
			cfg.Concurrency, err = bench.ParseConcurrency(*conc)
		}
	}
	if err == nil && *format != "markdown" && *format != "json" {
		err = fmt.Errorf("format must be markdown or json, not %q", *format)
	}
	if err != nil {
		fmt.Fprintf(stderr, "cellar bench: %v\n", err)
		return 2
	}

	rep, runErr := bench.Run(ctx, cfg)
	if rep != nil {
		write := bench.WriteMarkdown
		if *format == "json" {
			write = bench.WriteJSON
		}
		if err := write(stdout, rep); err != nil {
			fmt.Fprintf(stderr, "cellar bench: write report: %v\n", err)
			return 1
		}
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "cellar bench: %v\n", runErr)
		return 1
	}
	return 0
}

// commandLine renders a command as one would type it into a shell.
func commandLine(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
