package main

// The client subcommands: each parses its flags and arguments, calls the
// cellar.Store interface through package client, and prints the result.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
)

const defaultAddr = "http://127.0.0.1:7070"

// clientCommand is a CLI subcommand that runs against a cellar server.
type clientCommand struct {
	name     string
	synopsis string // arguments and own flags, for usage
	summary  string // one line, for the top-level help
	help     string // further explanation, for the subcommand's usage
	run      func(r *runner, args []string) error
}

var clientCommands = []clientCommand{
	{
		name:     "put",
		synopsis: "ROW COL REF [BODY|-]",
		summary:  "store a cell (BODY from stdin if it is - or omitted)",
		help: "Stores BODY as the cell ROW/COL/REF. Storing an equal body again succeeds\n" +
			"(created=false); a different body under the same key is a conflict.",
		run: (*runner).put,
	},
	{
		name:     "get",
		synopsis: "ROW COL REF",
		summary:  "print a cell",
		run:      (*runner).get,
	},
	{
		name:     "latest",
		synopsis: "ROW COL",
		summary:  "print the cell of a column with the highest REF",
		run:      (*runner).latest,
	},
	{
		name:     "row",
		synopsis: "ROW [--columns A,B]",
		summary:  "print the latest cell of each column of a row",
		run:      (*runner).row,
	},
	{
		name:     "batch-get",
		synopsis: "[ROW/COL[/REF]...]",
		summary:  "print many cells, named as arguments or on stdin",
		help: "Each argument names one cell: ROW/COL/REF, or ROW/COL for the latest cell\n" +
			"of the column. It is split from the right, so ROW may contain '/': a column\n" +
			"never contains '/' and never starts with a digit, so an all-digit last part\n" +
			"is always REF. Without arguments, stdin holds\n" +
			`{"keys":[{"row_key":"...","column":"...","ref_key":N}, ...]}` + " (ref_key optional).\n" +
			"Exits 1 if any cell could not be read.",
		run: (*runner).batchGet,
	},
	{
		name:     "batch-put",
		synopsis: "< CELLS",
		summary:  "store many cells read from stdin",
		help: "stdin holds {\"cells\":[{\"row_key\":\"...\",\"column\":\"...\",\"ref_key\":N,\"body\":{...}}, ...]}\n" +
			"(scan --json and row --json print that shape too), or a sequence of such\n" +
			"cell objects, one per line (as scan --follow --json\n" +
			"prints them: their shard, added_id and created_at are ignored; any other\n" +
			"member, a member twice, or a missing ref_key is refused before anything is\n" +
			"sent). Exits 1 if any cell was not stored.",
		run: (*runner).batchPut,
	},
	{
		name:     "scan",
		synopsis: "SHARD [--after N] [--limit N] [--column C] [--follow]",
		summary:  "print a shard's log in added_id order",
		help: "Prints one line per cell, then next=N: the --after of the next page.\n" +
			"With --follow, keeps polling for new cells, like tail -f, until interrupted.",
		run: (*runner).scan,
	},
	{
		name:     "shards",
		synopsis: "",
		summary:  "print the shard layout",
		run:      (*runner).shards,
	},
}

// runClientCommand runs a CLI subcommand against a cellar server. ok=false if name is not a client command.
func runClientCommand(ctx context.Context, name string, args []string, stdin io.Reader, stdout, stderr io.Writer) (ok bool, exitCode int) {
	for i := range clientCommands {
		cmd := &clientCommands[i]
		if cmd.name != name {
			continue
		}
		r := &runner{ctx: ctx, cmd: cmd, stdin: stdin, stdout: &output{w: stdout}, stderr: stderr}
		return true, r.exit(cmd.run(r, args))
	}
	return false, 0
}

// clientUsage writes one line per client subcommand, for the top-level help.
func clientUsage(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, cmd := range clientCommands {
		fmt.Fprintf(tw, "  %s %s\t%s\n", cmd.name, cmd.synopsis, cmd.summary)
	}
	tw.Flush()
}

