package adminserver

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/admin"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
	"github.com/holdfast/holdfast/xds/translate"
)

// Causes a Why answer names (WhyReason.cause).
const (
	causeInFlight      = "in_flight"
	causeNack          = "nack"
	causeNotSubscribed = "not_subscribed"
	causeDoesNotExist  = "does_not_exist"
	causeNotConnected  = "not_connected"
	causeGuardHold     = "guard_hold"
	causeDegraded      = "degraded"
	causeRefused       = "refused"
	causeTombstone     = "tombstone"
	causeRestored      = "restored"
	causeSourceStale   = "source_stale"
	causeSourceSyncing = "source_syncing"
	causeLocality      = "locality"
	causeNoEndpoints   = "no_endpoints"
)

// notSubscribed is a WhyResource status beside CSDS's: the client has not asked for it.
const notSubscribed = "NOT_SUBSCRIBED"

// decisionsPerReason bounds the decisions quoted under one reason.
const decisionsPerReason = 5

// Why answers, for one client and one service, what the client holds, what it would be sent
// now, and why they differ or look surprising. It reads the same state as the other methods:
// the store's service status, the resolver's sources, the xDS server's streams and snapshots,
// and the decision log.
func (s *Server) Why(_ context.Context, req *admin.WhyRequest) (*admin.WhyResponse, error) {
	ns, name, ok := strings.Cut(req.GetService(), "/")
	if !ok || ns == "" || name == "" {
		return nil, status.Errorf(codes.InvalidArgument, "service %q: want namespace/name", req.GetService())
	}
	if req.GetNodeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a node ID is required")
	}
	k := resolver.Key{Namespace: ns, Name: name}
	if base, ok := strings.CutSuffix(name, "@"+resolver.ClusterSetDomain); ok {
		k.Name, k.ClusterSet = base, true
	}
	st, found := s.o.Services.Service(k)
	if !found {
		return nil, status.Errorf(codes.NotFound, "no service %s: Holdfast serves and refuses nothing by that name (holdfastctl services lists what it knows)", k)
	}
	now := time.Now()
	w := &why{s: s, out: &admin.WhyResponse{Service: summary(st, now),
		Scope: "streams of this replica only: a client connected to another replica is not seen here"}, decisions: s.o.Decisions.Latest(0, "")}
	w.service(st)
	w.sources(k)
	var ports []int32
	if svc := st.Service; svc != nil {
		for _, p := range svc.Ports {
			if req.GetPort() == 0 || p.Port == req.GetPort() {
				ports = append(ports, p.Port)
			}
		}
		if len(ports) == 0 {
			return nil, status.Errorf(codes.NotFound, "service %s has no port %d", k, req.GetPort())
		}
	}
	for _, c := range s.o.Clients.Clients() {
		if c.NodeID == req.GetNodeId() {
			w.stream(c, st.Service, ports)
		}
	}
	if len(w.out.Streams) == 0 {
		w.reason(causeNotConnected, "", fmt.Sprintf("no stream of node %q is open on this replica: the client is not connected here (or under another node ID)", req.GetNodeId()),
			func(r Record) bool { return r.Subject == req.GetNodeId() })
	}
	return w.out, nil
}

// why builds one answer.
type why struct {
	s         *Server
	out       *admin.WhyResponse
	decisions []Record // the whole log, newest first
}

// reason adds a reason quoting the decisions that match.
func (w *why) reason(cause, stream, detail string, match func(Record) bool) {
	r := &admin.WhyReason{Cause: cause, Detail: detail, Stream: stream}
	for _, d := range w.decisions {
		if len(r.Decisions) == decisionsPerReason {
			break
		}
		if match != nil && match(d) {
			r.Decisions = append(r.Decisions, &admin.Decision{At: ts(d.At), Kind: d.Kind, Subject: d.Subject, Message: d.Message, Attrs: d.Attrs,
				Count: int32(min(d.Count, math.MaxInt32)), First: ts(d.First)}) //nolint:gosec // bounded on the line
		}
	}
	w.out.Reasons = append(w.out.Reasons, r)
}

