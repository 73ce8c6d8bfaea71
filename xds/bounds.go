package xds

import (
	"slices"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// What a client can make a stream hold is bounded: the type URLs it may ask for are a closed
// list, and the names it subscribes to that Holdfast has no resource of (which are copied and
// kept) are bounded per stream.

// ServedTypes are the types Holdfast serves, in push order: clusters before their
// assignments, listeners before their routes (make before break). Read-only.
var ServedTypes = []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// unservedTypes are xDS types an Envoy may ask for over ADS that Holdfast has no resources of
// (SDS, RTDS, ECDS, VHDS, SRDS, LEDS, Thrift routes, rate-limit configs). They are answered as
// for any resource Holdfast does not have: Delta says the names do not exist; SotW sends
// nothing for a name it does not have, and the client's own timer decides.
var unservedTypes = []resourcev3.Type{
	resourcev3.SecretType, resourcev3.RuntimeType, resourcev3.ExtensionConfigType, resourcev3.VirtualHostType,
	resourcev3.ScopedRouteType, resourcev3.ThriftRouteType, resourcev3.RateLimitConfigType,
	resourcev3.APITypePrefix + "envoy.config.endpoint.v3.LbEndpoint",
}

// pushOrder is every type a stream may hold, in the order one wake-up pushes them.
var pushOrder = append(slices.Clone(ServedTypes), unservedTypes...)

// typeKnown says whether typ is an xDS type: one Holdfast serves or one it answers as empty.
// Anything else ends the stream as a bad request.
func typeKnown(typ resourcev3.Type) bool { return slices.Contains(pushOrder, typ) }

// typeServed says whether Holdfast has resources of typ.
func typeServed(typ resourcev3.Type) bool { return slices.Contains(ServedTypes, typ) }

// noResources is the index of a type Holdfast does not serve: empty, shared by every snapshot
// and never modified (nothing is ever framed from it).
var noResources = &typeIndex{byName: map[string]*Resource{}, version: versionOf(nil)}

// maxNameBytes bounds one resource name: none of Holdfast's is longer (a service and a
// namespace of 63 characters, a 253-character domain, a port and an incarnation). A longer one
// is refused like a name over the budget.
const maxNameBytes = 1024

// admitLocked returns the names of a request the stream takes: every name idx has, and names
// it does not have while the stream's budget of unknown names (MaxUnknownNames, over all its
// types) lasts. A SotW request (replace) replaces the type's subscription; a Delta one adds to
// it. What is refused is counted per type, in a metric and in one log line per stream.
func (st *stream) admitLocked(typ resourcev3.Type, ts *typeState, idx *typeIndex, names []string, replace bool) []string {
	held := ts.unknown
	if replace {
		held = 0
	}
	budget := st.srv.opts.MaxUnknownNames - (st.unknown - ts.unknown) - held
	var out []string // a copy only once something is refused
	unknown, refused := 0, 0
	for i, n := range names {
		ok := true
		if _, known := idx.byName[n]; !known && n != "*" {
			switch {
			case len(n) > maxNameBytes:
				ok = false
			case !replace && ts.names.has(n): // held already, and counted
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
	st.unknown += held + unknown - ts.unknown
	ts.unknown = held + unknown
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
func (st *stream) forgetLocked(ts *typeState, idx *typeIndex, name string) {
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
