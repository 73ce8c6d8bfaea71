package resolver

import (
	"encoding/json"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// fuzzNodes knows one Node, so that the fuzzer reaches the zone and region fallbacks.
func fuzzNodes(name string) (string, string, bool) {
	if name == "n1" {
		return "zone-n", "region-n", true
	}
	return "", "", false
}

// FuzzBuildService feeds arbitrary Service and EndpointSlice objects (as the API would send
// them, JSON) to the merge: it must never panic, and what it emits must be routable.
func FuzzBuildService(f *testing.F) {
	f.Add([]byte(`{"metadata":{"namespace":"ns","name":"web"},"spec":{"ports":[{"name":"http","port":80}]}}`),
		[]byte(`{"addressType":"IPv4","ports":[{"name":"http","port":8080}],"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true}}]}`))
	f.Add([]byte(`{"metadata":{"annotations":{"holdfast.io/locality":"zone"}},"spec":{"trafficDistribution":"PreferClose","ports":[{"port":80}]}}`),
		[]byte(`{"addressType":"IPv4","ports":[{"port":80}],"endpoints":[{"addresses":["10.0.0.1"],"nodeName":"n1","hints":{"forZones":[{"name":"b"},{"name":""}]}}]}`))
	f.Add([]byte(`{"spec":{"type":"ExternalName","ports":[{"port":80}]}}`), []byte(`{}`))
	f.Add([]byte(`{"spec":{"ports":[{"port":70000},{"name":"a","port":1,"protocol":"UDP"}]}}`),
		[]byte(`{"addressType":"IPv6","ports":[{"port":-1}],"endpoints":[{"addresses":["::1","fe80::1%eth0","10.0.0.1"]}]}`))
	f.Add([]byte(`{"spec":{"ports":[{"port":80}]}}`),
		[]byte(`{"addressType":"FQDN","ports":[{"port":80}],"endpoints":[{"addresses":["a.example"]},{"addresses":[]}]}`))
	f.Fuzz(func(t *testing.T, svcJSON, sliceJSON []byte) {
		var svc corev1.Service
		var slice discoveryv1.EndpointSlice
		if json.Unmarshal(svcJSON, &svc) != nil || json.Unmarshal(sliceJSON, &slice) != nil {
			return
		}
		got, rejections := buildService(&svc, []*discoveryv1.EndpointSlice{&slice, &slice}, fuzzNodes)
		for _, r := range rejections {
			if r.Reason == "" || r.Kind == "" {
				t.Fatalf("rejection without a reason: %+v", r)
			}
		}
		if got == nil {
			return
		}
		switch got.Locality {
		case "", LocalityOff, LocalityZone, LocalityRegion:
		default:
			t.Fatalf("locality %q passed through", got.Locality)
		}
		for _, p := range got.Ports {
			if p.Port <= 0 || p.Port > 65535 {
				t.Fatalf("port %d out of range", p.Port)
			}
			var prev netip.AddrPort
			for i, e := range p.Endpoints {
				a, err := netip.ParseAddr(e.Address)
				if err != nil || e.Port <= 0 || e.Port > 65535 {
					t.Fatalf("unroutable endpoint %+v", e)
				}
				if slices.Contains(e.ForZones, "") || !slices.IsSorted(e.ForZones) {
					t.Fatalf("hint zones %q", e.ForZones)
				}
				ap := netip.AddrPortFrom(a, uint16(e.Port))
				if i > 0 && prev.Compare(ap) >= 0 {
					t.Fatalf("endpoints not sorted and unique: %v then %v", prev, ap)
				}
				prev = ap
			}
		}
	})
}
