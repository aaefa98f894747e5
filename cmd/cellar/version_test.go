package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `cellar version --json` of a built binary names the commit it was built
// from and the schema version its SQLite nodes are created at.
func TestVersion(t *testing.T) {
	bin := buildCellar(t)
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("cellar version --json: %v", err)
	}
	var v buildVersion
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("cellar version --json printed %q: %v", out, err)
	}
	if !strings.HasPrefix(v.Go, "go") || v.Platform == "" || v.Version == "" {
		t.Errorf("version %+v: want the Go version, platform and module version", v)
	}
	// This machine's go env sets GOFLAGS=-buildvcs=false; a build that
	// records the commit is asked for it (and needs git and a checkout).
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		stamped := filepath.Join(t.TempDir(), "cellar")
		if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", stamped, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build -buildvcs=true: %v\n%s", err, out)
		}
		out, err := exec.Command(stamped, "version", "--json").Output()
		var sv buildVersion
		if err == nil {
			err = json.Unmarshal(out, &sv)
		}
		if want := strings.TrimSpace(string(head)); err != nil || sv.Commit != want || sv.Time == "" {
			t.Errorf("stamped build: %v, version %+v; want commit %s and its time", err, sv, want)
		}
	}

	dir := t.TempDir()
	if out, err := exec.Command(bin, "init", "--data-dir", dir).CombinedOutput(); err != nil {
		t.Fatalf("cellar init: %v\n%s", err, out)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "local.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var have int
	if err := db.QueryRowContext(context.Background(), "SELECT MAX(version) FROM cellar_schema").Scan(&have); err != nil {
		t.Fatal(err)
	}
	if v.Schema["sqlite"] != have {
		t.Errorf("version says sqlite schema %d; a node init creates has %d", v.Schema["sqlite"], have)
	}
	if v.Schema["postgres"] == 0 || v.Schema["mysql"] == 0 {
		t.Errorf("schema %v: want every backend's", v.Schema)
	}

	text, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(text), "cellar ") || !strings.Contains(string(text), v.Go) {
		t.Errorf("cellar version: %v, printed %q", err, text)
	}
}