// runner holds one subcommand's streams, common flags and client.
type runner struct {
	ctx    context.Context
	cmd    *clientCommand
	stdin  io.Reader
	stdout *output
	stderr io.Writer
	fs     *flag.FlagSet

	addr    string
	token   string
	json    bool
	timeout time.Duration
	client  *client.Client
}

// usageError is a mistake in the command line or the input: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errReported means the flag package has already printed the problem and
// the usage.
var errReported = errors.New("usage already reported")

// partialError means some results of a batch were errors, which the output
// shows; it only sets the exit code.
type partialError struct{ failed, total int }

func (e *partialError) Error() string {
	return fmt.Sprintf("%d of %d results are errors", e.failed, e.total)
}

// exit reports err and returns the exit code.
func (r *runner) exit(err error) int {
	if err == nil {
		err = r.stdout.err
	}
	var ue *usageError
	var pe *partialError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errReported):
		return 2
	case errors.As(err, &ue):
		fmt.Fprintf(r.stderr, "cellar %s: %s\n", r.cmd.name, ue.msg)
		if r.fs != nil {
			r.fs.Usage()
		}
		return 2
	case errors.As(err, &pe):
		// The errors are in the output; with --json, stderr holds only
		// error documents, and this is none.
		if !r.json {
			fmt.Fprintf(r.stderr, "cellar: %s\n", pe)
		}
		return 1
	}
	r.reportError(err, false)
	return 1
}

// reportError prints err on stderr: a line "cellar: CODE: MESSAGE", or,
// with --json, the API's error document {"error": {"code", "message"}}
// (with "retrying": true for an error the command is retrying), so that
// a script can read the code.
func (r *runner) reportError(err error, retrying bool) {
	if !r.json {
		suffix := ""
		if retrying {
			suffix = " (retrying)"
		}
		fmt.Fprintf(r.stderr, "cellar: %s: %s%s\n", cellar.ErrorCode(err), errorMessage(err), suffix)
		return
	}
	type body struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Retrying bool   `json:"retrying,omitempty"`
	}
	doc, _ := json.Marshal(struct {
		Error body `json:"error"`
	}{body{cellar.ErrorCode(err), errorMessage(err), retrying}})
	fmt.Fprintf(r.stderr, "%s\n", doc)
}

// flags returns the subcommand's FlagSet with the common flags.
func (r *runner) flags() *flag.FlagSet {
	fs := flag.NewFlagSet(r.cmd.name, flag.ContinueOnError)
	fs.SetOutput(r.stderr)
	fs.Usage = func() {
		fmt.Fprintf(r.stderr, "usage: cellar %s [flags] %s\n\n", r.cmd.name, r.cmd.synopsis)
		fmt.Fprintf(r.stderr, "%s.\n", upperFirst(r.cmd.summary))
		if r.cmd.help != "" {
			fmt.Fprintf(r.stderr, "\n%s\n", r.cmd.help)
		}
		fmt.Fprintf(r.stderr, "\nFlags may come before or after the arguments; put -- before an argument\nthat begins with '-'.\n\nflags:\n")
		fs.PrintDefaults()
	}
	// The defaults from the environment are applied after parsing, so that
	// usage never prints a token.
	fs.StringVar(&r.addr, "addr", "", "server `URL` (default $CELLAR_ADDR or "+defaultAddr+")")
	fs.StringVar(&r.token, "token", "", "bearer `token` (default $CELLAR_TOKEN)")
	fs.BoolVar(&r.json, "json", false, "print JSON: one document, or one cell per line with scan --follow")
	fs.DurationVar(&r.timeout, "timeout", 10*time.Second, "timeout of each request")
	r.fs = fs
	return fs
}

