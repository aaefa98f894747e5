package main

// The counter subcommand: cellar counter incr|batch-incr|get, each action parsed like
// a client command of its own.

import (
	"slices"
	"strconv"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/cellar-db/cellar"
)

func init() {
	clientCommands = append(clientCommands, clientCommand{
		name:     "counter",
		synopsis: "incr|batch-incr|get KEY ...",
		summary:  "increment or read counters",
		run:      (*runner).counter,
	})
}

// counterActions are the actions of cellar counter.
var counterActions = []clientCommand{
	{
		name:     "counter incr",
		synopsis: "KEY [BY]",
		summary:  "add BY (default 1) to counter KEY and print its new value",
		help: "BY is a 64-bit integer and may be negative: put -- before it, as in\n" +
			"counter incr KEY -- -5. An increment that would overflow is refused.\n" +
			"If the request fails in transit, the increment may or may not have\n" +
			"been applied: it is never resent.",
		run: (*runner).counterIncr,
	},
	{
		name:     "counter batch-incr",
		synopsis: "< INCREMENTS",
		summary:  "add to many counters, read from stdin, and print their new values",
		help: "stdin holds {\"increments\":[{\"key\":\"...\",\"by\":N}, ...]} (by optional,\n" +
			"default 1), read as strictly as the server reads it: nothing is sent if\n" +
			"any of it is malformed. The increments of one key are added in order.\n" +
			"Prints one line per increment (with --json a {\"results\": [...]}\n" +
			"document) and exits 1 if any was not added. A request that fails in\n" +
			"transit is never resent.",
		run: (*runner).counterBatchIncr,
	},
	{
		name:     "counter get",
		synopsis: "KEY...",
		summary:  "print counters (0 for a counter never incremented)",
		help: "With one KEY, prints its value; with several, one line each, and\n" +
			"with --json a {\"results\": [...]} document. Exits 1 if any could not be read.",
		run: (*runner).counterGet,
	},
}

// counter runs the action named by args[0].
func (r *runner) counter(args []string) error {
	return r.runAction("counter", "KEY ...", counterActions, args)
}

// counterJSON is a counter, or the error reading it, as the CLI prints it.
type counterJSON struct {
	Key   string     `json:"key"`
	Value *int64     `json:"value,omitempty"`
	Error *errorJSON `json:"error,omitempty"`
}

func (r *runner) counterIncr(args []string) error {
	fs := r.flags()
	pos, err := r.parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	by := int64(1)
	if len(pos) == 2 {
		if by, err = strconv.ParseInt(pos[1], 10, 64); err != nil {
			return usagef("BY %q is not a 64-bit integer", pos[1])
		}
	}
	v, err := r.client.Incr(r.ctx, pos[0], by)
	if err != nil {
		return err
	}
	return r.printCounter(pos[0], v)
}

func (r *runner) counterGet(args []string) error {
	fs := r.flags()
	keys, err := r.parse(fs, args, 1, -1)
	if err != nil {
		return err
	}
	if len(keys) == 1 {
		v, err := r.client.Counter(r.ctx, keys[0])
		if err != nil {
			return err
		}
		return r.printCounter(keys[0], v)
	}
	var results []cellar.CounterResult
	for chunk := range slices.Chunk(keys, cellar.MaxBatchKeys) {
		results = append(results, r.client.BatchCounters(r.ctx, chunk)...)
	}
	return r.printCounters(keys, results)
}

func (r *runner) counterBatchIncr(args []string) error {
	fs := r.flags()
	if _, err := r.parse(fs, args, 0, 0); err != nil {
		return err
	}
	var in struct {
		Increments *[]struct {
			Key *string `json:"key"`
			// Raw, to tell "by": null, which the server refuses, from no
			// "by" at all, which means 1.
			By jsontext.Value `json:"by"`
		} `json:"increments"`
	}
	if err := decodeOne(r.stdin, &in); err != nil {
		return usagef("read increments from stdin: %v", err)
	}
	if in.Increments == nil {
		return usagef("read increments from stdin: no \"increments\" member")
	}
	incrs := make([]cellar.CounterIncrement, len(*in.Increments))
	keys := make([]string, len(incrs))
	for i, it := range *in.Increments {
		if it.Key == nil {
			return usagef("read increments from stdin: increments[%d] has no \"key\"", i)
		}
		incrs[i] = cellar.CounterIncrement{Key: *it.Key, By: 1}
		if it.By != nil {
			if it.By.Kind() != '0' {
				return usagef("read increments from stdin: increments[%d].by must be an integer, not %s", i, it.By)
			}
			if err := jsonv2.Unmarshal(it.By, &incrs[i].By); err != nil {
				return usagef("read increments from stdin: increments[%d].by: %v", i, jsonError(err))
			}
		}
		keys[i] = *it.Key
	}
	if len(incrs) == 0 {
		return usagef("no increments on stdin")
	}
	return r.printCounters(keys, r.client.BatchIncr(r.ctx, incrs))
}

// printCounters prints results, those of keys: one line each, or with
// --json one {"results": [...]} document. It returns a partialError if
// any failed.
func (r *runner) printCounters(keys []string, results []cellar.CounterResult) error {
	failed := 0
	out := make([]counterJSON, len(results))
	for i, res := range results {
		out[i].Key = keys[i]
		if res.Err != nil {
			failed++
			out[i].Error = newErrorJSON(res.Err)
			if !r.json {
				r.stdout.printf("key=%s error: %s: %s\n", quoteField(keys[i]), cellar.ErrorCode(res.Err), errorMessage(res.Err))
			}
			continue
		}
		v := res.Value
		out[i].Value = &v
		if !r.json {
			r.stdout.printf("key=%s value=%d\n", quoteField(keys[i]), v)
		}
	}
	if r.json {
		if err := r.printJSON(struct {
			Results []counterJSON `json:"results"`
		}{out}); err != nil {
			return err
		}
	}
	if failed > 0 {
		return &partialError{failed, len(results)}
	}
	return nil
}

// printCounter prints one counter's value.
func (r *runner) printCounter(key string, v int64) error {
	if r.json {
		return r.printJSON(counterJSON{Key: key, Value: &v})
	}
	r.stdout.printf("key=%s value=%d\n", quoteField(key), v)
	return nil
}
