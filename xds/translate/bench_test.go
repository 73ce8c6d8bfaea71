package translate

import (
	"testing"

	"github.com/holdfast/holdfast/internal/fleet"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/resource"
)

// BenchmarkFirstPublish10kServices translates, validates, reference-checks and versions
// 10,000 services / 100,000 endpoints from scratch: the "serve" half of restore-and-serve.
func BenchmarkFirstPublish10kServices(b *testing.B) {
	services := fleet.New(10000, 10)
	for b.Loop() {
		res, err := NewBuilder(testTranslator).Build(services, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, set := range res.Set {
			for _, l := range set {
				_ = resource.ListVersion(l)
			}
		}
	}
}

// BenchmarkOneChangePublish10kServices publishes one endpoint change among 10,000 services:
// only that service is translated again; everything else is reused, hashes included.
func BenchmarkOneChangePublish10kServices(b *testing.B) {
	services := fleet.New(10000, 10)
	builder := NewBuilder(testTranslator)
	if _, err := builder.Build(services, nil); err != nil {
		b.Fatal(err)
	}
	k := fleet.Key(7)
	orig := services[k]
	i := 0
	for b.Loop() {
		next := *orig
		next.Ports = []resolver.Port{orig.Ports[0]}
		next.Ports[0].Endpoints = orig.Ports[0].Endpoints[:1+i%9]
		i++
		services[k] = &next
		res, err := builder.Build(services, nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, set := range res.Set {
			for _, l := range set {
				_ = resource.ListVersion(l)
			}
		}
	}
}