// parse parses flags placed anywhere among args and returns the positional
// arguments, of which there must be minArgs to maxArgs (maxArgs < 0: any
// number). It then creates the client.
func (r *runner) parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errReported
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case len(pos) < minArgs:
		return nil, usagef("too few arguments")
	case maxArgs >= 0 && len(pos) > maxArgs:
		return nil, usagef("too many arguments")
	}
	if r.addr == "" {
		r.addr = os.Getenv("CELLAR_ADDR")
	}
	if r.addr == "" {
		r.addr = defaultAddr
	}
	if r.token == "" {
		r.token = os.Getenv("CELLAR_TOKEN")
	}
	if r.timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}
	r.client = client.New(r.addr, client.WithToken(r.token), client.WithHTTPClient(&http.Client{Timeout: r.timeout}))
	return pos, nil
}

func (r *runner) put(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 3, 4)
	if err != nil {
		return err
	}
	ref, err := parseRef(pos[2])
	if err != nil {
		return err
	}
	var body []byte
	if len(pos) == 4 && pos[3] != "-" {
		body = []byte(pos[3])
	} else if body, err = io.ReadAll(r.stdin); err != nil {
		return fmt.Errorf("read body from stdin: %w", err)
	}
	nc := cellar.NewCell{Key: cellar.Key{RowKey: pos[0], Column: pos[1], RefKey: ref}, Body: body}
	cell, created, err := r.client.Put(r.ctx, nc)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(newPutJSON(cell, created))
	}
	r.stdout.printf("%s  created=%t\n", header(cell), created)
	return nil
}

func (r *runner) get(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 3, 3)
	if err != nil {
		return err
	}
	ref, err := parseRef(pos[2])
	if err != nil {
		return err
	}
	cell, err := r.client.Get(r.ctx, cellar.Key{RowKey: pos[0], Column: pos[1], RefKey: ref})
	if err != nil {
		return err
	}
	return r.printCell(cell)
}

func (r *runner) latest(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	cell, err := r.client.Latest(r.ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	return r.printCell(cell)
}

func (r *runner) row(args []string) error {
	fs := r.flags()
	columns := fs.String("columns", "", "only these `columns`, comma-separated")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	var cols []string
	for _, c := range strings.Split(*columns, ",") {
		if c = strings.TrimSpace(c); c != "" {
			cols = append(cols, c)
		}
	}
	cells, err := r.client.Row(r.ctx, pos[0], cols)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			RowKey string      `json:"row_key"`
			Cells  []*cellJSON `json:"cells"`
		}{pos[0], cellsJSON(cells)})
	}
	for i, c := range cells {
		if i > 0 {
			r.stdout.printf("\n")
		}
		r.printCellText(c)
	}
	return nil
}

func (r *runner) batchGet(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 0, -1)
	if err != nil {
		return err
	}
	var keys []cellar.LookupKey
	for _, a := range pos {
		k, err := parseKeyArg(a)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	if len(pos) == 0 {
		if keys, err = readKeys(r.stdin); err != nil {
			return usagef("read keys from stdin: %v", err)
		}
	}
	if len(keys) == 0 {
		return usagef("no keys")
	}
	var results []cellar.GetResult
	for chunk := range slices.Chunk(keys, cellar.MaxBatchKeys) {
		results = append(results, r.client.BatchGet(r.ctx, chunk)...)
	}
	failed := 0
	for _, res := range results {
		if res.Err != nil {
			failed++
		}
	}
	if r.json {
		type result struct {
			Cell  *cellJSON  `json:"cell,omitempty"`
			Error *errorJSON `json:"error,omitempty"`
		}
		out := struct {
			Results []result `json:"results"`
		}{make([]result, len(results))}
		for i, res := range results {
			if res.Err != nil {
				out.Results[i].Error = newErrorJSON(res.Err)
				continue
			}
			out.Results[i].Cell = newCellJSON(*res.Cell)
		}
		if err := r.printJSON(out); err != nil {
			return err
		}
	} else {
		for i, res := range results {
			if i > 0 {
				r.stdout.printf("\n")
			}
			if res.Err != nil {
				r.stdout.printf("%s  error: %s: %s\n", lookupKeyString(keys[i]), cellar.ErrorCode(res.Err), errorMessage(res.Err))
				continue
			}
			r.printCellText(*res.Cell)
		}
	}
	if failed > 0 {
		return &partialError{failed, len(results)}
	}
	return nil
}

