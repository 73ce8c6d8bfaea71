package translate

import (
	"maps"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
)

func TestLocalityPriorities(t *testing.T) {
	const a1, a2, b1, c1 = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"
	hints := func(s *resolver.Service) {
		eps := s.Ports[0].Endpoints
		eps[0].ForZones, eps[1].ForZones = []string{"a"}, []string{"a"}
		eps[2].ForZones, eps[3].ForZones = []string{"b", "c"}, []string{"c"}
	}
	annotate := func(v string) func(*resolver.Service) { return func(s *resolver.Service) { s.Locality = v } }
	// A cluster-set service: a1 and a2 in cluster k1, b1 in k2 (the same region, r1), c1 in k3 (r2).
	clusters := func(s *resolver.Service) {
		s.ClusterSet = true
		eps := s.Ports[0].Endpoints
		eps[0].Cluster, eps[1].Cluster, eps[2].Cluster, eps[3].Cluster = "k1", "k1", "k2", "k3"
	}
	both := func(edits ...func(*resolver.Service)) func(*resolver.Service) {
		return func(s *resolver.Service) {
			for _, e := range edits {
				e(s)
			}
		}
	}
	tests := []struct {
		name       string
		defaultPol string
		edit       func(*resolver.Service)
		client     resource.Locality
		want       map[string]uint32 // nil: the base (all at 0), shared with clients without locality
	}{
		{"own zone, own region, the rest", "", nil, resource.Locality{Region: "r1", Zone: "a"}, map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"zone b", "", nil, resource.Locality{Region: "r1", Zone: "b"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 2}},
		{"zone c: nothing else in r2, so two priorities", "", nil, resource.Locality{Region: "r2", Zone: "c"}, map[string]uint32{a1: 1, a2: 1, b1: 1, c1: 0}},
		{"a zone without endpoints: own region first", "", nil, resource.Locality{Region: "r1", Zone: "x"}, map[string]uint32{a1: 0, a2: 0, b1: 0, c1: 1}},
		{"a zone but no region", "", nil, resource.Locality{Region: "", Zone: "b"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 1}},
		{"no locality: one priority", "", nil, resource.Locality{}, nil},
		{"somewhere no endpoint is: one priority", "", nil, resource.Locality{Region: "r9", Zone: "z9"}, nil},
		{"zone policy ignores regions", "", annotate(resolver.LocalityZone), resource.Locality{Region: "r1", Zone: "a"}, map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 1}},
		{"zone policy, a zone without endpoints", "", annotate(resolver.LocalityZone), resource.Locality{Region: "r1", Zone: "x"}, nil},
		{"off", "", annotate(resolver.LocalityOff), resource.Locality{Region: "r1", Zone: "a"}, nil},
		{"default off", resolver.LocalityOff, nil, resource.Locality{Region: "r1", Zone: "a"}, nil},
		{"default off, PreferClose asks", resolver.LocalityOff, func(s *resolver.Service) { s.TrafficDistribution = "PreferClose" }, resource.Locality{Region: "r1", Zone: "a"},
			map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"default off, the annotation wins over PreferClose", resolver.LocalityOff, func(s *resolver.Service) {
			s.TrafficDistribution, s.Locality = "PreferClose", resolver.LocalityOff
		}, resource.Locality{Region: "r1", Zone: "a"}, nil},
		{"hints name the consuming zones", "", hints, resource.Locality{Region: "r2", Zone: "c"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 0}},
		{"hints: zone b", "", hints, resource.Locality{Region: "r1", Zone: "b"}, map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 2}},
		{"hints on some endpoints only: zones", "", func(s *resolver.Service) { s.Ports[0].Endpoints[3].ForZones = []string{"a"} }, resource.Locality{Region: "r1", Zone: "a"},
			map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"no zone or region on any endpoint", "", func(s *resolver.Service) {
			for i := range s.Ports[0].Endpoints {
				s.Ports[0].Endpoints[i].Zone, s.Ports[0].Endpoints[i].Region = "", ""
			}
		}, resource.Locality{Region: "r1", Zone: "a"}, nil},
		{"endpoints without zone go last", "", func(s *resolver.Service) {
			s.Ports[0].Endpoints[3].Zone, s.Ports[0].Endpoints[3].Region = "", ""
		}, resource.Locality{Region: "r1", Zone: "a"}, map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"clusters: own cluster and zone, another cluster in the region, the rest", "", clusters, resource.Locality{Region: "r1", Zone: "a", Cluster: "k1"},
			map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"clusters: own cluster before another cluster's endpoints in the client's zone", "", clusters, resource.Locality{Region: "r1", Zone: "a", Cluster: "k2"},
			map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 2}},
		{"clusters: own cluster, other zone, before the region's other clusters", "", clusters, resource.Locality{Region: "r1", Zone: "x", Cluster: "k1"},
			map[string]uint32{a1: 0, a2: 0, b1: 1, c1: 2}},
		{"clusters: another region's client, its own cluster first", "", clusters, resource.Locality{Region: "r2", Zone: "c", Cluster: "k3"},
			map[string]uint32{a1: 1, a2: 1, b1: 1, c1: 0}},
		{"clusters: a client that does not say its cluster is ordered by zone and region", "", clusters, resource.Locality{Region: "r1", Zone: "b"},
			map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 2}},
		{"clusters: a cluster no endpoint is in counts as not saying", "", clusters, resource.Locality{Region: "r1", Zone: "b", Cluster: "k9"},
			map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 2}},
		{"clusters with the policy off: own cluster first all the same", "", both(clusters, annotate(resolver.LocalityOff)), resource.Locality{Region: "r1", Zone: "a", Cluster: "k2"},
			map[string]uint32{a1: 1, a2: 1, b1: 0, c1: 1}},
		{"clusters with the policy off, no cluster said: one priority", "", both(clusters, annotate(resolver.LocalityOff)), resource.Locality{Region: "r1", Zone: "a"}, nil},
		{"not ready endpoints are left out of every priority", "", func(s *resolver.Service) { s.Ports[0].Endpoints[0].Ready = false }, resource.Locality{Region: "r1", Zone: "a"},
			map[string]uint32{a2: 0, b1: 1, c1: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := testTranslator
			tr.LocalityDefault = tt.defaultPol
			svc := xdstest.ZonedService("web", tt.edit)
			res, err := NewBuilder(tr).Build(xdstest.Services(svc), nil)
			if err != nil {
				t.Fatal(err)
			}
			base := res.Set[resource.KindGRPC][resource.EndpointType][0]
			r := base
			if base.Variants != nil {
				r = base.Variants.For(tt.client)
			}
			if tt.want == nil {
				if r != base {
					t.Fatalf("got a variant %v, want the base", xdstest.Priorities(r.Msg.(*endpointv3.ClusterLoadAssignment)))
				}
				return
			}
			cla := r.Msg.(*endpointv3.ClusterLoadAssignment)
			if pr := xdstest.Priorities(cla); !maps.Equal(pr, tt.want) {
				t.Errorf("priorities %v, want %v", pr, tt.want)
			}
			if err := cla.ValidateAll(); err != nil {
				t.Error(err)
			}
			if err := checkGRPCAssignment(cla); err != nil {
				t.Error(err)
			}
			if r.Version == base.Version {
				t.Error("a variant has the base's version")
			}
			// Built once: the same locality, or another with the same view, shares it.
			if again := base.Variants.For(tt.client); again != r {
				t.Error("the variant was built twice")
			}
		})
	}
}
