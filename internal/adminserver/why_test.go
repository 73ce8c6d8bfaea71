package adminserver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/admin"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
	"github.com/holdfast/holdfast/xds/translate"
)

type fakeServices struct {
	st       cache.ServiceStatus
	hold     *cache.Hold
	capacity cache.CapacityStatus
}

func (f fakeServices) Services() []cache.ServiceStatus { return []cache.ServiceStatus{f.st} }
func (f fakeServices) Service(k resolver.Key) (cache.ServiceStatus, bool) {
	return f.st, k == f.st.Key
}
func (f fakeServices) Held() *cache.Hold { return f.hold }
func (f fakeServices) Release(int) error { return nil }
func (f fakeServices) Capacity() cache.CapacityStatus {
	return f.capacity
}

type fakeSources []resolver.SourceStatus

func (f fakeSources) Sources() []resolver.SourceStatus { return f }

type fakeClients struct {
	clients     []serve.ClientStatus
	snap        *serve.Snapshot
	open, limit int
}

func (f fakeClients) Clients() []serve.ClientStatus          { return f.clients }
func (f fakeClients) Snapshot(resource.Kind) *serve.Snapshot { return f.snap }
func (f fakeClients) ClientCapacity() (int, int)             { return f.open, f.limit }

// assignment is a ClusterLoadAssignment named name with one endpoint per zone, the zones at
// priorities 0, 1, ... in order.
func assignment(name string, zones ...string) *resource.Resource {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for i, z := range zones {
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: z}, Priority: uint32(i), //nolint:gosec // a few zones
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: translate.SocketAddress("10.0.0."+string(rune('1'+i)), 8080)}}}}})
	}
	return resource.New(cla)
}

// TestWhyCauses: each cause the end-to-end scene does not stage (TestWhy stages the others),
// from the state that gives it.
func TestWhyCauses(t *testing.T) {
	naming := translate.Naming{Domain: "cluster.local"}
	k := resolver.Key{Namespace: "shop", Name: "cart"}
	svc := &resolver.Service{Key: k, UID: "u1", Ports: []resolver.Port{{Port: 80}}}
	up := naming.Upstream(k, svc.UID, 80)
	node := &corev3.Node{Id: "app-1", Locality: &corev3.Locality{Zone: "zone-b"}}
	live := cache.ServiceStatus{Key: k, Service: svc, State: cache.StateLive}
	since := time.Now().Add(-time.Minute)
	client := func(types map[resourcev3.Type]serve.TypeStatus) []serve.ClientStatus {
		return []serve.ClientStatus{{NodeID: "app-1", Node: node, Kind: resource.KindGRPC, Flavour: "sotw", Since: since, Types: types}}
	}
	acked := func(versions map[resourcev3.Type]string) map[resourcev3.Type]serve.TypeStatus {
		out := map[resourcev3.Type]serve.TypeStatus{}
		names := map[resourcev3.Type]string{resourcev3.ListenerType: naming.Resource(k, 80), resourcev3.RouteType: up, resourcev3.ClusterType: up, resourcev3.EndpointType: up}
		for typ, n := range names {
			out[typ] = serve.TypeStatus{Names: []string{n}, Sent: map[string]string{n: versions[typ]}}
		}
		return out
	}
	two := assignment(up, "zone-b", "zone-a")
	snapWith := func(r *resource.Resource) *serve.Snapshot {
		var s *serve.Snapshot
		if r != nil {
			s = s.WithType(resourcev3.EndpointType, []*resource.Resource{r})
		}
		return s.WithType(resourcev3.ListenerType, nil)
	}
	for _, tt := range []struct {
		name    string
		st      cache.ServiceStatus
		sources fakeSources
		clients []serve.ClientStatus
		snap    *serve.Snapshot
		decided []Record
		cause   string
		detail  string
		quoted  string // a decision kind quoted under the reason
	}{
		{name: "tombstone", st: cache.ServiceStatus{Key: k, Service: svc, State: cache.StateDeleted}, snap: snapWith(two),
			decided: []Record{{Kind: "service_deleted", Subject: "shop/cart", Message: "deleted"}}, cause: causeTombstone, detail: "tombstone grace", quoted: "service_deleted"},
		{name: "refused", st: cache.ServiceStatus{Key: k, State: cache.StateRefused, Reason: "new service over a capacity limit"},
			decided: []Record{{Kind: "capacity_refused", Subject: "capacity", Message: "refused"}}, cause: causeRefused, detail: "capacity limit", quoted: "capacity_refused"},
		{name: "restored", st: cache.ServiceStatus{Key: k, Service: svc, State: cache.StateRestored}, snap: snapWith(two),
			decided: []Record{{Kind: "state_restored", Subject: "/var/lib/holdfast/state", Message: "restored"}}, cause: causeRestored, detail: "state file", quoted: "state_restored"},
		{name: "syncing source", st: live, sources: fakeSources{{Name: "shop", State: resolver.Syncing, Since: since}}, snap: snapWith(two),
			cause: causeSourceSyncing, detail: "namespace shop"},
		{name: "locality", st: live, clients: client(acked(map[resourcev3.Type]string{resourcev3.EndpointType: two.Version})), snap: snapWith(two),
			cause: causeLocality, detail: `zone "zone-b"`},
		{name: "no endpoints", st: live, clients: client(acked(nil)), snap: snapWith(assignment(up)), cause: causeNoEndpoints, detail: "fail fast"},
		{name: "in flight", st: live, clients: client(map[resourcev3.Type]serve.TypeStatus{resourcev3.EndpointType: {Names: []string{up}, InFlight: true,
			Sent: map[string]string{}, InFlightResources: map[string]string{up: two.Version}}}), snap: snapWith(two), cause: causeInFlight, detail: "not answered yet"},
		{name: "queued", st: live, clients: client(acked(map[resourcev3.Type]string{resourcev3.EndpointType: "0ld"})), snap: snapWith(two),
			cause: causeInFlight, detail: "is queued"},
		{name: "does not exist", st: live, clients: client(acked(nil)), snap: snapWith(nil), cause: causeDoesNotExist, detail: "does not exist"},
		{name: "not subscribed", st: live, clients: client(map[resourcev3.Type]serve.TypeStatus{}), snap: snapWith(two), cause: causeNotSubscribed, detail: "has not subscribed"},
		{name: "not connected", st: live, snap: snapWith(two), decided: []Record{{Kind: "client_slow", Subject: "app-1", Message: "disconnected"}},
			cause: causeNotConnected, detail: "no stream", quoted: "client_slow"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDecisions(10)
			for _, r := range tt.decided {
				r.At, r.Count = time.Now(), 1
				d.add(r)
			}
			s := NewServer(Options{Services: fakeServices{st: tt.st}, Sources: tt.sources, Clients: fakeClients{clients: tt.clients, snap: tt.snap},
				Naming: naming, Decisions: d})
			r, err := s.Why(context.Background(), &admin.WhyRequest{NodeId: "app-1", Service: "shop/cart"})
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(r.GetReasons(), func(w *admin.WhyReason) bool { return w.GetCause() == tt.cause })
			if i < 0 {
				var got []string
				for _, w := range r.GetReasons() {
					got = append(got, w.GetCause()+": "+w.GetDetail())
				}
				t.Fatalf("causes %q, want %s", got, tt.cause)
			}
			why := r.GetReasons()[i]
			if !strings.Contains(why.GetDetail(), tt.detail) {
				t.Errorf("%q does not say %q", why.GetDetail(), tt.detail)
			}
			if tt.quoted != "" && !slices.ContainsFunc(why.GetDecisions(), func(d *admin.Decision) bool { return d.GetKind() == tt.quoted }) {
				t.Errorf("decisions %v do not quote %s", why.GetDecisions(), tt.quoted)
			}
		})
	}
}

