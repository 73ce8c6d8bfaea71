package cache

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast/holdfast/resolver"
)

func TestCapacityAdmission(t *testing.T) {
	c, err := newCapacity(Limits{MaxServices: 3, MaxEndpoints: 12})
	if err != nil {
		t.Fatal(err)
	}
	four := svcs(4, 3) // s0..s3, 3 endpoints each
	got, refused := c.admit(nil, four)
	if len(got) != 3 || len(refused) != 1 {
		t.Fatalf("admitted %d, refused %v; want 3 and 1", len(got), refused)
	}
	if _, ok := got[resolver.Key{Namespace: "ns", Name: "s3"}]; ok {
		t.Error("admission order must be stable: s3 is the one refused")
	}
	if r := testutil.ToFloat64(c.ratio.WithLabelValues("services")); r != 1 {
		t.Errorf("services fill ratio %v, want 1", r)
	}
	// Served services keep their slots: s0 going away makes room for s3, never the other way.
	next := without(four, "s0")
	got, refused = c.admit(got, next)
	if len(got) != 3 || len(refused) != 0 {
		t.Fatalf("after s0 left: admitted %d, refused %v", len(got), refused)
	}
	// A served service that grows past the endpoint limit keeps its served version.
	grown := without(next)
	k := resolver.Key{Namespace: "ns", Name: "s1"}
	grown[k] = svcs(2, 9)[resolver.Key{Namespace: "ns", Name: "s1"}]
	got2, _ := c.admit(got, grown)
	if got2[k] != got[k] {
		t.Error("a service that no longer fits replaced what was served")
	}
	// The same refusal is reported once.
	if _, again := c.admit(got, four); len(again) != 1 {
		t.Fatalf("refused %v", again)
	}
	if _, again := c.admit(got, four); len(again) != 0 {
		t.Errorf("a refusal reported twice: %v", again)
	}
}

func TestTombstones(t *testing.T) {
	out := make(views, 100)
	s, err := NewStore(StoreOptions{Limits: Limits{TombstoneGrace: time.Minute}}, out)
	if err != nil {
		t.Fatal(err)
	}
	base := svcs(3, 2)
	s.OnResolution(resolver.Resolution{Services: base, Synced: true})
	s.OnResolution(resolver.Resolution{Services: without(base, "s1"), Synced: true})
	k := resolver.Key{Namespace: "ns", Name: "s1"}
	tomb, ok := s.View().Services[k]
	if !ok || tomb.EndpointCount() != 0 || len(tomb.Ports) != 1 {
		t.Fatalf("a deleted service must stay, with its ports and no endpoints: %+v", tomb)
	}
	s.sweepTombstones(time.Now().Add(30 * time.Second))
	if _, ok := s.View().Services[k]; !ok {
		t.Fatal("collected before its grace period")
	}
	s.sweepTombstones(time.Now().Add(2 * time.Minute))
	if _, ok := s.View().Services[k]; ok {
		t.Fatal("not collected after its grace period")
	}
	// Re-created within the grace period: back with its endpoints, no tombstone left.
	s.OnResolution(resolver.Resolution{Services: without(base, "s2"), Synced: true})
	s.OnResolution(resolver.Resolution{Services: base, Synced: true})
	if got := s.View().Services[resolver.Key{Namespace: "ns", Name: "s2"}]; got.EndpointCount() != 2 || s.capacity.tombstones.Len() != 0 {
		t.Fatalf("re-created service: %+v, %d tombstones", got, s.capacity.tombstones.Len())
	}
}

// TestChurnKeepsMemoryFlat: 10,000 create/delete cycles of distinct services leave at most
// MaxTombstones tombstones, none after the grace period, and the heap where it started (within
// 16 MiB; measured: 3.1 MiB in use before and 3.0 MiB after).
func TestChurnKeepsMemoryFlat(t *testing.T) {
	// The guard is off: this test is about tombstones and memory, not about judging changes.
	s, err := NewStore(StoreOptions{Guard: GuardOptions{Disabled: true}, Limits: Limits{TombstoneGrace: time.Minute, MaxTombstones: 200}}, make(views, 1))
	if err != nil {
		t.Fatal(err)
	}
	s.obs = ObserverFunc(func(View) {})
	keep := svcs(20, 5)
	s.OnResolution(resolver.Resolution{Services: keep, Synced: true})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	for i := range 10000 {
		next := without(keep)
		k := resolver.Key{Namespace: "churn", Name: fmt.Sprintf("c%d", i)}
		next[k] = &resolver.Service{Key: k, Ports: []resolver.Port{{Port: 80, Endpoints: []resolver.Endpoint{{Address: "10.9.0.1", Port: 80, Ready: true}}}}}
		s.OnResolution(resolver.Resolution{Services: next, Synced: true}) // created
		s.OnResolution(resolver.Resolution{Services: keep, Synced: true}) // deleted
	}
	if n := s.capacity.tombstones.Len(); n > 200 {
		t.Errorf("%d tombstones, more than the bound of 200", n)
	}
	s.sweepTombstones(time.Now().Add(2 * time.Minute))
	if n := s.capacity.tombstones.Len(); n != 0 || len(s.View().Services) != 20 {
		t.Errorf("after the grace period: %d tombstones, %d services", n, len(s.View().Services))
	}
	after := heap()
	t.Logf("heap in use: %d KiB before, %d KiB after 10,000 cycles", before>>10, after>>10)
	if after > before+16<<20 {
		t.Errorf("heap grew from %d to %d bytes over 10,000 cycles", before, after)
	}
}
