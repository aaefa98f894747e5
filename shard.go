package cellar

import (
	"fmt"
	"sort"
)

// DefaultShardCount is the number of logical shards of a new datastore.
const DefaultShardCount = 4096

// MaxShardCount bounds the shard count chosen at creation.
const MaxShardCount = 1 << 20

// ShardOf returns the logical shard of rowKey in a datastore of count shards:
// the 64-bit FNV-1a hash of the row key's UTF-8 bytes, modulo count.
//
// This function is part of the on-disk format: every cell records the shard
// it was written to, so changing it would strand data. A golden test pins it.
func ShardOf(rowKey string, count int) int {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	// Written out rather than hash/fnv to avoid an allocation per key on the
	// hot path; the golden test checks it against hash/fnv.
	h := uint64(offset64)
	for i := 0; i < len(rowKey); i++ {
		h ^= uint64(rowKey[i])
		h *= prime64
	}
	return int(h % uint64(count))
}

// ShardRange is an inclusive range of logical shards.
type ShardRange struct {
	First int `json:"first"`
	Last  int `json:"last"`
}

// Assignment places a range of logical shards on a named node.
type Assignment struct {
	Node string `json:"node"`
	ShardRange
}

// ShardMap assigns every logical shard of a datastore to exactly one node.
// It is versioned: a change (such as an online shard move) writes a new map
// with a higher version to the metadata node, and servers pick it up.
type ShardMap struct {
	Version     int64        `json:"version"`
	ShardCount  int          `json:"shard_count"`
	Assignments []Assignment `json:"assignments"`
}

// Validate returns an EINVALID error unless every shard in [0, ShardCount)
// is assigned to exactly one node, and every node is in nodes (if nodes is
// not nil).
func (m *ShardMap) Validate(nodes map[string]bool) error {
	if m.ShardCount < 1 || m.ShardCount > MaxShardCount {
		return Errorf(EINVALID, "shard count %d is out of range 1..%d", m.ShardCount, MaxShardCount)
	}
	as := append([]Assignment(nil), m.Assignments...)
	sort.Slice(as, func(i, j int) bool { return as[i].First < as[j].First })
	next := 0
	for _, a := range as {
		if nodes != nil && !nodes[a.Node] {
			return Errorf(EINVALID, "shard map assigns shards %d-%d to unknown node %q", a.First, a.Last, a.Node)
		}
		if a.First > a.Last {
			return Errorf(EINVALID, "shard range %d-%d is empty", a.First, a.Last)
		}
		if a.First < 0 || a.Last >= m.ShardCount {
			return Errorf(EINVALID, "shard range %d-%d is outside the datastore's shards 0-%d", a.First, a.Last, m.ShardCount-1)
		}
		if a.First != next {
			if a.First < next {
				return Errorf(EINVALID, "shard %d is assigned twice", a.First)
			}
			return Errorf(EINVALID, "shards %d-%d are not assigned to any node", next, a.First-1)
		}
		next = a.Last + 1
	}
	if next != m.ShardCount {
		return Errorf(EINVALID, "shards %d-%d are not assigned to any node", next, m.ShardCount-1)
	}
	return nil
}

// NodeOf returns the node that holds shard s, or "" if none does.
func (m *ShardMap) NodeOf(s int) string {
	for _, a := range m.Assignments {
		if s >= a.First && s <= a.Last {
			return a.Node
		}
	}
	return ""
}

// String formats a range as "first-last".
func (r ShardRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// ParseShardRange parses "first-last" or a single shard "n".
func ParseShardRange(s string) (ShardRange, error) {
	var r ShardRange
	if n, err := fmt.Sscanf(s, "%d-%d", &r.First, &r.Last); err == nil && n == 2 && fmt.Sprintf("%d-%d", r.First, r.Last) == s {
		return r, nil
	}
	if n, err := fmt.Sscanf(s, "%d", &r.First); err == nil && n == 1 && fmt.Sprint(r.First) == s {
		r.Last = r.First
		return r, nil
	}
	return r, Errorf(EINVALID, "shard range %q must look like 0-2047", s)
}
