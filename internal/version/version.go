// Package version says which build of Holdfast is running. Every binary (holdfast,
// holdfast-agent, holdfastctl) reports the same string: the one `make build` and `make image`
// stamp in (-ldflags -X), else what the Go toolchain recorded of the source (its VCS revision).
package version

import "runtime/debug"

// stamped is set at link time: -X github.com/holdfast/holdfast/internal/version.stamped=v1.2.3.
// It is the one variable set from outside: a build fact, written once, read-only after.
var stamped string

// String returns the build's version: the stamped one, else "devel+<revision>[-dirty]" from
// the build information, else "devel".
func String() string {
	if stamped != "" {
		return stamped
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel+" + rev
}
