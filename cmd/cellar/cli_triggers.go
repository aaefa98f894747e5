package main

// The triggers subcommand: cellar triggers list|status|parked|replay|reset|
// define|delete, each action parsed like a client command of its own.

import (
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
)

func init() {
	clientCommands = append(clientCommands, clientCommand{
		name:     "triggers",
		synopsis: "list|status|parked|replay|reset|define|delete [NAME] ...",
		summary:  "inspect and manage triggers",
		run:      (*runner).triggers,
	})
}

// triggerActions are the actions of cellar triggers.
var triggerActions = []clientCommand{
	{
		name:     "triggers list",
		synopsis: "",
		summary:  "list the triggers",
		run:      (*runner).triggersList,
	},
	{
		name:     "triggers status",
		synopsis: "NAME",
		summary:  "print a trigger's progress: lag, leases, retries and parked cells per shard",
		help: "Shards that are caught up, unleased and without parked cells are left out.\n" +
			"LAG counts the cells after the offset of any column: an upper bound.",
		run: (*runner).triggersStatus,
	},
	{
		name:     "triggers parked",
		synopsis: "NAME [--limit N] [--after CURSOR]",
		summary:  "list a trigger's parked cells",
		help:     "Prints next=CURSOR when there are more; pass it as --after.",
		run:      (*runner).triggersParked,
	},
	{
		name:     "triggers replay",
		synopsis: "NAME",
		summary:  "deliver every parked cell of a trigger again",
		help:     "Replayed cells are delivered in claims of their own; a cell that fails again is parked again.",
		run:      (*runner).triggersReplay,
	},
	{
		name:     "triggers reset",
		synopsis: "NAME --yes",
		summary:  "deliver every cell again: set each shard's offset back to the start",
		help: "Every lease ends (acks under it are refused), retries are forgotten and\n" +
			"parked cells stay parked. Needs a token with the admin scope.",
		run: (*runner).triggersReset,
	},
	{
		name:     "triggers define",
		synopsis: "NAME --columns A[,B...] [--start earliest|latest] [--max-attempts N] [--park-threshold N]",
		summary:  "create a trigger or update its definition",
		help:     "--start matters only when the trigger is created.",
		run:      (*runner).triggersDefine,
	},
	{
		name:     "triggers delete",
		synopsis: "NAME --yes",
		summary:  "delete a trigger with its offsets, leases and parked cells",
		help:     "Needs a token with the admin scope. An index's own triggers go with the index.",
		run:      (*runner).triggersDelete,
	},
}

// triggers runs the action named by args[0].
func (r *runner) triggers(args []string) error {
	return r.runAction("triggers", "[NAME] ...", triggerActions, args)
}

func (r *runner) triggersList(args []string) error {
	fs := r.flags()
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	ts, err := r.client.Triggers(r.ctx)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Triggers []client.Trigger `json:"triggers"`
		}{ts})
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "NAME\tCOLUMNS\tSTART\tMAX_ATTEMPTS\tPARK_THRESHOLD\n")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", t.Name, strings.Join(t.Columns, ","), t.Start, t.MaxAttempts, t.ParkThreshold)
	}
	return tw.Flush()
}

func (r *runner) triggersStatus(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	st, err := r.client.TriggerStatus(r.ctx, pos[0])
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(st)
	}
	state := "running"
	if st.Paused {
		state = "paused: " + st.Reason
	}
	r.stdout.printf("trigger=%s columns=%s state=%s\n", st.Trigger.Name, strings.Join(st.Trigger.Columns, ","), quoteField(state))
	r.stdout.printf("lag_cells=%d lag_seconds=%.3f parked=%d leases=%d shards_behind=%d\n",
		st.Totals.LagCells, st.Totals.LagSeconds, st.Totals.Parked, st.Totals.Leases, st.Totals.ShardsBehind)
	if st.Totals.Unknown > 0 {
		r.stdout.printf("unknown=%d (their nodes did not answer)\n", st.Totals.Unknown)
	}
	if len(st.Shards) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "SHARD\tOFFSET\tHEAD\tLAG\tLAG_S\tOWNER\tPARKED\tRETRY\n")
	for _, s := range st.Shards {
		owner := "-"
		if s.Owner != "" {
			owner = quoteField(s.Owner)
		}
		retry := "-"
		if s.RetryAddedID != 0 {
			retry = fmt.Sprintf("cell %d, %d attempts: %s", s.RetryAddedID, s.Attempts, quoteField(s.LastError))
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.3f\t%s\t%d\t%s\n", s.Shard, s.Offset, s.Head, s.LagCells, s.LagSeconds, owner, s.Parked, retry)
	}
	return tw.Flush()
}