func (r *runner) batchPut(args []string) error {
	fs := r.flags()
	chunkBytes := fs.Int("chunk-bytes", batchPutBytes, "bytes of keys and bodies sent in one request at most (keep it under the server's max_request_bytes)")
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	if *chunkBytes < 1 {
		return usagef("--chunk-bytes must be positive")
	}
	cells, err := readCells(r.stdin)
	if err != nil {
		return usagef("read cells from stdin: %v", err)
	}
	if len(cells) == 0 {
		return usagef("no cells on stdin")
	}
	var results []cellar.PutResult
	for chunk := range putChunks(cells, cellar.MaxBatchKeys, *chunkBytes) {
		res := r.client.BatchPut(r.ctx, chunk)
		if !r.json {
			for i, pr := range res {
				if pr.Err != nil {
					r.stdout.printf("%s  error: %s: %s\n", keyString(chunk[i].RowKey, chunk[i].Column, &chunk[i].RefKey), cellar.ErrorCode(pr.Err), errorMessage(pr.Err))
					continue
				}
				r.stdout.printf("%s  created=%t\n", header(pr.Cell), pr.Created)
			}
		}
		results = append(results, res...)
	}
	failed := 0
	for _, pr := range results {
		if pr.Err != nil {
			failed++
		}
	}
	if r.json {
		type result struct {
			*cellJSON
			Error *errorJSON `json:"error,omitempty"`
		}
		out := struct {
			Results []result `json:"results"`
		}{make([]result, len(results))}
		for i, pr := range results {
			if pr.Err != nil {
				out.Results[i].Error = newErrorJSON(pr.Err)
				continue
			}
			out.Results[i].cellJSON = newPutJSON(pr.Cell, pr.Created)
		}
		if err := r.printJSON(out); err != nil {
			return err
		}
	}
	if failed > 0 {
		return &partialError{failed, len(results)}
	}
	return nil
}

func (r *runner) scan(args []string) error {
	fs := r.flags()
	after := fs.Int64("after", 0, "print cells with added_id > `N`")
	limit := fs.Int("limit", cellar.DefaultScanLimit, "cells per request, at most "+strconv.Itoa(cellar.MaxScanLimit))
	column := fs.String("column", "", "only cells of `column`")
	follow := fs.Bool("follow", false, "keep polling for new cells until interrupted")
	interval := fs.Duration("interval", time.Second, "with --follow, how long to wait for new cells when caught up")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	shard, err := strconv.Atoi(pos[0])
	if err != nil {
		return usagef("SHARD %q is not an integer", pos[0])
	}
	if *follow {
		return r.follow(shard, *after, *limit, *column, *interval)
	}
	res, err := r.client.Scan(r.ctx, shard, *after, *limit, *column)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Cells []*cellJSON `json:"cells"`
			Next  int64       `json:"next"`
		}{cellsJSON(res.Cells), res.Next})
	}
	for _, c := range res.Cells {
		r.printCellLine(c)
	}
	r.stdout.printf("next=%d\n", res.Next)
	return nil
}

