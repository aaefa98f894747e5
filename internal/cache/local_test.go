package cache

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cellar-db/cellar"
)

func cell(col string, ref int64) cellar.Cell {
	return cellar.Cell{Key: cellar.Key{RowKey: "r", Column: col, RefKey: ref}, Body: []byte(`{}`)}
}

// describe renders an entry for test messages: "keep", "cells c/1 d/2
// until 5", "none until 5" or "marker c>=3 until 5".
func describe(e *entry) string {
	if e == nil {
		return "keep"
	}
	var parts []string
	switch {
	case e.floors != nil:
		parts = append(parts, "marker")
		for _, col := range []string{"a", "c", "d"} {
			if f, ok := e.floors[col]; ok {
				parts = append(parts, fmt.Sprintf("%s>=%d", col, f))
			}
		}
	case len(e.cells) == 0:
		parts = append(parts, "none")
	default:
		parts = append(parts, "cells")
		for _, c := range e.cells {
			parts = append(parts, fmt.Sprintf("%s/%d", c.Column, c.RefKey))
		}
	}
	if e.expires != 0 {
		parts = append(parts, fmt.Sprintf("until %d", e.expires))
	}
	return strings.Join(parts, " ")
}

func answer(expires int64, cells ...cellar.Cell) *entry {
	return &entry{cells: cells, expires: expires}
}
func marker(expires int64, col string, ref int64) *entry {
	return &entry{floors: map[string]int64{col: ref}, expires: expires}
}

func TestMergeAnswer(t *testing.T) {
	const now = 100
	tests := []struct {
		name string
		kind kind
		old  *entry
		a    *entry
		want string
	}{
		{"latest into nothing", kindLatest, nil, answer(150, cell("c", 1)), "cells c/1 until 150"},
		{"latest over expired", kindLatest, answer(100, cell("c", 9)), answer(150, cell("c", 1)), "cells c/1 until 150"},
		{"higher ref wins", kindLatest, answer(200, cell("c", 1)), answer(150, cell("c", 2)), "cells c/2 until 150"},
		{"lower ref loses", kindLatest, answer(150, cell("c", 2)), answer(200, cell("c", 1)), "keep"},
		{"same ref, fresher read", kindLatest, answer(150, cell("c", 2)), answer(200, cell("c", 2)), "cells c/2 until 200"},
		{"same ref, older read", kindLatest, answer(200, cell("c", 2)), answer(150, cell("c", 2)), "keep"},
		{"not found does not hide a cell", kindLatest, answer(150, cell("c", 2)), answer(200), "keep"},
		{"cell replaces not found", kindLatest, answer(200), answer(150, cell("c", 1)), "cells c/1 until 150"},
		{"fresher not found", kindLatest, answer(150), answer(200), "none until 200"},
		{"marker met", kindLatest, marker(150, "c", 3), answer(120, cell("c", 3)), "cells c/3 until 120"},
		{"marker not met", kindLatest, marker(150, "c", 3), answer(200, cell("c", 2)), "keep"},
		{"marker not met by not found", kindLatest, marker(150, "c", 3), answer(200), "keep"},
		{"expired marker", kindLatest, marker(90, "c", 3), answer(200, cell("c", 2)), "cells c/2 until 200"},
		{"cell is immutable", kindCell, answer(0, cell("c", 1)), answer(0, cell("c", 1)), "keep"},
		{"cell replaces not found", kindCell, answer(150), answer(0, cell("c", 1)), "cells c/1"},
		{"not found does not hide a cell", kindCell, answer(0, cell("c", 1)), answer(200), "keep"},
		{"row merges per column", kindRow, answer(150, cell("a", 5), cell("c", 1)), answer(200, cell("c", 2), cell("d", 1)), "cells a/5 c/2 d/1 until 200"},
		{"row keeps newer columns", kindRow, answer(200, cell("c", 3)), answer(150, cell("c", 2)), "cells c/3 until 200"},
		{"row marker not met", kindRow, marker(150, "d", 1), answer(200, cell("c", 2)), "keep"},
		{"row marker met", kindRow, marker(150, "d", 1), answer(200, cell("c", 2), cell("d", 1)), "cells c/2 d/1 until 200"},
	}
	for _, tt := range tests {
		if got := describe(mergeAnswer(tt.kind, tt.old, now, tt.a)); got != tt.want {
			t.Errorf("%s: mergeAnswer(%s, %s) = %s; want %s", tt.name, describe(tt.old), describe(tt.a), got, tt.want)
		}
	}
}

