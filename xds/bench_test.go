package xds

import (
	"testing"

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