// follow scans shard from after until the context is done, polling every
// interval once it has caught up (an empty page). Unavailable errors are reported and
// retried, as a follower should outlive a restart of the server.
func (r *runner) follow(shard int, after int64, limit int, column string, interval time.Duration) error {
	if interval <= 0 {
		return usagef("--interval must be positive")
	}
	wait := func() bool {
		t := time.NewTimer(interval)
		defer t.Stop()
		select {
		case <-r.ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for {
		res, err := r.client.Scan(r.ctx, shard, after, limit, column)
		if r.ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, cellar.ErrUnavailable) {
			r.reportError(err, true)
			if !wait() {
				return nil
			}
			continue
		}
		if err != nil {
			return err
		}
		for _, c := range res.Cells {
			if r.json {
				r.stdout.printLine(newCellJSON(c))
			} else {
				r.printCellLine(c)
			}
		}
		if r.stdout.err != nil {
			return r.stdout.err // stdout is gone, as when piped into head
		}
		after = res.Next
		// Only an empty page means caught up: a page also ends early at
		// cellar.MaxScanPageBytes of bodies.
		if len(res.Cells) == 0 && !wait() {
			return nil
		}
	}
}

func (r *runner) shards(args []string) error {
	fs := r.flags()
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	t, err := r.client.Shards(r.ctx)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(t)
	}
	r.stdout.printf("shard_count=%d version=%d\n", t.ShardCount, t.Version)
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tDRIVER\tSHARDS\n")
	for _, n := range t.Nodes {
		ranges := make([]string, len(n.Ranges))
		for i, rg := range n.Ranges {
			ranges[i] = rg.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", n.Name, n.Driver, strings.Join(ranges, ","))
	}
	return tw.Flush()
}

// printCell prints one cell as JSON or as text.
func (r *runner) printCell(c cellar.Cell) error {
	if r.json {
		return r.printJSON(newCellJSON(c))
	}
	r.printCellText(c)
	return nil
}

// printCellText prints the header line of c and its body, indented.
// json.Indent keeps number literals as written.
func (r *runner) printCellText(c cellar.Cell) {
	r.stdout.printf("%s\n", header(c))
	var buf bytes.Buffer
	if err := json.Indent(&buf, c.Body, "", "  "); err != nil {
		buf.Reset()
		buf.Write(c.Body)
	}
	r.stdout.printf("%s\n", buf.Bytes())
}

// printCellLine prints c on one line: the header and the compact body.
func (r *runner) printCellLine(c cellar.Cell) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, c.Body); err != nil {
		buf.Reset()
		buf.Write(c.Body)
	}
	r.stdout.printf("%s  %s\n", header(c), buf.Bytes())
}

// printJSON prints v as one indented JSON document. HTML escaping is off
// so that bodies print as stored.
func (r *runner) printJSON(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	r.stdout.Write(buf.Bytes())
	return r.stdout.err
}

// output is stdout that remembers its first write error, so that printing
// code stays linear and the error still decides the exit code.
type output struct {
	w   io.Writer
	err error
}

func (o *output) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	if err != nil {
		o.err = fmt.Errorf("write output: %w", err)
	}
	return n, o.err
}

func (o *output) printf(format string, args ...any) {
	fmt.Fprintf(o, format, args...)
}

// printLine prints v as compact JSON on one line.
func (o *output) printLine(v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		if o.err == nil {
			o.err = fmt.Errorf("encode output: %w", err)
		}
		return
	}
	o.Write(buf.Bytes())
}

// cellJSON is a cell as the CLI prints it in JSON: the API's cell, with
// Created for the result of a put.
type cellJSON struct {
	cellar.Key
	Shard     int             `json:"shard"`
	AddedID   int64           `json:"added_id"`
	CreatedAt string          `json:"created_at"`
	Body      json.RawMessage `json:"body,omitempty"`
	Created   *bool           `json:"created,omitempty"`
}

func newCellJSON(c cellar.Cell) *cellJSON {
	return &cellJSON{c.Key, c.Shard, c.AddedID, cellar.FormatTime(c.CreatedAt), c.Body, nil}
}

func newPutJSON(c cellar.Cell, created bool) *cellJSON {
	j := newCellJSON(c)
	j.Created = &created
	return j
}

func cellsJSON(cells []cellar.Cell) []*cellJSON {
	out := make([]*cellJSON, len(cells))
	for i, c := range cells {
		out[i] = newCellJSON(c)
	}
	return out
}

// errorJSON is an error as the API writes it.
type errorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func newErrorJSON(err error) *errorJSON {
	if err == nil {
		return nil
	}
	return &errorJSON{cellar.ErrorCode(err), errorMessage(err)}
}

