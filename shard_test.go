package cellar_test

import (
	"hash/fnv"
	"testing"

	"github.com/cellar-db/cellar"
)

// TestShardOfGolden pins the shard function: it is part of the on-disk
// format, and changing it would strand every stored cell.
func TestShardOfGolden(t *testing.T) {
	tests := []struct {
		row   string
		count int
		want  int
	}{
		{"user:1", 4096, 3307},
		{"user:2", 4096, 3742},
		{"a", 4096, 3212},
		{"ünïcødé ✓", 4096, 1063},
		{"a/b/c", 4096, 3819},
		{"user:1", 16, 11},
		{"user:1", 1, 0},
	}
	for _, tt := range tests {
		if got := cellar.ShardOf(tt.row, tt.count); got != tt.want {
			t.Errorf("ShardOf(%q, %d) = %d; want %d", tt.row, tt.count, got, tt.want)
		}
	}
}

func TestShardOfIsFNV1a(t *testing.T) {
	for _, row := range []string{"x", "user:42", "😀", "a longer row key with spaces"} {
		h := fnv.New64a()
		h.Write([]byte(row))
		if got, want := cellar.ShardOf(row, 4096), int(h.Sum64()%4096); got != want {
			t.Errorf("ShardOf(%q) = %d; FNV-1a says %d", row, got, want)
		}
	}
}

func TestShardMapValidate(t *testing.T) {
	a := func(node string, first, last int) cellar.Assignment {
		return cellar.Assignment{Node: node, ShardRange: cellar.ShardRange{First: first, Last: last}}
	}
	nodes := map[string]bool{"n1": true, "n2": true}
	tests := []struct {
		name string
		m    cellar.ShardMap
		ok   bool
	}{
		{"whole", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n1", 0, 7)}}, true},
		{"split unordered", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n2", 4, 7), a("n1", 0, 3)}}, true},
		{"gap", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n1", 0, 2), a("n2", 4, 7)}}, false},
		{"overlap", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n1", 0, 4), a("n2", 4, 7)}}, false},
		{"short", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n1", 0, 6)}}, false},
		{"past end", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n1", 0, 8)}}, false},
		{"unknown node", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n3", 0, 7)}}, false},
		{"empty range", cellar.ShardMap{ShardCount: 8, Assignments: []cellar.Assignment{a("n1", 0, 7), a("n2", 5, 4)}}, false},
		{"zero shards", cellar.ShardMap{ShardCount: 0}, false},
	}
	for _, tt := range tests {
		err := tt.m.Validate(nodes)
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v; want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestParseShardRange(t *testing.T) {
	tests := []struct {
		in      string
		want    cellar.ShardRange
		wantErr bool
	}{
		{"0-2047", cellar.ShardRange{First: 0, Last: 2047}, false},
		{"17", cellar.ShardRange{First: 17, Last: 17}, false},
		{"1-", cellar.ShardRange{}, true},
		{"a-b", cellar.ShardRange{}, true},
		{"1-2-3", cellar.ShardRange{}, true},
		{" 1-2", cellar.ShardRange{}, true},
	}
	for _, tt := range tests {
		got, err := cellar.ParseShardRange(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("ParseShardRange(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
