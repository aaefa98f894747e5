package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
)

// A token_env variable filled from a secret file usually ends in a
// newline, which no request can send (the server trims the token it is
// sent): the configured secret is trimmed too.
func TestTokenEnvTrailingNewline(t *testing.T) {
	t.Setenv("CELLAR_TEST_NEWLINE_TOKEN", "s3cret\n")
	cfg, err := loadConfig(writeConfig(t, "listen: 127.0.0.1:0\ndata_dir: "+t.TempDir()+"\nauth:\n  tokens:\n    - {token_env: CELLAR_TEST_NEWLINE_TOKEN, scopes: [read]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := initDatastore(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", startServerAddr(t, cfg)+"/v1/shards", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("token_env %q, GET /v1/shards with Bearer s3cret = %d; want 200", "s3cret\\n", resp.StatusCode)
	}
}
