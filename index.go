package cellar

import "context"

// Secondary indexes are kept as entries: one per indexed row, holding the
// row's field values encoded so that bytewise order is value order (see
// internal/index), on the logical shard of the first field's value. The
// storage of entries is below; what they mean is internal/index's.

// Limits on secondary indexes.
const (
	// MaxIndexFields is how many typed fields an index may have.
	MaxIndexFields = 4
	// MaxIndexKeyBytes bounds one encoded field value in an entry. Longer
	// values are stored truncated; a query re-checks every candidate against
	// the cell itself, so truncation costs only exactness of order among
	// values that share their first MaxIndexKeyBytes-1 bytes.
	MaxIndexKeyBytes = 512
	// MaxIndexLimit is the most entries one index scan returns.
	MaxIndexLimit = 1000
)

// IndexLoc is where an index entry lives: its logical shard and its
// encoded field values. Unused fields (an index with fewer than
// MaxIndexFields fields) are empty.
type IndexLoc struct {
	Shard int                    `json:"s"`
	Keys  [MaxIndexFields][]byte `json:"k"`
}

// IndexEntry says that row RowKey, at ref_key RefKey, had the field values
// Loc.Keys, in generation Gen of index Index.
type IndexEntry struct {
	Index  string
	Gen    int64
	Loc    IndexLoc
	RowKey string
	RefKey int64
}

// IndexBound is one end of a range on an encoded field.
type IndexBound struct {
	Key       []byte
	Inclusive bool
}

// IndexCond constrains one encoded field: equal to Eq if it is not nil,
// else within Lower and Upper where they are set.
type IndexCond struct {
	Eq           []byte
	Lower, Upper *IndexBound
}

// IndexScan reads the entries of one logical shard of an index generation
// that satisfy Conds, ordered by the fields at positions Order (then by row
// key), ascending or, with Desc, descending; only those after After in that
// order; at most Limit of them.
type IndexScan struct {
	Index string
	Gen   int64
	Shard int
	Conds [MaxIndexFields]IndexCond
	Order []int
	Desc  bool
	After *IndexPosition
	Limit int
}

// IndexPosition is a place in an IndexScan's order: the values of the
// Order fields and the row key of an entry.
type IndexPosition struct {
	Keys   [][]byte `json:"k"`
	RowKey string   `json:"r"`
}

// IndexStore stores index entries and, per indexed row, where its entries
// are: every storage node, and the sharding layer over them, which puts an
// entry on the node of its Loc.Shard and a row's record on the node of the
// row key's shard.
//
// Every method returns EUNAVAILABLE when the node cannot be reached.
type IndexStore interface {
	// PutIndexEntry writes e, or updates RefKey of the entry already at the
	// same place (index, generation, location, row key).
	PutIndexEntry(ctx context.Context, e IndexEntry) error

	// DeleteIndexEntry removes the entry of rowKey at loc, if it is there.
	DeleteIndexEntry(ctx context.Context, index string, gen int64, loc IndexLoc, rowKey string) error

	// ScanIndex returns the entries q selects, in q's order.
	ScanIndex(ctx context.Context, q IndexScan) ([]IndexEntry, error)

	// IndexRow returns the locations at which rowKey may have entries in
	// the index generation; none if it has no record.
	IndexRow(ctx context.Context, index string, gen int64, rowKey string) ([]IndexLoc, error)

	// SetIndexRow records the locations at which rowKey may have entries;
	// an empty list removes the record.
	SetIndexRow(ctx context.Context, index string, gen int64, rowKey string, locs []IndexLoc) error

	// DropIndex removes every entry and row record of the index generation
	// (on every node, for the sharding layer).
	DropIndex(ctx context.Context, index string, gen int64) error
}