// errorMessage returns the message of err with its cause, if any: on the
// client side the cause (such as a refused connection) is what the user
// needs to see.
func errorMessage(err error) string {
	var e *cellar.Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// header is the first line of a cell's text output.
func header(c cellar.Cell) string {
	return fmt.Sprintf("%s  shard=%d added_id=%d created_at=%s",
		keyString(c.RowKey, c.Column, &c.RefKey), c.Shard, c.AddedID, cellar.FormatTime(c.CreatedAt))
}

func lookupKeyString(k cellar.LookupKey) string { return keyString(k.RowKey, k.Column, k.RefKey) }

// keyString formats ROW/COL[/REF], quoting ROW if it could be misread.
func keyString(row, col string, ref *int64) string {
	quote := row == ""
	for _, c := range row {
		if c == '/' || c == '"' || unicode.IsSpace(c) || !unicode.IsPrint(c) {
			quote = true
			break
		}
	}
	if quote {
		row = strconv.Quote(row)
	}
	s := row + "/" + col
	if ref != nil {
		s += "/" + strconv.FormatInt(*ref, 10)
	}
	return s
}

// parseRef reads a REF argument as the API's paths read ref_key: digits
// only (no sign), 0 to 2^63-1.
func parseRef(s string) (int64, error) {
	ref, err := strconv.ParseInt(s, 10, 64)
	if err != nil || !isDigits(s) {
		return 0, usagef("REF %q is not an integer from 0 to 9223372036854775807", s)
	}
	return ref, nil
}

// parseKeyArg parses ROW/COL/REF or ROW/COL from the right. A column
// matches ^[A-Za-z_][A-Za-z0-9_]*$, so it contains no '/' and an all-digit
// last part can only be REF; whatever precedes COL is ROW, slashes included.
func parseKeyArg(s string) (cellar.LookupKey, error) {
	var k cellar.LookupKey
	bad := usagef("key %q is not ROW/COL or ROW/COL/REF", s)
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return k, bad
	}
	rest, last := s[:i], s[i+1:]
	if isDigits(last) {
		ref, err := parseRef(last)
		if err != nil {
			return k, err
		}
		k.RefKey = &ref
		if i = strings.LastIndexByte(rest, '/'); i < 0 {
			return k, bad
		}
		rest, last = rest[:i], rest[i+1:]
	}
	if rest == "" || last == "" {
		return k, bad
	}
	k.RowKey, k.Column = rest, last
	return k, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// decodeOne decodes the single JSON value in r into v, strictly.
func decodeOne(r io.Reader, v any) error {
	dec := jsontext.NewDecoder(r)
	raw, err := dec.ReadValue()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("no input")
		}
		return err
	}
	raw = raw.Clone() // valid only until the decoder's next read
	if _, err := dec.ReadToken(); err != io.EOF {
		return errors.New("data after the JSON document")
	}
	return jsonError(jsonv2.Unmarshal(raw, v, strictJSON...))
}

// batchPutBytes is the default of batch-put's --chunk-bytes, the keys and
// bodies it sends in one request: well under the server's default
// max_request_bytes (64 MiB), so that input of large cells is sent in
// several requests rather than refused.
const batchPutBytes = 16 << 20

// putChunks splits cells into runs of at most n cells whose keys and
// bodies take at most budget bytes; a cell larger than budget goes alone.
func putChunks(cells []cellar.NewCell, n, budget int) iter.Seq[[]cellar.NewCell] {
	return func(yield func([]cellar.NewCell) bool) {
		start, size := 0, 0
		for i, c := range cells {
			// 64: the member names and punctuation around a cell.
			cs := len(c.RowKey) + len(c.Column) + len(c.Body) + 64
			if i > start && (i-start == n || size+cs > budget) {
				if !yield(cells[start:i]) {
					return
				}
				start, size = i, 0
			}
			size += cs
		}
		if start < len(cells) {
			yield(cells[start:])
		}
	}
}

// The stdin formats of batch-get and batch-put are the API's requests
// (docs/API.md), read as strictly as the server reads them: member names
// exact, none unknown, none twice, and the required ones present. A typo
// such as "ref" for "ref_key" must not turn into another key.
var strictJSON = []jsonv2.Options{jsonv2.RejectUnknownMembers(true)}

