package main

// The indexes subcommand: cellar indexes list|status|define|query|rebuild|
// delete, each action parsed like a client command of its own.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/cellar-db/cellar/client"
)

func init() {
	clientCommands = append(clientCommands, clientCommand{
		name:     "indexes",
		synopsis: "list|status|define|query|rebuild|delete [NAME] ...",
		summary:  "manage and query secondary indexes",
		run:      (*runner).indexes,
	})
}

// indexActions are the actions of cellar indexes.
var indexActions = []clientCommand{
	{
		name:    "indexes list",
		summary: "list the indexes",
		run:     (*runner).indexesList,
	},
	{
		name:     "indexes status",
		synopsis: "NAME",
		summary:  "print an index's state, lag and rebuild progress",
		run:      (*runner).indexesStatus,
	},
	{
		name:     "indexes define",
		synopsis: "NAME --column C --field NAME:TYPE [--field NAME:TYPE ...]",
		summary:  "create an index over typed fields of a column's cells",
		help: "The first --field is the shard field, which every query must give. Types: string, int,\n" +
			"float, bool, time (RFC 3339). NAME may be a dotted path into nested objects (a.b).",
		run: (*runner).indexesDefine,
	},
	{
		name:     "indexes query",
		synopsis: `NAME --where '{"field": value, "other": {"gte": v}}' [--fields A,B] [--order F] [--desc] [--limit N] [--cursor C] [--wait-for SHARD:ADDED_ID,... [--wait D]]`,
		summary:  "query an index",
		help: "Prints next=CURSOR when there are more; pass it as --cursor with the same order.\n" +
			"--wait-for reads your writes: the query first waits until the index has processed those cells\n" +
			"(shard= and added_id= as put prints them), and fails unavailable if it has not within --wait.",
		run: (*runner).indexesQuery,
	},
	{
		name:     "indexes rebuild",
		synopsis: "NAME",
		summary:  "rebuild an index from the start of the log, serving the current one meanwhile",
		run:      (*runner).indexesRebuild,
	},
	{
		name:     "indexes delete",
		synopsis: "NAME --yes",
		summary:  "delete an index (its entries are dropped shortly after); needs the admin scope",
		run:      (*runner).indexesDelete,
	},
}

// indexes runs the action named by args[0].
func (r *runner) indexes(args []string) error {
	return r.runAction("indexes", "[NAME] ...", indexActions, args)
}

func fieldList(fs []client.IndexField) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.Name + ":" + f.Type
	}
	return strings.Join(parts, ",")
}

func (r *runner) indexesList(args []string) error {
	fs := r.flags()
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	ixs, err := r.client.Indexes(r.ctx)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Indexes []client.Index `json:"indexes"`
		}{ixs})
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\tCOLUMN\tFIELDS\tGENERATION\tSTATE\n")
	for _, ix := range ixs {
		state := ix.State
		if ix.Rebuilding != 0 {
			state += fmt.Sprintf(" (rebuilding as %d)", ix.Rebuilding)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", ix.Name, ix.Column, fieldList(ix.Fields), ix.Generation, state)
	}
	return tw.Flush()
}

func (r *runner) indexesStatus(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	st, err := r.client.IndexStatus(r.ctx, pos[0])
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(st)
	}
	r.stdout.printf("index=%s column=%s fields=%s generation=%d state=%s\n", st.Name, st.Column, fieldList(st.Fields), st.Generation, st.State)
	p := st.Lag
	r.stdout.printf("lag_cells=%d lag_seconds=%.3f shards_behind=%d shards=%d done=%.3f trigger=%s\n",
		p.LagCells, p.LagSeconds, p.ShardsBehind, p.ShardsTotal, p.Done, p.Trigger)
	if b := st.Rebuild; b != nil {
		r.stdout.printf("rebuild generation=%d lag_cells=%d lag_seconds=%.3f shards_behind=%d done=%.3f\n",
			b.Generation, b.LagCells, b.LagSeconds, b.ShardsBehind, b.Done)
	}
	return nil
}

// fieldFlags collects repeated --field NAME:TYPE flags.
type fieldFlags []client.IndexField

func (f *fieldFlags) String() string { return fieldList(*f) }

func (f *fieldFlags) Set(v string) error {
	name, typ, ok := strings.Cut(v, ":")
	if !ok || name == "" || typ == "" {
		return fmt.Errorf("want NAME:TYPE, not %q", v)
	}
	*f = append(*f, client.IndexField{Name: name, Type: typ})
	return nil
}

func (r *runner) indexesDefine(args []string) error {
	fs := r.flags()
	column := fs.String("column", "", "the `COLUMN` whose cells are indexed")
	var fields fieldFlags
	fs.Var(&fields, "field", "a field as `NAME:TYPE`; repeat for more (the first is the shard field)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *column == "" || len(fields) == 0 {
		return usagef("--column and at least one --field are required")
	}
	ix, created, err := r.client.DefineIndex(r.ctx, pos[0], client.IndexDefinition{Column: *column, Fields: fields})
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			client.Index
			Created bool `json:"created"`
		}{ix, created})
	}
	r.stdout.printf("index=%s created=%t column=%s fields=%s generation=%d state=%s\n",
		ix.Name, created, ix.Column, fieldList(ix.Fields), ix.Generation, ix.State)
	return nil
}

