// Package adminserver serves Holdfast's operator API (xds/admin: admin.proto and its generated
// code beside it), CSDS, and the decision log both are fed from.
package adminserver

import (
	"context"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/admin"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
	"github.com/holdfast/holdfast/xds/translate"
)

// Services is what the admin API needs of the store.
type Services interface {
	Services() []cache.ServiceStatus
	Service(resolver.Key) (cache.ServiceStatus, bool)
	Held() *cache.Hold
	Release(id int) error
	Capacity() cache.CapacityStatus
}

// Sources is what the admin API needs of the resolver.
type Sources interface {
	Sources() []resolver.SourceStatus
}

// Clients is what the admin API and CSDS need of the xDS server.
type Clients interface {
	Clients() []serve.ClientStatus
	Snapshot(resource.Kind) *serve.Snapshot
	ClientCapacity() (open, limit int)
}

// Options configure a Server.
type Options struct {
	Services  Services
	Sources   Sources
	Clients   Clients
	Naming    translate.Naming
	Decisions *Decisions
	Logger    *slog.Logger
}

// Server implements the Admin service.
type Server struct {
	admin.UnimplementedAdminServer
	o   Options
	log *slog.Logger
}

// NewServer returns an Admin server over o's parts.
func NewServer(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Decisions == nil {
		o.Decisions = NewDecisions(1)
	}
	return &Server{o: o, log: o.Logger.With("component", "admin")}
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func summary(st cache.ServiceStatus, now time.Time) *admin.ServiceSummary {
	out := &admin.ServiceSummary{Namespace: st.Key.Namespace, Name: st.Key.Name, State: string(st.State), Reason: st.Reason, ClusterSet: st.Key.ClusterSet}
	if st.HoldID != 0 {
		out.HoldId = strconv.Itoa(st.HoldID)
	}
	if s := st.Service; s != nil {
		for _, p := range s.Ports {
			out.Ports = append(out.Ports, p.Port)
			for _, e := range p.Endpoints {
				out.Endpoints++
				if e.Ready {
					out.ReadyEndpoints++
				}
			}
		}
		if !s.Created.IsZero() {
			out.Age = durationpb.New(now.Sub(s.Created).Round(time.Second))
		}
	}
	return out
}

// ListServices lists every service served or refused.
func (s *Server) ListServices(_ context.Context, req *admin.ListServicesRequest) (*admin.ListServicesResponse, error) {
	now := time.Now()
	out := &admin.ListServicesResponse{}
	for _, st := range s.o.Services.Services() {
		if req.GetNamespace() != "" && st.Key.Namespace != req.GetNamespace() {
			continue
		}
		out.Services = append(out.Services, summary(st, now))
	}
	return out, nil
}

// GetService returns one service in full.
func (s *Server) GetService(_ context.Context, req *admin.GetServiceRequest) (*admin.ServiceDetail, error) {
	k := resolver.Key{Namespace: req.GetNamespace(), Name: req.GetName(), ClusterSet: req.GetClusterSet()}
	if k.Namespace == "" {
		if ns, name, ok := strings.Cut(k.Name, "/"); ok {
			k.Namespace, k.Name = ns, name
		}
	}
	if name, ok := strings.CutSuffix(k.Name, "@"+resolver.ClusterSetDomain); ok {
		k.Name, k.ClusterSet = name, true
	}
	st, ok := s.o.Services.Service(k)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no service %s", k)
	}
	out := &admin.ServiceDetail{Summary: summary(st, time.Now())}
	svc := st.Service
	if svc == nil {
		return out, nil
	}
	out.Headless = svc.Headless
	out.ServiceResourceVersion = svc.Origin.ServiceVersion
	out.ObservedAt = ts(svc.Origin.ObservedAt)
	for _, o := range svc.Origin.Slices {
		out.Slices = append(out.Slices, &admin.ObjectVersion{Name: o.Name, ResourceVersion: o.ResourceVersion})
	}
	for _, p := range svc.Ports {
		port := &admin.Port{Name: p.Name, Port: p.Port, AppProtocol: p.AppProtocol, Unmatched: p.Unmatched}
		zones := map[string]*admin.Zone{}
		for _, e := range p.Endpoints {
			z := zones[e.Zone]
			if z == nil {
				z = &admin.Zone{Zone: e.Zone}
				zones[e.Zone] = z
			}
			z.Endpoints = append(z.Endpoints, &admin.Endpoint{Address: e.Address, Port: e.Port, Ready: e.Ready, Serving: e.Serving,
				Terminating: e.Terminating, Node: e.NodeName, Hostname: e.Hostname, Health: health(e.Health()), Cluster: e.Cluster})
		}
		for _, name := range slices.Sorted(maps.Keys(zones)) {
			port.Zones = append(port.Zones, zones[name])
		}
		out.Ports = append(out.Ports, port)
		out.Resources = append(out.Resources, s.served(svc, p.Port)...)
	}
	return out, nil
}