// bodyJSON reads batch-put's input: as strictly, except that strings may
// hold escapes of unpaired surrogates, which a body may (API.md "Bodies");
// the keys are unquoted strictly on their own (cellIn.cell).
var bodyJSON = append([]jsonv2.Options{jsontext.AllowInvalidUTF8(true)}, strictJSON...)

// jsonError describes an input error without the Go types that
// encoding/json/v2's own messages name.
func jsonError(err error) error {
	var serr *jsonv2.SemanticError
	if errors.As(err, &serr) {
		at := string(serr.JSONPointer)
		if at == "" {
			at = "the top level"
		}
		if errors.Is(serr.Err, jsonv2.ErrUnknownName) {
			return fmt.Errorf("unknown member at %s", at)
		}
		if serr.JSONKind != 0 {
			return fmt.Errorf("unexpected JSON %s at %s", serr.JSONKind, at)
		}
		if serr.Err != nil {
			return fmt.Errorf("at %s: %v", at, serr.Err)
		}
	}
	return err
}

// unquoteKey reads a key member of batch-put's input: a JSON string in
// valid UTF-8 (an unpaired surrogate escape would name another key).
func unquoteKey(v jsontext.Value, n int, name string) (string, error) {
	if len(v) == 0 {
		return "", fmt.Errorf("cell %d: %s is missing", n, name)
	}
	if v.Kind() != '"' {
		return "", fmt.Errorf("cell %d: %s must be a string", n, name)
	}
	b, err := jsontext.AppendUnquote(nil, v)
	if err != nil {
		return "", fmt.Errorf("cell %d: %s is not valid UTF-8: it has an unpaired surrogate escape", n, name)
	}
	return string(b), nil
}

// cellIn is a cell of batch-put's input; an empty Value or a nil pointer
// is a member that is missing.
type cellIn struct {
	RowKey jsontext.Value `json:"row_key"`
	Column jsontext.Value `json:"column"`
	RefKey *int64         `json:"ref_key"`
	Body   jsontext.Value `json:"body"`
	// A cell as scan prints it also has these, which the server assigns:
	// they are read and ignored, so that scan's output can be stored.
	Shard     jsontext.Value `json:"shard"`
	AddedID   jsontext.Value `json:"added_id"`
	CreatedAt jsontext.Value `json:"created_at"`
}

func (c cellIn) cell(n int) (cellar.NewCell, error) {
	row, err := unquoteKey(c.RowKey, n, "row_key")
	if err != nil {
		return cellar.NewCell{}, err
	}
	col, err := unquoteKey(c.Column, n, "column")
	if err != nil {
		return cellar.NewCell{}, err
	}
	switch {
	case c.RefKey == nil:
		return cellar.NewCell{}, fmt.Errorf("cell %d: ref_key is missing or null", n)
	case c.Body == nil:
		return cellar.NewCell{}, fmt.Errorf("cell %d: body is missing", n)
	}
	return cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: *c.RefKey}, Body: json.RawMessage(c.Body)}, nil
}

