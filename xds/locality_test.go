package xds

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/resolver"
)

// zonedService has two endpoints in zone a and one in b (region r1), one in c (region r2).
func zonedService(name string, edit func(*resolver.Service)) *resolver.Service {
	s := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: name}, Ports: []resolver.Port{{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{
		{Address: "10.0.0.1", Port: 8080, Ready: true, Zone: "a", Region: "r1"},
		{Address: "10.0.0.2", Port: 8080, Ready: true, Zone: "a", Region: "r1"},
		{Address: "10.0.0.3", Port: 8080, Ready: true, Zone: "b", Region: "r1"},
		{Address: "10.0.0.4", Port: 8080, Ready: true, Zone: "c", Region: "r2"},
	}}}}
	if edit != nil {
		edit(s)
	}
	return s
}

// priorities maps each endpoint address of an assignment to its priority.
func priorities(cla *endpointv3.ClusterLoadAssignment) map[string]uint32 {
	out := map[string]uint32{}
	for _, le := range cla.GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			out[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = le.GetPriority()
		}
	}
	return out
}

func TestLocalityPriorities(t *testing.T) {
	const a1, a2, b1, c1 = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
	hints := func(s *resolver.Service) {
		eps := s.Ports[0].Endpoints
		eps[0].ForZones, eps[1].ForZones = []string{"a"}, []string{"a"}
		eps[2].ForZones, eps[3].ForZones = []string{"b", "c"}, []string{"c"}
	}
	annotate := func(v string) func(*resolver.Service) { return func(s *resolver.Service) { s.Locality = v } }
	tests := []struct {
		name       string
		defaultPol string
		edit       func(*resolver.Service)
		client     Locality
		want       map[string]uint32 // nil: the base (all at 0), shared with clients without locality
	}{
		{"own zone, own region, the rest", "", nil, Locality{"r1", "a"}, map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"zone b", "", nil, Locality{"r1", "b"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 2}},
		{"zone c: nothing else in r2, so two priorities", "", nil, Locality{"r2", "c"}, map[string]uint32{a1: 1, a2: 1, b1: 1, c1: 0}},
		{"a zone without endpoints: own region first", "", nil, Locality{"r1", "x"}, map[string]uint32{a1: 0, a2: 0, b1: 0, c1: 1}},
		{"a zone but no region", "", nil, Locality{"", "b"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 1}},
		{"no locality: one priority", "", nil, Locality{}, nil},
		{"somewhere no endpoint is: one priority", "", nil, Locality{"r9", "z9"}, nil},
		{"zone policy ignores regions", "", annotate(resolver.LocalityZone), Locality{"r1", "a"}, map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 1}},
		{"zone policy, a zone without endpoints", "", annotate(resolver.LocalityZone), Locality{"r1", "x"}, nil},
		{"off", "", annotate(resolver.LocalityOff), Locality{"r1", "a"}, nil},
		{"default off", resolver.LocalityOff, nil, Locality{"r1", "a"}, nil},
		{"default off, PreferClose asks", resolver.LocalityOff, func(s *resolver.Service) { s.TrafficDistribution = "PreferClose" }, Locality{"r1", "a"},
			map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"default off, the annotation wins over PreferClose", resolver.LocalityOff, func(s *resolver.Service) {
			s.TrafficDistribution, s.Locality = "PreferClose", resolver.LocalityOff
		}, Locality{"r1", "a"}, nil},
		{"hints name the consuming zones", "", hints, Locality{"r2", "c"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 0}},
		{"hints: zone b", "", hints, Locality{"r1", "b"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 2}},
		{"hints on some endpoints only: zones", "", func(s *resolver.Service) { s.Ports[0].Endpoints[3].ForZones = []string{"a"} }, Locality{"r1", "a"},
			map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"no zone or region on any endpoint", "", func(s *resolver.Service) {
			for i := range s.Ports[0].Endpoints {
				s.Ports[0].Endpoints[i].Zone, s.Ports[0].Endpoints[i].Region = "", ""
			}
		}, Locality{"r1", "a"}, nil},
		{"endpoints without zone go last", "", func(s *resolver.Service) {
			s.Ports[0].Endpoints[3].Zone, s.Ports[0].Endpoints[3].Region = "", ""
		}, Locality{"r1", "a"}, map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"not ready endpoints are left out of every priority", "", func(s *resolver.Service) { s.Ports[0].Endpoints[0].Ready = false }, Locality{"r1", "a"},
			map[string]uint32{a2: 0, b1: 1, c1: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := testTranslator
			tr.LocalityDefault = tt.defaultPol
			p, err := NewPublisher(PublisherOptions{Translator: tr}, nil)
			if err != nil {
				t.Fatal(err)
			}
			svc := zonedService("web", tt.edit)
			sets, err := p.build(testView(svc))
			if err != nil {
				t.Fatal(err)
			}
			base := newTypeIndex(sets[KindGRPC][resourcev3.EndpointType])
			base.localize(nil)
			name := tr.Naming.Resource(svc.Key, 80)
			got := base.at(tt.client)
			r := got.byName[name]
			if tt.want == nil {
				if got != base {
					t.Fatalf("got a variant %v, want the base", priorities(r.Msg.(*endpointv3.ClusterLoadAssignment)))
				}
				return
			}
			cla := r.Msg.(*endpointv3.ClusterLoadAssignment)
			if pr := priorities(cla); !maps.Equal(pr, tt.want) {
				t.Errorf("priorities %v, want %v", pr, tt.want)
			}
			if err := cla.ValidateAll(); err != nil {
				t.Error(err)
			}
			if err := checkGRPCAssignment(cla); err != nil {
				t.Error(err)
			}
			if got.version == base.version || r.Version == base.byName[name].Version {
				t.Error("a variant has the base's version")
			}
			// Built once: the same locality, or another with the same view, shares it.
			if again := base.at(tt.client); again != got {
				t.Error("the variant index was built twice")
			}
		})
	}
}