// TestWhyRefusesBadRequests: a malformed service, no node ID, an unknown service or port.
func TestWhyRefusesBadRequests(t *testing.T) {
	k := resolver.Key{Namespace: "shop", Name: "cart"}
	svc := &resolver.Service{Key: k, UID: "u1", Ports: []resolver.Port{{Port: 80}}}
	s := NewServer(Options{Services: fakeServices{st: cache.ServiceStatus{Key: k, Service: svc, State: cache.StateLive}}, Sources: fakeSources{},
		Clients: fakeClients{}, Naming: translate.Naming{Domain: "cluster.local"}})
	for _, tt := range []struct {
		req  *admin.WhyRequest
		code codes.Code
	}{
		{&admin.WhyRequest{NodeId: "a", Service: "cart"}, codes.InvalidArgument},
		{&admin.WhyRequest{NodeId: "a", Service: "/cart"}, codes.InvalidArgument},
		{&admin.WhyRequest{Service: "shop/cart"}, codes.InvalidArgument},
		{&admin.WhyRequest{NodeId: "a", Service: "shop/other"}, codes.NotFound},
		{&admin.WhyRequest{NodeId: "a", Service: "shop/cart", Port: 81}, codes.NotFound},
	} {
		if _, err := s.Why(context.Background(), tt.req); status.Code(err) != tt.code {
			t.Errorf("Why(%v) = %v, want %v", tt.req, err, tt.code)
		}
	}
}

func TestGetCapacity(t *testing.T) {
	s := NewServer(Options{
		Services: fakeServices{capacity: cache.CapacityStatus{Services: 3, MaxServices: 4, Endpoints: 30, MaxEndpoints: 40, Tombstones: 1, MaxTombstones: 10,
			Refused: []resolver.Key{{Namespace: "ns", Name: "big"}, {Namespace: "ns", Name: "web", ClusterSet: true}}}},
		Clients: fakeClients{open: 7, limit: 9}, Sources: fakeSources{}, Decisions: NewDecisions(10),
	})
	got, err := s.GetCapacity(context.Background(), &admin.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &admin.Capacity{Services: 3, MaxServices: 4, Endpoints: 30, MaxEndpoints: 40, Tombstones: 1, MaxTombstones: 10,
		Refused: []string{"ns/big", "ns/web@clusterset.local"}, Clients: 7, MaxClients: 9}
	if !proto.Equal(got, want) {
		t.Errorf("GetCapacity = %v, want %v", got, want)
	}
}
