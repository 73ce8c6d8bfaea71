package serve

import (
	"fmt"
	"slices"
	"strings"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/xds/resource"
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
	slices.SortFunc(out, func(a, b ResourceStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Delivery is how far some resources have got with the clients that want them.
type Delivery struct {
	// Pending counts (client, resource) pairs where the client wants the resource and does not
	// hold that version yet, or holds it in a response it has not answered — leaving out clients
	// that are stuck (see Stuck).
	Pending int
	// Stuck counts the pairs of clients that have left a response of the type unanswered for
	// longer than the caller's stuckAfter: they hold nobody up.
	Stuck int
	// FreshUntil is when the first pending client with a response in flight turns stuck (zero:
	// none has one): a caller waiting for Pending to reach zero asks again then.
	FreshUntil time.Time
	// Rejection describes the first client found to have rejected one of them ("" if none).
	Rejection string
}

// Delivery reports, for the clients of kind subscribed to type typ, how far the resources
// named in versions (name → version) have got, as of now; a client that has left a response of
// the type unanswered for stuckAfter or longer counts as stuck, not pending. It reads each
// stream's state in place, without copying it. Settled says when to ask again.
func (s *Server) Delivery(kind resource.Kind, typ resourcev3.Type, versions map[string]string, now time.Time, stuckAfter time.Duration) Delivery {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	var d Delivery
	for _, st := range streams {
		st.mu.Lock()
		if ts := st.types[typ]; st.identified && st.kind == kind && ts != nil {
			st.deliveryLocked(ts, versions, now, stuckAfter, &d)
		}
		st.mu.Unlock()
	}
	return d
}

// Settled returns a channel closed the next time any client answers a response (ACK or NACK):
// what Delivery reports may have changed. Callers take the channel before they call Delivery.
func (s *Server) Settled() <-chan struct{} {
	for {
		if p := s.settled.Load(); p != nil {
			return *p
		}
		ch := make(chan struct{})
		if s.settled.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}

// notifySettled closes the channel Settled handed out, if anyone asked for one: nothing is
// allocated when nobody waits (Holdfast itself).
func (s *Server) notifySettled() {
	if p := s.settled.Swap(nil); p != nil {
		close(*p)
	}
}

func (st *stream) deliveryLocked(ts *subscription, versions map[string]string, now time.Time, stuckAfter time.Duration, d *Delivery) {
	stuck := ts.inflight != "" && now.Sub(ts.inflightAt) >= stuckAfter
	var inflight map[string]string
	if ts.inflight != "" {
		inflight = make(map[string]string, len(ts.inflightOut))
		for _, r := range ts.inflightOut {
			inflight[r.Name] = r.Version
		}
	}
	for name, v := range versions {
		if !ts.wildcard && !ts.names.has(name) {
			continue
		}
		held, _ := ts.sentVersion(name)
		switch {
		case ts.rejected[name] == v && d.Rejection == "":
			detail := ""
			if ts.nacked != nil {
				detail = ts.nacked.Detail
			}
			d.Rejection = fmt.Sprintf("local client %s rejected %s version %s: %s", st.nodeID, name, v, detail)
		case (held != v || inflight[name] == v) && stuck:
			d.Stuck++
		case held != v || inflight[name] == v:
			d.Pending++
			if ts.inflight != "" {
				if until := ts.inflightAt.Add(stuckAfter); d.FreshUntil.IsZero() || until.Before(d.FreshUntil) {
					d.FreshUntil = until
				}
			}
		}
	}
}
