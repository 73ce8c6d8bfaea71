package clusterset

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/holdfast/holdfast/internal/fleet"
	"github.com/holdfast/holdfast/resolver"
)

// clusterViews builds n clusters' views of the same 1,000 exported services, 10 endpoints
// each, every cluster on its own addresses.
func clusterViews(n int) map[string]resolver.Resolution {
	views := map[string]resolver.Resolution{}
	for c := range n {
		id := fmt.Sprintf("c%d", c)
		services := fleet.New(1000, 10)
		for k, s := range services {
			s.ExportedAt = time.Date(2026, 1, 1, 0, 0, c, 0, time.UTC)
			for i := range s.Ports[0].Endpoints {
				e := &s.Ports[0].Endpoints[i]
				e.Address = fmt.Sprintf("%d.%s", 10+c, strings.TrimPrefix(e.Address, "10."))
			}
			services[k] = s
		}
		views[id] = resolver.Resolution{Services: services, Synced: true, Sources: map[string]resolver.SourceState{"": resolver.Live}}
	}
	return views
}

func newBenchMerger(b *testing.B) *Merger {
	m, err := New(Options{Home: "c0"}, resolver.ObserverFunc(func(resolver.Resolution) {}))
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkMergeFirst merges 2 and 3 clusters × 1,000 exported services × 10 endpoints from
// nothing: what the first merged view after a start costs (each cluster-set service built).
func BenchmarkMergeFirst(b *testing.B) {
	for _, n := range []int{2, 3} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			views := clusterViews(n)
			for b.Loop() {
				m := newBenchMerger(b)
				if got := m.merge(views); len(got.Services) != 2000 {
					b.Fatalf("%d services", len(got.Services))
				}
			}
		})
	}
}

// BenchmarkMergeOneChange merges after one endpoint of one service changed in one cluster:
// every other cluster-set service is reused (the same pointer, so nothing downstream
// translates it again); the cost left is walking the views.
func BenchmarkMergeOneChange(b *testing.B) {
	for _, n := range []int{2, 3} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			views := clusterViews(n)
			m := newBenchMerger(b)
			m.merge(views)
			k := fleet.Key(7)
			orig := views["c1"].Services[k]
			i := 0
			for b.Loop() {
				next := *orig
				next.Ports = []resolver.Port{orig.Ports[0]}
				next.Ports[0].Endpoints = orig.Ports[0].Endpoints[:1+i%9]
				i++
				views["c1"].Services[k] = &next
				m.merge(views)
			}
		})
	}
}