// readCells reads {"cells":[...]} or a sequence of cell objects. All input
// is read and checked before anything is sent, so bad input stores nothing.
func readCells(r io.Reader) ([]cellar.NewCell, error) {
	dec := jsontext.NewDecoder(r, jsontext.AllowInvalidUTF8(true))
	var cells []cellar.NewCell
	for n := 1; ; n++ {
		raw, err := dec.ReadValue()
		if err == io.EOF {
			return cells, nil
		} else if err != nil {
			return nil, fmt.Errorf("value %d: %w", n, err)
		}
		raw = raw.Clone() // valid only until the decoder's next read
		var fields map[string]jsontext.Value
		if err := jsonv2.Unmarshal(raw, &fields, jsontext.AllowInvalidUTF8(true)); err != nil {
			return nil, fmt.Errorf("value %d is not a JSON object: %w", n, jsonError(err))
		}
		if _, ok := fields["cells"]; ok {
			if n > 1 {
				return nil, fmt.Errorf(`value %d: a {"cells":[...]} document must be the whole input`, n)
			}
			// The shapes cellar prints with --json: batch-put's input,
			// scan's page and row's answer.
			var batch struct {
				Cells  *[]cellIn      `json:"cells"`
				Next   jsontext.Value `json:"next"`
				RowKey jsontext.Value `json:"row_key"`
			}
			if err := jsonv2.Unmarshal(raw, &batch, bodyJSON...); err != nil {
				return nil, jsonError(err)
			}
			if _, err := dec.ReadToken(); err != io.EOF {
				return nil, errors.New("data after the {\"cells\":[...]} document")
			}
			if batch.Cells == nil {
				return nil, errors.New(`"cells" is null`)
			}
			for i, c := range *batch.Cells {
				nc, err := c.cell(i + 1)
				if err != nil {
					return nil, err
				}
				cells = append(cells, nc)
			}
			return cells, nil
		}
		var c cellIn
		if err := jsonv2.Unmarshal(raw, &c, bodyJSON...); err != nil {
			return nil, fmt.Errorf("cell %d: %w", n, jsonError(err))
		}
		nc, err := c.cell(n)
		if err != nil {
			return nil, err
		}
		cells = append(cells, nc)
	}
}

// readKeys reads batch-get's {"keys":[...]}: each key's row_key and column
// required, ref_key absent or null for the latest cell.
func readKeys(r io.Reader) ([]cellar.LookupKey, error) {
	var in struct {
		Keys *[]struct {
			RowKey *string `json:"row_key"`
			Column *string `json:"column"`
			RefKey *int64  `json:"ref_key"`
		} `json:"keys"`
	}
	if err := decodeOne(r, &in); err != nil {
		return nil, err
	}
	if in.Keys == nil {
		return nil, errors.New(`"keys" is missing or null`)
	}
	keys := make([]cellar.LookupKey, len(*in.Keys))
	for i, k := range *in.Keys {
		switch {
		case k.RowKey == nil:
			return nil, fmt.Errorf("key %d: row_key is missing", i+1)
		case k.Column == nil:
			return nil, fmt.Errorf("key %d: column is missing", i+1)
		}
		keys[i] = cellar.LookupKey{RowKey: *k.RowKey, Column: *k.Column, RefKey: k.RefKey}
	}
	return keys, nil
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// runAction runs the action of a command group (`cellar GROUP ACTION ...`)
// named by args[0], from actions, whose names are "GROUP ACTION".
func (r *runner) runAction(group, argsSynopsis string, actions []clientCommand, args []string) error {
	fs := flag.NewFlagSet(group, flag.ContinueOnError)
	fs.SetOutput(r.stderr)
	fs.Usage = func() {
		fmt.Fprintf(r.stderr, "usage: cellar %s ACTION [flags] %s\n\n%s.\n\nactions:\n", group, argsSynopsis, upperFirst(r.cmd.summary))
		tw := tabwriter.NewWriter(r.stderr, 0, 0, 2, ' ', 0)
		for _, a := range actions {
			fmt.Fprintf(tw, "  %s %s\t%s\n", strings.TrimPrefix(a.name, group+" "), a.synopsis, a.summary)
		}
		tw.Flush()
		fmt.Fprintf(r.stderr, "\nRun `cellar %s ACTION -h` for an action's flags.\n", group)
	}
	r.fs = fs
	if len(args) == 0 {
		return usagef("missing action")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fs.Usage()
		return flag.ErrHelp
	}
	for i := range actions {
		if a := &actions[i]; a.name == group+" "+args[0] {
			r.cmd, r.fs = a, nil
			return a.run(r, args[1:])
		}
	}
	if strings.HasPrefix(args[0], "-") {
		return usagef("the action comes before flags: cellar %s ACTION [flags] %s", group, argsSynopsis)
	}
	return usagef("unknown action %q", args[0])
}
