// Package buildinfo reads what go build recorded about the running
// binary: its module version and the VCS stamp (absent with
// -buildvcs=false, or outside a checkout).
package buildinfo

import "runtime/debug"

// Info is the running binary's build record.
type Info struct {
	Version  string // the main module's version: "(devel)" for a checkout build
	Revision string // the commit, or "" if none was recorded
	Time     string // the commit's time, RFC 3339, or ""
	Modified bool   // built with uncommitted changes
}

// Read returns the running binary's build record; Version is "unknown"
// when the binary carries none.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown"}
	}
	info := Info{Version: bi.Main.Version}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}