func health(h resolver.Health) string {
	switch h {
	case resolver.Healthy:
		return "HEALTHY"
	case resolver.Draining:
		return "DRAINING"
	default:
		return "UNUSABLE"
	}
}

// served lists the resources clients of each kind are served for one service port.
func (s *Server) served(svc *resolver.Service, port int32) []*admin.ServedResource {
	var out []*admin.ServedResource
	name := s.o.Naming.Upstream(svc.Key, svc.UID, port)
	for _, kind := range []resource.Kind{resource.KindGRPC, resource.KindEnvoy} {
		snap := s.o.Clients.Snapshot(kind)
		wanted := map[resourcev3.Type]string{resourcev3.ClusterType: name, resourcev3.EndpointType: name,
			resourcev3.ListenerType: s.o.Naming.Resource(svc.Key, port), resourcev3.RouteType: name}
		if kind == resource.KindEnvoy {
			wanted[resourcev3.ListenerType] = translate.Outbound(port)
			wanted[resourcev3.RouteType] = translate.Outbound(port)
		}
		for _, typ := range resource.Served {
			if r, ok := snap.Get(typ, wanted[typ]); ok {
				out = append(out, &admin.ServedResource{ClientKind: string(kind), Type: typ, Name: r.Name, Version: r.Version})
			}
		}
	}
	return out
}

func nack(n *serve.NackRecord) *admin.Nack {
	if n == nil {
		return nil
	}
	return &admin.Nack{At: ts(n.At), Type: n.Type, Version: n.Version, Nonce: n.Nonce, Detail: n.Detail, Resources: maps.Clone(n.Resources)}
}

func (s *Server) client(c serve.ClientStatus, detail bool) *admin.ClientSummary {
	out := &admin.ClientSummary{NodeId: c.NodeID, Kind: string(c.Kind), Flavour: c.Flavour, Zone: c.Node.GetLocality().GetZone(),
		Region: c.Node.GetLocality().GetRegion(), UserAgent: c.Node.GetUserAgentName(), ConnectedAt: ts(c.Since), Nacks: int32(len(c.Nacks))} //nolint:gosec // at most NackHistory
	snap := s.o.Clients.Snapshot(c.Kind).For(c.Node)
	for _, typ := range resource.Served {
		t, ok := c.Types[typ]
		if !ok {
			continue
		}
		tsOut := &admin.TypeStatus{Type: typ, Wildcard: t.Wildcard, Subscribed: int32(len(t.Names)), Sent: int32(len(t.Sent)), //nolint:gosec // counts of resources
			AckedVersion: t.AckedVersion, InFlight: t.InFlight, Nacked: nack(t.Nacked), RefusedNames: int32(min(t.Refused, math.MaxInt32))} //nolint:gosec // bounded on the line
		if detail {
			for _, r := range t.Resources(snap, typ) {
				tsOut.Resources = append(tsOut.Resources, &admin.ResourceStatus{Name: r.Name, Version: r.Version, Status: string(r.State)})
			}
		}
		out.Types = append(out.Types, tsOut)
	}
	return out
}

// ListClients lists every connected client.
func (s *Server) ListClients(context.Context, *admin.ListClientsRequest) (*admin.ListClientsResponse, error) {
	out := &admin.ListClientsResponse{}
	for _, c := range s.o.Clients.Clients() {
		if c.NodeID == "" {
			continue // not identified yet
		}
		out.Clients = append(out.Clients, s.client(c, false))
	}
	return out, nil
}

