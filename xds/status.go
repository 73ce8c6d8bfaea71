package xds

import (
	"slices"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// ResourceState is what a client has of one resource, in CSDS's terms.
type ResourceState string

const (
	// Acked means the client accepted the version it was sent.
	Acked ResourceState = "ACKED"
	// Nacked means the client rejected the version it was sent (see the type's Nacked record).
	Nacked ResourceState = "NACKED"
	// Requested means subscribed, and the client has not yet answered for the current version.
	Requested ResourceState = "REQUESTED"
	// DoesNotExist means subscribed, and there is no such resource; the client was told or will be.
	DoesNotExist ResourceState = "DOES_NOT_EXIST"
)

// ResourceStatus is one resource of one client.
type ResourceStatus struct {
	Name    string
	Version string // the version the client was sent ("" if none)
	State   ResourceState
}

// Resources returns the state of every resource of type typ the client subscribed to or
// holds, sorted by name. snap is what the client's kind is served now.
func (t TypeStatus) Resources(snap *Snapshot, typ resourcev3.Type) []ResourceStatus {
	names := map[string]struct{}{}
	for _, n := range t.Names {
		names[n] = struct{}{}
	}
	for n := range t.Sent {
		names[n] = struct{}{}
	}
	out := make([]ResourceStatus, 0, len(names))
	for n := range names {
		v, sent := t.Sent[n]
		rs := ResourceStatus{Name: n, Version: v}
		_, exists := snap.Get(typ, n)
		inflight, isInflight := t.InFlightResources[n]
		switch {
		case isInflight && inflight != "":
			rs.State, rs.Version = Requested, inflight
		case sent && v != "" && t.Rejected[n] == v:
			rs.State = Nacked
		case (sent && v == "") || (!sent && !exists):
			rs.State, rs.Version = DoesNotExist, ""
		case !sent:
			rs.State = Requested
		default:
			rs.State = Acked
		}
		out = append(out, rs)
	}
	slices.SortFunc(out, func(a, b ResourceStatus) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}
