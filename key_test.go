package cellar_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
)

func TestValidateRowKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"a/b c%2F?#", true},
		{"ünïcødé ✓😀", true},
		{strings.Repeat("x", 255), true},
		{strings.Repeat("é", 127) + "x", true}, // 255 bytes
		{"", false},
		{strings.Repeat("x", 256), false},
		{strings.Repeat("é", 128), false}, // 256 bytes
		{"tab\t", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"c1\u0085", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		err := cellar.ValidateRowKey(tt.key)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateRowKey(%q) = %v; want ok=%v", tt.key, err, tt.ok)
		}
		if err != nil && cellar.ErrorCode(err) != cellar.EINVALID {
			t.Errorf("ValidateRowKey(%q) code = %s; want invalid_argument", tt.key, cellar.ErrorCode(err))
		}
	}
}

func TestValidateColumn(t *testing.T) {
	tests := []struct {
		col string
		ok  bool
	}{
		{"a", true}, {"_", true}, {"A_1", true}, {strings.Repeat("a", 64), true},
		{"", false}, {"1a", false}, {"a-b", false}, {"a b", false}, {strings.Repeat("a", 65), false}, {"é", false}, {"a\n", false},
	}
	for _, tt := range tests {
		if err := cellar.ValidateColumn(tt.col); (err == nil) != tt.ok {
			t.Errorf("ValidateColumn(%q) = %v; want ok=%v", tt.col, err, tt.ok)
		}
	}
}

func FuzzValidateRowKey(f *testing.F) {
	for _, s := range []string{"a", "a/b", "é", "\x00", "\xff", strings.Repeat("x", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := cellar.ValidateRowKey(key)
		valid := len(key) >= 1 && len(key) <= 255 && utf8.ValidString(key)
		for _, r := range key {
			if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
				valid = false
			}
		}
		if (err == nil) != valid {
			t.Fatalf("ValidateRowKey(%q) = %v; want valid=%v", key, err, valid)
		}
		if err == nil {
			if s := cellar.ShardOf(key, 4096); s < 0 || s >= 4096 {
				t.Fatalf("ShardOf(%q) = %d", key, s)
			}
		}
	})
}

func FuzzValidateColumn(f *testing.F) {
	for _, s := range []string{"a", "_x9", "9", "", "a-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, col string) {
		err := cellar.ValidateColumn(col)
		valid := len(col) >= 1 && len(col) <= 64
		for i, c := range []byte(col) {
			letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
			digit := c >= '0' && c <= '9'
			if !(letter || (i > 0 && digit)) {
				valid = false
			}
		}
		if (err == nil) != valid {
			t.Fatalf("ValidateColumn(%q) = %v; want valid=%v", col, err, valid)
		}
	})
}
