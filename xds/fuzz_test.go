package xds

import (
	"testing"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
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
		p, err := NewPublisher(PublisherOptions{Translator: testTranslator}, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.update(cache.View{Services: map[resolver.Key]*resolver.Service{s.Key: s}, Synced: true})
		sets, _ := p.assemble()
		for kind, set := range sets {
			if err := checkReferences(set.resources(), nil); err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			for _, rs := range set.resources() {
				for _, r := range rs {
					if err := r.(validator).ValidateAll(); err != nil {
						t.Fatalf("%s: published an invalid resource: %v", kind, err)
					}
				}
			}
		}
	})
}
