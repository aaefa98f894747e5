package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"
)

// A token_env variable filled from a secret file usually ends in a
// newline, which no request can send (the server trims the token it is
// sent): the configured secret is trimmed too.
func TestTokenEnvTrailingNewline(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CELLAR_TEST_NEWLINE_TOKEN", "s3cret\n")
	p := writeConfig(t, "listen: 127.0.0.1:0\ndata_dir: "+dir+"\nauth:\n  tokens:\n    - {token_env: CELLAR_TEST_NEWLINE_TOKEN, scopes: [read]}\n")
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, cfg, true, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/shards", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("config with token_env %q accepted, but GET /v1/shards with that token = %d; want 200 (or the config refused)", "s3cret\\n", resp.StatusCode)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
