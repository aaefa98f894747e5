package main

// The timeline subcommand: cellar timeline add|rm|range|count|cap, each action
// parsed like a client command of its own.

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"text/tabwriter"
	"unicode"

	"github.com/cellar-db/cellar"
)

func init() {
	clientCommands = append(clientCommands, clientCommand{
		name:     "timeline",
		synopsis: "add|rm|range|count|cap KEY ...",
		summary:  "add to, remove from, read or cap a timeline",
		run:      (*runner).timeline,
	})
}

// timelineActions are the actions of cellar timeline. Their names are
// what their usage and errors show.
var timelineActions = []clientCommand{
	{
		name:     "timeline add",
		synopsis: "KEY MEMBER SCORE",
		summary:  "add MEMBER to timeline KEY with SCORE, or set its score",
		help: "A timeline keeps the members with the highest scores, up to its cap (10000\n" +
			"unless set with timeline cap); adding below the lowest of a full timeline\n" +
			"keeps nothing. Put -- before a negative SCORE: timeline add KEY MEMBER -- -1.5",
		run: (*runner).timelineAdd,
	},
	{
		name:     "timeline rm",
		synopsis: "KEY MEMBER",
		summary:  "remove MEMBER from timeline KEY",
		help:     "Prints removed=false, and still exits 0, if MEMBER was not there.",
		run:      (*runner).timelineRemove,
	},
	{
		name:     "timeline range",
		synopsis: "KEY [--offset N] [--limit N] [--asc]",
		summary:  "print members of timeline KEY, highest scores first",
		help: "Prints one line per member, then count=N: how many members the timeline\n" +
			"holds. Equal scores order by member, in the same direction as the scores.",
		run: (*runner).timelineRange,
	},
	{
		name:     "timeline count",
		synopsis: "KEY",
		summary:  "print how many members timeline KEY holds",
		help:     "Prints count=0 for a timeline never added to.",
		run:      (*runner).timelineCount,
	},
	{
		name:     "timeline cap",
		synopsis: "KEY N",
		summary:  "keep at most N members (1 to 1000000) in timeline KEY",
		help:     "Lowering the cap removes the members with the lowest scores beyond it.",
		run:      (*runner).timelineCap,
	},
}

// timeline runs the action named by args[0].
func (r *runner) timeline(args []string) error {
	return r.runAction("timeline", "KEY ...", timelineActions, args)
}

func (r *runner) timelineAdd(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 3, 3)
	if err != nil {
		return err
	}
	// A JSON number, as the API takes: ParseFloat alone would also take
	// Go's 1_0, 0x1p-2 and 01.
	score, err := strconv.ParseFloat(pos[2], 64)
	if err != nil || !json.Valid([]byte(pos[2])) || math.IsNaN(score) || math.IsInf(score, 0) || cellar.ScoreUnderflows(pos[2], score) {
		return usagef("SCORE %q is not a finite JSON number within the range of a 64-bit float", pos[2])
	}
	if score == 0 {
		score = 0 // as the server stores -0
	}
	if err := r.client.TimelineAdd(r.ctx, pos[0], pos[1], score); err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Key    string  `json:"key"`
			Member string  `json:"member"`
			Score  float64 `json:"score"`
		}{pos[0], pos[1], score})
	}
	r.stdout.printf("key=%s member=%s score=%s\n", quoteField(pos[0]), quoteField(pos[1]), formatScore(score))
	return nil
}

func (r *runner) timelineRemove(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	removed, err := r.client.TimelineRemove(r.ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Removed bool `json:"removed"`
		}{removed})
	}
	r.stdout.printf("removed=%t\n", removed)
	return nil
}

func (r *runner) timelineRange(args []string) error {
	fs := r.flags()
	offset := fs.Int("offset", 0, "skip the first `N` members")
	limit := fs.Int("limit", 100, "print at most `N` members, at most 1000")
	asc := fs.Bool("asc", false, "lowest scores first")
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	items, count, err := r.client.TimelineRange(r.ctx, pos[0], *offset, *limit, !*asc)
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Items []cellar.TimelineItem `json:"items"`
			Count int64                 `json:"count"`
		}{items, count})
	}
	if len(items) > 0 {
		tw := tabwriter.NewWriter(r.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "SCORE\tMEMBER\n")
		for _, it := range items {
			fmt.Fprintf(tw, "%s\t%s\n", formatScore(it.Score), quoteField(it.Member))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	r.stdout.printf("count=%d\n", count)
	return nil
}

func (r *runner) timelineCount(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 1, 1)
	if err != nil {
		return err
	}
	count, err := r.client.TimelineCount(r.ctx, pos[0])
	if err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Key   string `json:"key"`
			Count int64  `json:"count"`
		}{pos[0], count})
	}
	r.stdout.printf("key=%s count=%d\n", quoteField(pos[0]), count)
	return nil
}

func (r *runner) timelineCap(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 2, 2)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(pos[1])
	if err != nil {
		return usagef("N %q is not an integer", pos[1])
	}
	if err := r.client.SetTimelineCap(r.ctx, pos[0], n); err != nil {
		return err
	}
	if r.json {
		return r.printJSON(struct {
			Key string `json:"key"`
			Cap int    `json:"cap"`
		}{pos[0], n})
	}
	r.stdout.printf("key=%s cap=%d\n", quoteField(pos[0]), n)
	return nil
}

// formatScore prints a score as briefly as it round-trips, as JSON writes
// numbers: without an exponent from 1e-6 up to 1e21 (a Unix time in
// seconds, 1732200001, reads as that, not 1.732200001e+09).
func formatScore(f float64) string {
	if a := math.Abs(f); a == 0 || a >= 1e-6 && a < 1e21 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// quoteField quotes s if it could be misread in key=value output: empty,
// or holding spaces, '=', '"' or characters that do not print.
func quoteField(s string) string {
	if s == "" {
		return `""`
	}
	for _, c := range s {
		if c == '=' || c == '"' || unicode.IsSpace(c) || !unicode.IsPrint(c) {
			return strconv.Quote(s)
		}
	}
	return s
}
