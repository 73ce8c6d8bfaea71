package translate

import (
	"net/netip"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
)

// FuzzTranslate translates arbitrary services: translation must never panic, and whatever it
// accepts must assemble into snapshots that are valid and closed under references.
func FuzzTranslate(f *testing.F) {
	f.Add("ns", "web", "http", int32(80), "", "10.0.0.1", int32(8080), "zone-a", true, false, false)
	f.Add("ns", "web", "grpc", int32(443), "kubernetes.io/h2c", "fd00::1", int32(1), "", false, true, true)
	f.Add("", "", "", int32(0), "", "", int32(0), "", true, true, true)
	f.Add("a.b", "UPPER", "x", int32(70000), "weird", "999.1.1.1", int32(-5), "z\x00", true, false, false)
	f.Fuzz(func(t *testing.T, ns, name, portName string, port int32, appProtocol, addr string, target int32, zone string, ready, serving, terminating bool) {
		s := &resolver.Service{
			Key: resolver.Key{Namespace: ns, Name: name},
			Ports: []resolver.Port{{Name: portName, Port: port, AppProtocol: appProtocol, Endpoints: []resolver.Endpoint{
				{Address: addr, Port: target, Ready: ready, Serving: serving, Terminating: terminating, Zone: zone},
			}}},
		}
		b := NewBuilder(testTranslator)
		b.update(xdstest.Services(s), &Result{})
		sets, _ := b.assemble()
		for kind, set := range sets {
			if err := checkReferences(plain(set), nil); err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			for _, rs := range plain(set) {
				for _, r := range rs {
					if err := r.(validator).ValidateAll(); err != nil {
						t.Fatalf("%s: published an invalid resource: %v", kind, err)
					}
				}
			}
		}
	})
}

// FuzzLocality orders arbitrary endpoints (zones, regions, hints, conditions) for an
// arbitrary client under every policy: each variant must be valid for Envoy and gRPC, hold
// exactly the base's endpoints, and put the client's own zone first when it has endpoints.
func FuzzLocality(f *testing.F) {
	f.Add([]byte{1, 1, 1, 2, 1, 1, 3, 2, 1}, uint8(1), uint8(1), uint8(0))
	f.Add([]byte{1, 0, 0x11, 2, 0, 0x21, 0, 0, 1}, uint8(2), uint8(0), uint8(1))
	f.Fuzz(func(t *testing.T, eps []byte, clientZone, clientRegion, mode uint8) {
		zones := []string{"", "a", "b", "c"}
		regions := []string{"", "r1", "r2"}
		modes := []string{"", resolver.LocalityZone, resolver.LocalityRegion, resolver.LocalityOff}
		s := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: "web"}, Locality: modes[int(mode)%len(modes)],
			Ports: []resolver.Port{{Name: "http", Port: 80}}}
		for i := 0; i+2 < len(eps) && i < 3*200; i += 3 {
			e := resolver.Endpoint{Address: netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i % 256)}).String(), Port: 8080,
				Zone: zones[int(eps[i])%len(zones)], Region: regions[int(eps[i+1])%len(regions)],
				Ready: eps[i+2]&1 != 0, Serving: eps[i+2]&2 != 0, Terminating: eps[i+2]&4 != 0}
			for z := range 3 {
				if eps[i+2]&(0x10<<z) != 0 {
					e.ForZones = append(e.ForZones, zones[z+1])
				}
			}
			s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, e)
		}
		res, err := NewBuilder(testTranslator).Build(xdstest.Services(s), nil)
		if err != nil {
			t.Fatal(err)
		}
		base := res.Set[resource.KindGRPC][resource.EndpointType][0]
		loc := resource.Locality{Zone: zones[int(clientZone)%len(zones)], Region: regions[int(clientRegion)%len(regions)]}
		got := base
		if base.Variants != nil {
			got = base.Variants.For(loc)
		}
		baseCLA := base.Msg.(*endpointv3.ClusterLoadAssignment)
		cla := got.Msg.(*endpointv3.ClusterLoadAssignment)
		if err := cla.ValidateAll(); err != nil {
			t.Fatal(err)
		}
		if err := checkGRPCAssignment(cla); err != nil {
			t.Fatal(err)
		}
		pr, basePr := xdstest.Priorities(cla), xdstest.Priorities(baseCLA)
		if len(pr) != len(basePr) {
			t.Fatalf("variant has %d endpoints, base %d", len(pr), len(basePr))
		}
		for addr := range basePr {
			if _, ok := pr[addr]; !ok {
				t.Fatalf("variant lost %s", addr)
			}
		}
		if s.Locality == resolver.LocalityOff && got != base {
			t.Fatal("a variant for a service with locality off")
		}
		hinted := true
		for _, e := range s.Ports[0].Endpoints {
			if e.Health() != resolver.Excluded {
				hinted = hinted && len(e.ForZones) > 0
			}
		}
		for _, e := range s.Ports[0].Endpoints {
			if e.Health() != resolver.Excluded && !hinted && loc.Zone != "" && e.Zone == loc.Zone && s.Locality != resolver.LocalityOff && pr[e.Address] != 0 {
				t.Fatalf("%s is in the client's zone %s but at priority %d", e.Address, loc.Zone, pr[e.Address])
			}
		}
	})
}
