package xds

import (
	"fmt"
	"testing"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
)

func benchFleet(n, per int) cache.View {
	v := cache.View{Services: map[resolver.Key]*resolver.Service{}, Synced: true}
	for i := range n {
		k := resolver.Key{Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("svc-%d", i)}
		eps := make([]resolver.Endpoint, per)
		for j := range eps {
			eps[j] = resolver.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", i/250%250, i%250, j+1), Port: 8080, Ready: true, Serving: true, Zone: fmt.Sprintf("zone-%d", j%3)}
		}
		v.Services[k] = &resolver.Service{Key: k, Ports: []resolver.Port{{Name: "http", Port: 80, Endpoints: eps}}}
	}
	return v
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
	k := resolver.Key{Namespace: "ns-7", Name: "svc-7"}
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