// service adds the reasons the service's own state gives.
func (w *why) service(st cache.ServiceStatus) {
	key := st.Key.String()
	about := func(r Record) bool { return r.Subject == key }
	switch st.State {
	case cache.StateHeld:
		h := w.s.o.Services.Held()
		detail := fmt.Sprintf("the guard holds a mass withdrawal (hold %d): %s keeps the endpoints the change would take away until the hold ends or is released", st.HoldID, key)
		if h != nil && h.ID == st.HoldID {
			detail = fmt.Sprintf("the guard holds a mass withdrawal (hold %d since %s: %s; %d of %d usable endpoints): %s keeps the endpoints the change would take away until the hold ends or is released (holdfastctl release %d)",
				h.ID, h.Since.Format(time.RFC3339), h.Verdict.Reason, h.Verdict.Withdrawn, h.Verdict.Fleet, key, h.ID)
		}
		hold := "hold " + strconv.Itoa(st.HoldID)
		w.reason(causeGuardHold, "", detail, func(r Record) bool { return r.Subject == hold || r.Subject == key })
	case cache.StateDegraded:
		w.reason(causeDegraded, "", fmt.Sprintf("%s's latest input is unusable (%s): it is served as it last was", key, st.Reason), about)
	case cache.StateRefused:
		w.reason(causeRefused, "", fmt.Sprintf("%s is refused by a capacity limit: %s", key, st.Reason), func(r Record) bool { return about(r) || r.Kind == "capacity_refused" })
	case cache.StateDeleted:
		w.reason(causeTombstone, "", fmt.Sprintf("%s was deleted in Kubernetes: it is served as it last was until its tombstone grace (--tombstone-grace) ends, so that a re-creation within the grace does not flap", key), about)
	case cache.StateRestored:
		w.reason(causeRestored, "", fmt.Sprintf("%s is served from the state file Holdfast restored at start: not yet confirmed by the API server", key),
			func(r Record) bool { return r.Kind == "state_restored" })
	case cache.StateStale:
		w.reason(causeSourceStale, "", st.Reason, func(r Record) bool {
			return strings.HasPrefix(r.Kind, "source_") && (r.Subject == st.Key.Namespace || r.Subject == "")
		})
	}
}

// sources adds a reason for a source of the service's namespace that is syncing (a stale one
// already shows in the service's state).
func (w *why) sources(k resolver.Key) {
	for _, src := range w.s.o.Sources.Sources() {
		if src.Name != k.Namespace && src.Name != "" {
			continue
		}
		if src.State == resolver.Syncing {
			w.reason(causeSourceSyncing, "", fmt.Sprintf("the watch of %s is (re)listing since %s: changes made meanwhile are not served yet", sourceName(src.Name), src.Since.Format(time.RFC3339)),
				func(r Record) bool { return r.Subject == src.Name })
		}
	}
}

func sourceName(name string) string {
	if name == "" {
		return "every namespace"
	}
	return "namespace " + name
}

// stream adds one stream of the client: its resources of the service's ports, the endpoints
// its locality sees, and the reasons they give.
func (w *why) stream(c serve.ClientStatus, svc *resolver.Service, ports []int32) {
	label := fmt.Sprintf("%s (%s %s, connected %s)", c.NodeID, c.Kind, c.Flavour, c.Since.Format(time.RFC3339))
	ws := &admin.WhyStream{Client: w.s.client(c, false)}
	w.out.Streams = append(w.out.Streams, ws)
	if svc == nil {
		return
	}
	snap := w.s.o.Clients.Snapshot(c.Kind).For(c.Node)
	states := map[resourcev3.Type]map[string]serve.ResourceStatus{}
	for _, port := range ports {
		for _, want := range w.wanted(c.Kind, svc, port) {
			wr := &admin.WhyResource{Type: want.typ, Name: want.name, Status: notSubscribed}
			if r, ok := snap.Get(want.typ, want.name); ok {
				wr.CurrentVersion = r.Version
			}
			if t, ok := c.Types[want.typ]; ok {
				if _, listed := states[want.typ]; !listed { // each type's states once, not once per port
					states[want.typ] = map[string]serve.ResourceStatus{}
					for _, rs := range t.Resources(snap, want.typ) {
						states[want.typ][rs.Name] = rs
					}
				}
				if rs, ok := states[want.typ][want.name]; ok {
					wr.Status, wr.ClientVersion = string(rs.State), rs.Version
				}
				w.resourceReasons(c, label, t, wr)
			} else {
				w.resourceReasons(c, label, serve.TypeStatus{}, wr)
			}
			ws.Resources = append(ws.Resources, wr)
		}
		wp := &admin.WhyPort{Port: port}
		if r, ok := snap.Get(resourcev3.EndpointType, w.s.o.Naming.Upstream(svc.Key, svc.UID, port)); ok {
			wp.Priorities = priorities(r)
		}
		ws.Ports = append(ws.Ports, wp)
		w.localityReasons(c, label, port, wp)
	}
}

type wantedResource struct {
	typ  resourcev3.Type
	name string
}

