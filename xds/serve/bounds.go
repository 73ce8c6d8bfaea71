package serve

import (
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/xds/resource"
)

// What a client can make a stream hold is bounded: the type URLs it may ask for are a closed
// list, and the names it subscribes to that Holdfast has no resource of (which are copied and
// kept) are bounded per stream.

// noResources is the index of a type Holdfast does not serve: empty, shared by every snapshot
// and never modified (nothing is ever framed from it).
var noResources = &typeIndex{byName: map[string]*resource.Resource{}, version: resource.VersionOf(nil)}

// maxNameBytes bounds one resource name: none of Holdfast's is longer (a service and a
// namespace of 63 characters, a 253-character domain, a port and an incarnation). A longer one
// is refused like a name over the budget.
const maxNameBytes = 1024

// admitLocked returns the names of a request the stream takes: every name idx has, and names
// it does not have while the stream's budget of unknown names (MaxUnknownNames, over all its
// types) lasts. A SotW request (replace) replaces the type's subscription; a Delta one adds to
// it. What is refused is counted per type, in a metric and in one log line per stream.
func (st *stream) admitLocked(typ resourcev3.Type, ts *subscription, idx *typeIndex, names []string, replace bool) []string {
	kept := ts.unknown // the type's unknown names a Delta request adds to; SotW replaces them
	if replace {
		kept = 0
	}
	budget := st.srv.opts.MaxUnknownNames - (st.unknown - ts.unknown) - kept
	var out []string // a copy only once something is refused
	unknown, refused := 0, 0
	for i, n := range names {
		ok := true
		if _, known := idx.byName[n]; !known && n != "*" {
			switch {
			case len(n) > maxNameBytes:
				ok = false
			case !replace && ts.names.has(n): // subscribed already, and counted
			case unknown < budget:
				unknown++
			default:
				ok = false
			}
		}
		if !ok && out == nil {
			out = append(make([]string, 0, len(names)), names[:i]...)
		}
		if !ok {
			refused++
		} else if out != nil {
			out = append(out, n)
		}
	}
	st.unknown += kept + unknown - ts.unknown
	ts.unknown = kept + unknown
	if refused > 0 {
		ts.refused += refused
		st.srv.metrics.refusedNames.Add(float64(refused))
		if !st.refusedLogged {
			st.refusedLogged = true
			st.srv.log.Warn("client subscribed to more names Holdfast has no resource of than --xds-max-unknown-names (or to a name over 1 KiB): the rest are refused",
				"decision", "client_names_refused", "subject", st.nodeID, "type", typ, "refused", refused,
				"max_unknown_names", st.srv.opts.MaxUnknownNames, "flavour", st.flavour, "stream", st.id)
		}
	}
	if out == nil {
		return names
	}
	return out
}

// forgetLocked takes name, unsubscribed, off the stream's count of unknown names if idx has no
// resource of it.
func (st *stream) forgetLocked(ts *subscription, idx *typeIndex, name string) {
	if _, known := idx.byName[name]; !known && ts.unknown > 0 {
		ts.unknown--
		st.unknown--
	}
}

// clip shortens s to at most n bytes for a log line or an error (a hostile client's type URL
// can be megabytes).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