func (r *runner) triggersParked(args []string) error {
	fs := r.flags()
	limit := fs.Int("limit", 100, "print at most `N` cells, at most 1000")
	after := fs.String("after", "", "start after `CURSOR` (a previous page's next=)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	cells, next, err := r.client.ParkedCells(r.ctx, pos[0], *after, *limit)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Parked []client.ParkedCell `json:"parked"`
			Next   string              `json:"next,omitempty"`
		}{cells, next})
	}
	if len(cells) > 0 {
		tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "SHARD\tADDED_ID\tROW_KEY\tCOLUMN\tREF_KEY\tATTEMPTS\tPARKED_AT\tLAST_ERROR\n")
		for _, p := range cells {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%d\t%s\t%s\n", p.Shard, p.AddedID, quoteField(p.Key.RowKey), p.Key.Column, p.Key.RefKey,
				p.Attempts, cellar.FormatTime(p.ParkedAt), quoteField(p.LastError))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if next != "" {
		r.stdout.printf("next=%s\n", next)
	}
	return nil
}

func (r *runner) triggersReplay(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	n, err := r.client.ReplayParked(r.ctx, pos[0])
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Replayed int64 `json:"replayed"`
		}{n})
	}
	r.stdout.printf("replayed=%d\n", n)
	return nil
}

func (r *runner) triggersDelete(args []string) error {
	return r.confirmedDelete(args, "trigger", "its offsets and parked cells", (*client.Client).DeleteTrigger)
}

func (r *runner) triggersReset(args []string) error {
	fs := r.flags()
	yes := fs.Bool("yes", false, "confirm: every cell will be delivered again")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if !*yes {
		return usagef("reset delivers every cell of trigger %s again; pass --yes to confirm", pos[0])
	}
	if err := r.client.ResetTrigger(r.ctx, pos[0]); err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Reset bool `json:"reset"`
		}{true})
	}
	r.stdout.printf("reset=true\n")
	return nil
}

func (r *runner) triggersDefine(args []string) error {
	fs := r.flags()
	columns := fs.String("columns", "", "the `COLUMNS` to consume, comma-separated")
	start := fs.String("start", "", "where a new trigger starts: `earliest` (default) or latest")
	maxAttempts := fs.Int("max-attempts", 0, "tries per cell before it is parked (default: the server's, 5)")
	parkThreshold := fs.Int("park-threshold", 0, "pause when more than `N` cells are parked (default: the server's, 100)")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	if *columns == "" {
		return usagef("--columns is required")
	}
	// Left out, the two take the server's defaults; a 0 written out would
	// be sent as left out, so it is refused as the API refuses it.
	var zero error
	fs.Visit(func(f *flag.Flag) {
		if (f.Name == "max-attempts" || f.Name == "park-threshold") && f.Value.String() == "0" && zero == nil {
			zero = usagef("--%s must be at least 1 (leave it out for the server's default)", f.Name)
		}
	})
	if zero != nil {
		return zero
	}
	def := client.TriggerDefinition{Columns: strings.Split(*columns, ","), Start: *start, MaxAttempts: *maxAttempts, ParkThreshold: *parkThreshold}
	t, created, err := r.client.DefineTrigger(r.ctx, pos[0], def)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			client.Trigger
			Created bool `json:"created"`
		}{t, created})
	}
	r.stdout.printf("trigger=%s created=%t columns=%s start=%s max_attempts=%d park_threshold=%d\n",
		t.Name, created, strings.Join(t.Columns, ","), t.Start, t.MaxAttempts, t.ParkThreshold)
	return nil
}