func (r *runner) indexesQuery(args []string) error {
	fs := r.flags()
	where := fs.String("where", "", "the conditions as a JSON `OBJECT`: a value for equality, or {\"gt\", \"gte\", \"lt\", \"lte\", \"eq\"}")
	fields := fs.String("fields", "", "the `FIELDS` to print, comma-separated (default: all)")
	order := fs.String("order", "", "order by `FIELD` (default: the index's order)")
	desc := fs.Bool("desc", false, "descending order")
	limit := fs.Int("limit", 0, "at most `N` entries (default: the server's, 100)")
	cursor := fs.String("cursor", "", "continue at `CURSOR` (a previous page's next=)")
	var waitFor cellPositions
	fs.Var(&waitFor, "wait-for", "first wait until the index has processed these cells: `SHARD:ADDED_ID`[,...] as put prints them (shard=, added_id=); repeatable")
	wait := fs.Duration("wait", 0, "how long --wait-for may wait, 1ms..60s (default: the server's, 1s)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *where == "" {
		return usagef("--where is required")
	}
	if *wait != 0 && (*wait < time.Millisecond || *wait > time.Minute) {
		return usagef("--wait must be between 1ms and 60s, got %s", *wait)
	}
	if *wait != 0 && len(waitFor) == 0 {
		return usagef("--wait needs --wait-for")
	}
	w, err := parseWhere(*where)
	if err != nil {
		return usagef("--where must be a JSON object: %v", err)
	}
	q := client.IndexQuery{Where: w, Order: *order, Desc: *desc, Limit: *limit, Cursor: *cursor, WaitFor: waitFor, Wait: *wait}
	if *fields != "" {
		for _, f := range strings.Split(*fields, ",") {
			q.Fields = append(q.Fields, strings.TrimSpace(f)) // "a, b" as "a,b"
		}
	}
	res, err := r.client.QueryIndex(r.ctx, pos[0], q)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Entries []client.IndexEntry `json:"entries"`
			Cursor  string              `json:"cursor,omitempty"`
		}{res.Entries, res.Cursor})
	}
	var names []string
	if len(res.Entries) > 0 {
		for n := range res.Entries[0].Fields {
			names = append(names, n)
		}
		sort.Strings(names)
		tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "ROW_KEY\tREF_KEY\t%s\n", strings.ToUpper(strings.Join(names, "\t")))
		for _, e := range res.Entries {
			vals := make([]string, len(names))
			for i, n := range names {
				vals[i] = string(e.Fields[n])
				if vals[i] == "" {
					vals[i] = "null"
				}
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\n", quoteField(e.RowKey), e.RefKey, strings.Join(vals, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if res.Cursor != "" {
		r.stdout.printf("next=%s\n", res.Cursor)
	}
	return nil
}

// parseWhere reads --where as strictly as the server reads a query's
// where: a member given twice or data after the object is refused, not
// resolved to one of the readings. The values are sent as written, number
// literals included.
func parseWhere(s string) (map[string]any, error) {
	var members map[string]jsontext.Value
	if err := decodeOne(strings.NewReader(s), &members); err != nil {
		return nil, err
	}
	if members == nil {
		return nil, errors.New("null")
	}
	w := make(map[string]any, len(members))
	for name, v := range members {
		w[name] = json.RawMessage(v)
	}
	return w, nil
}

func (r *runner) indexesRebuild(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	ix, err := r.client.RebuildIndex(r.ctx, pos[0])
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(ix)
	}
	r.stdout.printf("index=%s generation=%d rebuilding=%d\n", ix.Name, ix.Generation, ix.Rebuilding)
	return nil
}

func (r *runner) indexesDelete(args []string) error {
	return r.confirmedDelete(args, "index", "its entries", (*client.Client).DeleteIndex)
}

// confirmedDelete runs a delete action: NAME --yes, then del, printing
// deleted=true (or {"deleted": true}). what names the thing, gone what
// goes with it, for the refusal without --yes.
// (del is a method expression: the client exists once the flags are
// parsed.)
func (r *runner) confirmedDelete(args []string, what, gone string, del func(c *client.Client, ctx context.Context, name string) error) error {
	fs := r.flags()
	yes := fs.Bool("yes", false, "confirm: the "+what+" and "+gone+" go")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if !*yes {
		return usagef("delete drops %s %s with %s; pass --yes to confirm", what, pos[0], gone)
	}
	if err := del(r.client, r.ctx, pos[0]); err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Deleted bool `json:"deleted"`
		}{true})
	}
	r.stdout.printf("deleted=true\n")
	return nil
}

// cellPositions is the value of --wait-for: SHARD:ADDED_ID pairs, comma
// separated, the flag repeatable.
type cellPositions []client.CellPos

func (p *cellPositions) String() string {
	var parts []string
	for _, c := range *p {
		parts = append(parts, fmt.Sprintf("%d:%d", c.Shard, c.AddedID))
	}
	return strings.Join(parts, ",")
}

func (p *cellPositions) Set(v string) error {
	for _, pair := range strings.Split(v, ",") {
		shard, added, ok := strings.Cut(strings.TrimSpace(pair), ":")
		s, err1 := strconv.Atoi(shard)
		a, err2 := strconv.ParseInt(added, 10, 64)
		if !ok || err1 != nil || err2 != nil || s < 0 || a < 1 {
			return fmt.Errorf("%q is not SHARD:ADDED_ID (a shard of 0 or more, an added_id of 1 or more)", pair)
		}
		*p = append(*p, client.CellPos{Shard: s, AddedID: a})
	}
	return nil
}
