package serve

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"
)

// Clients in different zones whose view of a service is the same share one resource; a
// change builds a new variant index that records only what changed, and a service whose
// endpoints did not change keeps its variant resource.
func TestLocalityVariantsShared(t *testing.T) {
	b := translate.NewBuilder(testTranslator)
	web, api := xdstest.ZonedService("web", nil), xdstest.ZonedService("api", nil)
	index := func(prev *typeIndex, services ...*resolver.Service) *typeIndex {
		res, err := b.Build(testView(services...).Services, nil)
		if err != nil {
			t.Fatal(err)
		}
		idx := newTypeIndex(res.Set[resource.KindGRPC][resourcev3.EndpointType])
		if prev != nil {
			idx.since(prev)
		}
		idx.localize(prev)
		return idx
	}
	first := index(nil, web, api)
	atA := first.at(resource.Locality{Region: "r1", Zone: "a"})
	// Zone x (no endpoints) and no zone in r1 see the same: one index.
	if first.at(resource.Locality{Region: "r1", Zone: "x"}) != first.at(resource.Locality{Region: "r1", Zone: ""}) {
		t.Error("two localities with the same view got two indexes")
	}
	webName, apiName := testTranslator.Naming.Resource(web.Key, 80), testTranslator.Naming.Resource(api.Key, 80)
	// Move one of web's zone-a endpoints to zone b.
	moved := xdstest.ZonedService("web", func(s *resolver.Service) { s.Ports[0].Endpoints[1].Zone = "b" })
	second := index(first, moved, api)
	atA2 := second.at(resource.Locality{Region: "r1", Zone: "a"})
	if atA2 == atA {
		t.Fatal("a change kept the old variant index")
	}
	if !slices.Equal(atA2.changed, []string{webName}) || atA2.base.Value() != atA {
		t.Errorf("variant index records %v changed since %p, want [%s] since %p", atA2.changed, atA2.base.Value(), webName, atA)
	}
	if atA2.byName[apiName] != atA.byName[apiName] {
		t.Error("an unchanged service's variant was built again")
	}
	if pr := xdstest.Priorities(atA2.byName[webName].Msg.(*endpointv3.ClusterLoadAssignment)); !maps.Equal(pr, map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 1, "10.0.0.4": 2}) {
		t.Errorf("after the move: %v", pr)
	}
}

// Two gRPC clients in zones a and b, on one server, each get their own priorities for the
// same resource name; a client without locality gets one priority.
func TestLocalityPerClient(t *testing.T) {
	_, conn, publish := testServer(t)
	web := xdstest.ZonedService("web", nil)
	publish(testView(web))
	name := testTranslator.Naming.Resource(web.Key, 80)
	fetch := func(loc *corev3.Locality) map[string]uint32 {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		node := &corev3.Node{Id: "n-" + loc.GetZone(), UserAgentName: "gRPC Go", Locality: loc}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: []string{name}}); err != nil {
			t.Fatal(err)
		}
		r := recvWithin(t, responses(st.Recv), 5*time.Second)
		if r == nil || len((*r).Resources) != 1 {
			t.Fatalf("EDS for %v: %v", loc, r)
		}
		var cla endpointv3.ClusterLoadAssignment
		if err := (*r).Resources[0].UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		return xdstest.Priorities(&cla)
	}
	for _, tt := range []struct {
		loc  *corev3.Locality
		want map[string]uint32
	}{
		{&corev3.Locality{Region: "r1", Zone: "a"}, map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 0, "10.0.0.3": 1, "10.0.0.4": 2}},
		{&corev3.Locality{Region: "r1", Zone: "b"}, map[string]uint32{"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 0, "10.0.0.4": 2}},
		{nil, map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 0, "10.0.0.3": 0, "10.0.0.4": 0}},
	} {
		if got := fetch(tt.loc); !maps.Equal(got, tt.want) {
			t.Errorf("client at %v: %v, want %v", tt.loc, got, tt.want)
		}
	}
}

// TestLocalityClusterNamesBounded: a client's cluster (node metadata holdfast.io/cluster) only
// matters when some endpoint is in it. Clients naming any number of other clusters share the
// index of a client naming none, so a client cannot make Holdfast build and keep variants by
// inventing cluster IDs; a client in a cluster the endpoints are in gets its own order.
func TestLocalityClusterNamesBounded(t *testing.T) {
	web := xdstest.ZonedService("web", func(s *resolver.Service) {
		s.ClusterSet = true
		eps := s.Ports[0].Endpoints
		eps[0].Cluster, eps[1].Cluster, eps[2].Cluster, eps[3].Cluster = "k1", "k1", "k2", "k3"
	})
	res, err := translate.NewBuilder(testTranslator).Build(testView(web).Services, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := newTypeIndex(res.Set[resource.KindGRPC][resourcev3.EndpointType])
	idx.localize(nil)
	none := idx.at(resource.Locality{Region: "r1", Zone: "a"})
	for i := range 5000 {
		if got := idx.at(resource.Locality{Region: "r1", Zone: "a", Cluster: fmt.Sprintf("invented-%d", i)}); got != none {
			t.Fatalf("cluster invented-%d got an index of its own", i)
		}
	}
	if n := len(idx.local.byLoc); n != 1 {
		t.Errorf("%d variant indexes kept after 5,000 invented cluster IDs, want 1", n)
	}
	k2 := idx.at(resource.Locality{Region: "r1", Zone: "a", Cluster: "k2"})
	if k2 == none {
		t.Fatal("a client in cluster k2 shares the index of one that names no cluster")
	}
	name := testTranslator.Naming.Resource(web.Key, 80)
	if pr := xdstest.Priorities(k2.byName[name].Msg.(*endpointv3.ClusterLoadAssignment)); !maps.Equal(pr, map[string]uint32{"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 0, "10.0.0.4": 2}) {
		t.Errorf("a client in k2, zone a: %v; want its own cluster first, then the region's other cluster", pr)
	}
}
