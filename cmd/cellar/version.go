package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/cellar-db/cellar/internal/buildinfo"

	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlite"
)

// buildVersion is what `cellar version` reports: the module version and
// the VCS stamp go build records, and the node schema each backend of
// this binary needs (a node at another version is refused or migrated by
// `cellar init`).
type buildVersion struct {
	Version  string         `json:"version"`
	Commit   string         `json:"commit,omitempty"`
	Time     string         `json:"commit_time,omitempty"`
	Modified bool           `json:"modified,omitempty"`
	Go       string         `json:"go"`
	Platform string         `json:"platform"`
	Schema   map[string]int `json:"schema"`
}

func readBuildVersion() buildVersion {
	bi := buildinfo.Read()
	return buildVersion{
		Version:  bi.Version,
		Commit:   bi.Revision,
		Time:     bi.Time,
		Modified: bi.Modified,
		Go:       runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH,
		Schema: map[string]int{
			"sqlite":   len(sqlite.Dialect.Migrations),
			"postgres": len(postgres.Dialect.Migrations),
			"mysql":    len(mysql.Dialect.Migrations),
		},
	}
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cellar version [--json]\n\nPrints this binary's version, the commit it was built from (when go build\nrecorded one), its Go version and the node schema version each backend needs.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cellar: version takes no arguments, got %q\n", fs.Arg(0))
		return 2
	}
	v := readBuildVersion()
	if *asJSON {
		b, _ := json.Marshal(v) // strings, a bool and ints: cannot fail
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	fmt.Fprintf(stdout, "cellar %s", v.Version)
	if v.Commit != "" {
		fmt.Fprintf(stdout, ", commit %s", v.Commit)
		if v.Modified {
			fmt.Fprint(stdout, " (with uncommitted changes)")
		}
		if v.Time != "" {
			fmt.Fprintf(stdout, " of %s", v.Time)
		}
	}
	fmt.Fprintf(stdout, ", %s %s\n", v.Go, v.Platform)
	fmt.Fprintf(stdout, "node schema: sqlite %d, postgres %d, mysql %d\n", v.Schema["sqlite"], v.Schema["postgres"], v.Schema["mysql"])
	return 0
}