// wanted lists the resources a client of kind needs for one service port, in the order a
// client resolves them.
func (w *why) wanted(kind resource.Kind, svc *resolver.Service, port int32) []wantedResource {
	up := w.s.o.Naming.Upstream(svc.Key, svc.UID, port)
	lis, route := w.s.o.Naming.Resource(svc.Key, port), up
	if kind == resource.KindEnvoy {
		lis, route = translate.Outbound(port), translate.Outbound(port)
	}
	return []wantedResource{{resourcev3.ListenerType, lis}, {resourcev3.RouteType, route}, {resourcev3.ClusterType, up}, {resourcev3.EndpointType, up}}
}

// resourceReasons adds why one resource of a stream is not what Holdfast would send now.
func (w *why) resourceReasons(c serve.ClientStatus, label string, t serve.TypeStatus, wr *admin.WhyResource) {
	node := func(r Record) bool { return r.Subject == c.NodeID }
	short := resource.Short(wr.Type)
	switch wr.Status {
	case notSubscribed:
		w.reason(causeNotSubscribed, label, fmt.Sprintf("the client has not subscribed to %s %s on this stream: it has not (yet) asked for this service", short, wr.Name), nil)
	case string(serve.Nacked):
		detail := ""
		if t.Nacked != nil {
			detail = t.Nacked.Detail
		}
		w.reason(causeNack, label, fmt.Sprintf("the client rejected %s %s version %s: %q; it keeps what it had before", short, wr.Name, wr.ClientVersion, detail),
			func(r Record) bool { return node(r) && r.Kind == "client_nack" })
	case string(serve.Requested):
		if t.InFlight {
			w.reason(causeInFlight, label, fmt.Sprintf("%s %s version %s is in a response the client has not answered yet", short, wr.Name, wr.ClientVersion), node)
		} else {
			w.reason(causeInFlight, label, fmt.Sprintf("%s %s is subscribed and about to be sent", short, wr.Name), node)
		}
	case string(serve.DoesNotExist):
		w.reason(causeDoesNotExist, label, fmt.Sprintf("Holdfast has no %s %s for this client's kind: the client was told it does not exist", short, wr.Name), nil)
	case string(serve.Acked):
		if wr.CurrentVersion != "" && wr.ClientVersion != wr.CurrentVersion {
			w.reason(causeInFlight, label, fmt.Sprintf("the client holds %s %s version %s; version %s is queued for it", short, wr.Name, wr.ClientVersion, wr.CurrentVersion), node)
		}
	}
}

// localityReasons explains where the client's traffic for a port goes, when not to every
// endpoint alike: nothing at all, or not in its own locality.
func (w *why) localityReasons(c serve.ClientStatus, label string, port int32, wp *admin.WhyPort) {
	if len(wp.Priorities) == 0 || len(wp.Priorities[0].Endpoints) == 0 {
		w.reason(causeNoEndpoints, label, fmt.Sprintf("port %d has no endpoint this client would route to: its RPCs fail fast", port), nil)
		return
	}
	if len(wp.Priorities) > 1 {
		where := fmt.Sprintf("zone %q", c.Node.GetLocality().GetZone())
		if cluster := resource.LocalityOf(c.Node).Cluster; cluster != "" {
			where = fmt.Sprintf("cluster %q, %s (its own cluster's endpoints come first)", cluster, where)
		}
		w.reason(causeLocality, label, fmt.Sprintf("the client is in %s: port %d's endpoints are split over %d priorities; it uses priority 0 (%s) and fails over in order",
			where, port, len(wp.Priorities), strings.Join(wp.Priorities[0].Localities, ", ")), nil)
	}
}

// priorities reads an assignment's endpoints by priority.
func priorities(r *resource.Resource) []*admin.WhyPriority {
	var cla endpointv3.ClusterLoadAssignment
	if err := proto.Unmarshal(r.Any.GetValue(), &cla); err != nil {
		return nil
	}
	byPriority := map[uint32]*admin.WhyPriority{}
	for _, l := range cla.GetEndpoints() {
		p := byPriority[l.GetPriority()]
		if p == nil {
			p = &admin.WhyPriority{Priority: l.GetPriority()}
			byPriority[l.GetPriority()] = p
		}
		loc := l.GetLocality().GetZone()
		if r := l.GetLocality().GetRegion(); r != "" {
			loc += "/" + r
		}
		if loc == "" {
			loc = "no zone"
		}
		p.Localities = append(p.Localities, loc)
		for _, e := range l.GetLbEndpoints() {
			a := e.GetEndpoint().GetAddress().GetSocketAddress()
			p.Endpoints = append(p.Endpoints, fmt.Sprintf("%s:%d %s", a.GetAddress(), a.GetPortValue(), e.GetHealthStatus()))
		}
	}
	out := make([]*admin.WhyPriority, 0, len(byPriority))
	for _, p := range byPriority {
		slices.Sort(p.Endpoints)
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *admin.WhyPriority) int { return int(a.Priority) - int(b.Priority) })
	return out
}