// GetClient returns one client in full. A node ID may have more than one stream (a client
// reconnecting before its old stream is gone); the newest is shown.
func (s *Server) GetClient(_ context.Context, req *admin.GetClientRequest) (*admin.ClientDetail, error) {
	var found *serve.ClientStatus
	for _, c := range s.o.Clients.Clients() {
		if c.NodeID == req.GetNodeId() {
			found = &c
		}
	}
	if found == nil {
		return nil, status.Errorf(codes.NotFound, "no connected client with node ID %q", req.GetNodeId())
	}
	out := &admin.ClientDetail{Summary: s.client(*found, true)}
	for i := len(found.Nacks) - 1; i >= 0; i-- {
		out.Nacks = append(out.Nacks, nack(&found.Nacks[i]))
	}
	return out, nil
}

// ListSources lists the health of every watch.
func (s *Server) ListSources(context.Context, *admin.ListSourcesRequest) (*admin.ListSourcesResponse, error) {
	out := &admin.ListSourcesResponse{}
	for _, src := range s.o.Sources.Sources() {
		o := &admin.Source{Name: src.Name, State: string(src.State), Reason: src.Reason, Since: ts(src.Since), LastEvent: ts(src.LastEvent),
			LastBookmark: ts(src.LastBookmark), LastProbeOk: ts(src.LastProbeOK), LastProbeError: src.LastProbeError, Restarts: int32(src.Restarts)} //nolint:gosec // restarts of one process
		if src.State == resolver.Stale {
			o.StaleSince = ts(src.Since)
		}
		out.Sources = append(out.Sources, o)
	}
	return out, nil
}

func hold(h *cache.Hold) *admin.Hold {
	return &admin.Hold{Id: strconv.Itoa(h.ID), Since: ts(h.Since), Reason: h.Verdict.Reason, Withdrawn: int32(h.Verdict.Withdrawn), //nolint:gosec // endpoint counts are capped by --max-endpoints
		Fleet: int32(h.Verdict.Fleet), Services: slices.Clone(h.Verdict.Services)} //nolint:gosec // as above
}

// ListHolds lists the changes the guard holds.
func (s *Server) ListHolds(context.Context, *admin.ListHoldsRequest) (*admin.ListHoldsResponse, error) {
	out := &admin.ListHoldsResponse{}
	if h := s.o.Services.Held(); h != nil {
		out.Holds = append(out.Holds, hold(h))
	}
	return out, nil
}

// ReleaseHold applies a held change now.
func (s *Server) ReleaseHold(_ context.Context, req *admin.ReleaseHoldRequest) (*admin.ReleaseHoldResponse, error) {
	id, err := strconv.Atoi(req.GetId())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "hold ID %q is not a number", req.GetId())
	}
	h := s.o.Services.Held()
	if h == nil || h.ID != id {
		return nil, status.Errorf(codes.NotFound, "no hold %d", id)
	}
	if err := s.o.Services.Release(id); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	s.log.Warn("hold released by an operator", "decision", "operator_release", "subject", "hold "+req.GetId(), "withdrawn", h.Verdict.Withdrawn)
	return &admin.ReleaseHoldResponse{Released: hold(h)}, nil
}

// DecisionLog returns the latest decisions, newest first.
func (s *Server) DecisionLog(_ context.Context, req *admin.DecisionLogRequest) (*admin.DecisionLogResponse, error) {
	out := &admin.DecisionLogResponse{}
	for _, d := range s.o.Decisions.Latest(int(req.GetLimit()), req.GetKind()) {
		out.Decisions = append(out.Decisions, &admin.Decision{At: ts(d.At), Kind: d.Kind, Subject: d.Subject, Message: d.Message, Attrs: d.Attrs,
			Count: int32(min(d.Count, math.MaxInt32)), First: ts(d.First)}) //nolint:gosec // bounded on the line
	}
	return out, nil
}

// GetCapacity reports how full the bounded tables are.
func (s *Server) GetCapacity(context.Context, *admin.GetCapacityRequest) (*admin.Capacity, error) {
	c := s.o.Services.Capacity()
	open, limit := s.o.Clients.ClientCapacity()
	out := &admin.Capacity{Services: clamp(c.Services), MaxServices: clamp(c.MaxServices), Endpoints: clamp(c.Endpoints), MaxEndpoints: clamp(c.MaxEndpoints),
		Tombstones: clamp(c.Tombstones), MaxTombstones: clamp(c.MaxTombstones), Clients: clamp(open), MaxClients: clamp(limit)}
	for _, k := range c.Refused {
		out.Refused = append(out.Refused, k.String())
	}
	return out, nil
}

// clamp fits a count into the API's int32.
func clamp(n int) int32 { return int32(min(n, math.MaxInt32)) } //nolint:gosec // bounded on the line
