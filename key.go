package cellar

import (
	"regexp"
	"unicode/utf8"
)

// Limits on keys.
const (
	MaxRowKeyBytes = 255
	MaxRefKey      = 1<<63 - 1
)

var columnRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidateRowKey returns an EINVALID error unless rowKey is valid UTF-8 of 1 to
// 255 bytes without control characters. Any other character, including '/',
// spaces and non-ASCII, is allowed.
func ValidateRowKey(rowKey string) error { return ValidateKey("row_key", rowKey) }

// ValidateKey checks key by the row key rules; what names it in the error
// message ("timeline key", "member", "counter key"...).
func ValidateKey(what, key string) error {
	if len(key) == 0 {
		return Errorf(EINVALID, "%s is empty", what)
	}
	if len(key) > MaxRowKeyBytes {
		return Errorf(EINVALID, "%s is %d bytes; the limit is %d", what, len(key), MaxRowKeyBytes)
	}
	if !utf8.ValidString(key) {
		return Errorf(EINVALID, "%s is not valid UTF-8", what)
	}
	for _, r := range key {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return Errorf(EINVALID, "%s contains control character %U", what, r)
		}
	}
	return nil
}

// ValidateColumn returns an EINVALID error unless column matches
// ^[A-Za-z_][A-Za-z0-9_]{0,63}$.
func ValidateColumn(column string) error {
	if !columnRE.MatchString(column) {
		return Errorf(EINVALID, "column %q must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$", truncate(column, 80))
	}
	return nil
}

// ValidateRefKey returns an EINVALID error unless 0 <= refKey <= 2^63-1.
func ValidateRefKey(refKey int64) error {
	if refKey < 0 {
		return Errorf(EINVALID, "ref_key %d is negative", refKey)
	}
	return nil
}

// Validate checks all three parts of k.
func (k Key) Validate() error {
	if err := ValidateRowKey(k.RowKey); err != nil {
		return err
	}
	if err := ValidateColumn(k.Column); err != nil {
		return err
	}
	return ValidateRefKey(k.RefKey)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