func TestMergeCreated(t *testing.T) {
	const now, ttl = 100, 50
	tests := []struct {
		name string
		kind kind
		old  *entry
		c    cellar.Cell
		want string
	}{
		// Without an answer, the writer cannot know its cell is the latest.
		{"latest, nothing cached", kindLatest, nil, cell("c", 5), "marker c>=5 until 150"},
		{"latest, older cached", kindLatest, answer(120, cell("c", 1)), cell("c", 5), "cells c/5 until 120"},
		{"latest, newer cached", kindLatest, answer(120, cell("c", 9)), cell("c", 5), "keep"},
		{"latest, not found cached", kindLatest, answer(120), cell("c", 5), "cells c/5 until 120"},
		{"latest, marker", kindLatest, marker(200, "c", 3), cell("c", 5), "marker c>=5 until 200"},
		{"latest, higher marker", kindLatest, marker(120, "c", 7), cell("c", 5), "marker c>=7 until 150"},
		{"cell, nothing cached", kindCell, nil, cell("c", 5), "marker c>=5 until 150"},
		{"cell, not found cached", kindCell, answer(120), cell("c", 5), "cells c/5"},
		{"row, cached", kindRow, answer(120, cell("a", 1), cell("d", 1)), cell("c", 5), "cells a/1 c/5 d/1 until 120"},
		{"row, older column", kindRow, answer(120, cell("c", 1)), cell("c", 5), "cells c/5 until 120"},
		{"row, newer column", kindRow, answer(120, cell("c", 9)), cell("c", 5), "keep"},
		{"row, nothing cached", kindRow, nil, cell("c", 5), "marker c>=5 until 150"},
	}
	for _, tt := range tests {
		if got := describe(mergeCreated(tt.kind, tt.old, now, tt.c, ttl)); got != tt.want {
			t.Errorf("%s: mergeCreated(%s, %s/%d) = %s; want %s", tt.name, describe(tt.old), tt.c.Column, tt.c.RefKey, got, tt.want)
		}
	}
}

func TestMergeExists(t *testing.T) {
	const now, ttl = 100, 50
	tests := []struct {
		name   string
		old    *entry
		create bool
		want   string
	}{
		{"nothing cached, heard", nil, false, "keep"},
		{"nothing cached, own write", nil, true, "marker c>=5 until 150"},
		{"has it", answer(120, cell("c", 5)), false, "keep"},
		{"has newer", answer(120, cell("c", 7)), false, "keep"},
		{"stale", answer(120, cell("c", 4)), false, "marker c>=5 until 150"},
		{"stale not found", answer(120), false, "marker c>=5 until 150"},
		{"stale row", answer(120, cell("a", 1)), false, "marker c>=5 until 150"},
		{"marker", marker(200, "a", 2), false, "marker a>=2 c>=5 until 200"},
		{"expired", answer(90, cell("c", 1)), false, "keep"},
	}
	for _, tt := range tests {
		if got := describe(mergeExists(tt.old, now, "c", 5, ttl, tt.create)); got != tt.want {
			t.Errorf("%s: mergeExists(%s, c/5) = %s; want %s", tt.name, describe(tt.old), got, tt.want)
		}
	}
}

func TestWeigh(t *testing.T) {
	small := weigh(latestKey("r", "c"), answer(1, cell("c", 1)))
	c := cell("c", 1)
	c.Body = []byte(`{"x":"` + strings.Repeat("a", 100000) + `"}`)
	big := weigh(latestKey("r", "c"), answer(1, c))
	if big-small != uint32(len(c.Body)-2) {
		t.Errorf("a body of %d bytes weighs %d more than one of 2", len(c.Body), big-small)
	}
	if small < entryOverhead+cellOverhead {
		t.Errorf("a small entry weighs %d; want at least the overheads", small)
	}
}

// TestWeighNotFound: a not-found entry's error, whose message repeats the
// key, is weighed, so that misses count against MaxBytes as they take
// memory.
func TestWeighNotFound(t *testing.T) {
	k := key{row: strings.Repeat("r", 254), col: strings.Repeat("c", 64)}
	err := cellar.Errorf(cellar.ENOTFOUND, "no cell in row %q column %s", k.row, k.col)
	bare, miss := weigh(k, &entry{}), weigh(k, &entry{err: err})
	if int(miss-bare) < len(err.Message) {
		t.Errorf("a not-found entry weighs %d, %d more than an empty one; its message alone is %d bytes", miss, miss-bare, len(err.Message))
	}
}