// Clients in different zones whose view of a service is the same share one resource; a
// change builds a new variant index that records only what changed, and a service whose
// endpoints did not change keeps its variant resource.
func TestLocalityVariantsShared(t *testing.T) {
	p, err := NewPublisher(PublisherOptions{Translator: testTranslator}, nil)
	if err != nil {
		t.Fatal(err)
	}
	web, api := zonedService("web", nil), zonedService("api", nil)
	index := func(prev *typeIndex, v ...*resolver.Service) *typeIndex {
		sets, err := p.build(testView(v...))
		if err != nil {
			t.Fatal(err)
		}
		idx := newTypeIndex(sets[KindGRPC][resourcev3.EndpointType])
		if prev != nil {
			idx.since(prev)
		}
		idx.localize(prev)
		return idx
	}
	first := index(nil, web, api)
	atA := first.at(Locality{"r1", "a"})
	// Zone x (no endpoints) and no zone in r1 see the same: one index.
	if first.at(Locality{"r1", "x"}) != first.at(Locality{"r1", ""}) {
		t.Error("two localities with the same view got two indexes")
	}
	webName, apiName := testTranslator.Naming.Resource(web.Key, 80), testTranslator.Naming.Resource(api.Key, 80)
	// Move one of web's zone-a endpoints to zone b.
	moved := zonedService("web", func(s *resolver.Service) { s.Ports[0].Endpoints[1].Zone = "b" })
	second := index(first, moved, api)
	atA2 := second.at(Locality{"r1", "a"})
	if atA2 == atA {
		t.Fatal("a change kept the old variant index")
	}
	if !slices.Equal(atA2.changed, []string{webName}) || atA2.base.Value() != atA {
		t.Errorf("variant index records %v changed since %p, want [%s] since %p", atA2.changed, atA2.base.Value(), webName, atA)
	}
	if atA2.byName[apiName] != atA.byName[apiName] {
		t.Error("an unchanged service's variant was built again")
	}
	if pr := priorities(atA2.byName[webName].Msg.(*endpointv3.ClusterLoadAssignment)); !maps.Equal(pr, map[string]uint32{"10.0.0.1": 0, "10.0.0.2": 1, "10.0.0.3": 1, "10.0.0.4": 2}) {
		t.Errorf("after the move: %v", pr)
	}
}

// Two gRPC clients in zones a and b, on one server, each get their own priorities for the
// same resource name; a client without locality gets one priority.
func TestLocalityPerClient(t *testing.T) {
	_, conn, publish := testServer(t)
	web := zonedService("web", nil)
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
		return priorities(&cla)
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
