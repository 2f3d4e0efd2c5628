// Package version names the build of every Trellis binary, so the CLI can
// compare client, controller and proxy versions.
package version

import "runtime/debug"

// Version is stamped at link time with
// -ldflags "-X github.com/trellis-mesh/trellis/internal/version.Version=v0.1.0";
// unstamped builds report the VCS revision when Go recorded one, else "dev".
var Version = ""

// Get returns the version of this binary.
func Get() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			return "dev-" + rev + dirty
		}
	}
	return "dev"
}
