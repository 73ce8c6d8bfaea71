package xds

import (
	"fmt"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/fleet"
	"github.com/holdfast/holdfast/resolver"
)

func benchFleet(n, per int) cache.View {
	return cache.View{Services: fleet.New(n, per), Synced: true}
}

// BenchmarkFirstPublish10kServices translates, validates, reference-checks and versions
// 10,000 services / 100,000 endpoints from scratch: the "serve" half of restore-and-serve.
func BenchmarkFirstPublish10kServices(b *testing.B) {
	v := benchFleet(10000, 10)
	for b.Loop() {
		p, err := NewPublisher(PublisherOptions{Translator: testTranslator}, nil)
		if err != nil {
			b.Fatal(err)
		}
		sets, err := p.build(v)
		if err != nil {
			b.Fatal(err)
		}
		for _, set := range sets {
			for _, l := range set {
				_ = l.version()
			}
		}
	}
}

// BenchmarkOneChangePublish10kServices publishes one endpoint change among 10,000 services:
// only that service is translated again; everything else is reused, hashes included.
func BenchmarkOneChangePublish10kServices(b *testing.B) {
	v := benchFleet(10000, 10)
	p, err := NewPublisher(PublisherOptions{Translator: testTranslator}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p.update(v)
	k := fleet.Key(7)
	orig := v.Services[k]
	i := 0
	for b.Loop() {
		next := *orig
		next.Ports = []resolver.Port{orig.Ports[0]}
		next.Ports[0].Endpoints = orig.Ports[0].Endpoints[:1+i%9]
		i++
		v.Services[k] = &next
		sets, err := p.build(v)
		if err != nil {
			b.Fatal(err)
		}
		for _, set := range sets {
			for _, l := range set {
				_ = l.version()
			}
		}
	}
}

// BenchmarkDecodeSotWRequest decodes an Envoy's EDS request for 1,000 clusters: "first" names
// them for the first time (each looked up in the index), "ack" repeats them (as every ACK
// does), "unknown" names clusters Holdfast does not have (each copied).
func BenchmarkDecodeSotWRequest(b *testing.B) {
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:80", i, i%50)
	}
	slices.Sort(names)
	idx := namesIndex(names...)
	wire, err := proto.Marshal(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, VersionInfo: "0123456789abcdef",
		ResponseNonce: "42", ResourceNames: names})
	if err != nil {
		b.Fatal(err)
	}
	known := func(string) *typeIndex { return idx }
	for _, c := range []struct {
		name  string
		known func(string) *typeIndex
		again bool
	}{
		{"first", known, false},
		{"ack", known, true},
		{"unknown", nil, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			previous := newPreviousNames()
			if c.again {
				if err := unmarshalDiscoveryRequest(wire, &sotwRequest{req: new(discoveryv3.DiscoveryRequest), previous: previous}); err != nil {
					b.Fatal(err)
				}
			}
			for b.Loop() {
				if !c.again {
					clear(previous.byType)
				}
				r := &sotwRequest{req: new(discoveryv3.DiscoveryRequest), known: c.known, previous: previous}
				if err := unmarshalDiscoveryRequest(wire, r); err != nil || r.repeated != c.again {
					b.Fatalf("repeated %v, %v", r.repeated, err)
				}
			}
		})
	}
}
