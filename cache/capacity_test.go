package cache

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
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
	if tomb := s.View().Services[k]; tomb != base[k] {
		t.Fatalf("a deleted service must stay exactly as it was served, endpoints included: %+v", tomb)
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
	if got := s.View().Services[resolver.Key{Namespace: "ns", Name: "s2"}]; got != base[resolver.Key{Namespace: "ns", Name: "s2"}] || s.capacity.tombstones.Len() != 0 {
		t.Fatalf("re-created service: %+v, %d tombstones", got, s.capacity.tombstones.Len())
	}
}

// TestTombstoneBridgesRecreate: a service created again within its grace (a new UID) is served
// as itself, with its deleted incarnation served beside it (View.Retired) until the grace ends.
// First without endpoints (its Service object arrives before its EndpointSlices), it is lent
// the deleted incarnation's endpoints for the ports that have none, so that clients never see
// it empty; its own endpoints replace them as soon as they come, and the grace ending
// withdraws the lent ones and the retired incarnation. The same service back (the same UID)
// simply ends its tombstone.
func TestTombstoneBridgesRecreate(t *testing.T) {
	key := resolver.Key{Namespace: "ns", Name: "web"}
	ep := func(addr string) resolver.Endpoint {
		return resolver.Endpoint{Address: addr, Port: 8080, Ready: true, Serving: true}
	}
	old := &resolver.Service{Key: key, UID: "old-uid-0", Ports: []resolver.Port{
		{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{ep("10.0.0.1"), ep("10.0.0.2")}},
		{Name: "admin", Port: 9000, Endpoints: []resolver.Endpoint{ep("10.0.0.1")}},
	}}
	other := svcs(1, 1)
	with := func(s *resolver.Service) map[resolver.Key]*resolver.Service {
		m := without(other)
		if s != nil {
			m[key] = s
		}
		return m
	}
	fresh := func(ports ...resolver.Port) *resolver.Service {
		return &resolver.Service{Key: key, UID: "new-uid-1", Ports: ports}
	}
	endpointsOf := func(s *resolver.Service) map[int32][]string {
		out := map[int32][]string{}
		for _, p := range s.Ports {
			for _, e := range p.Endpoints {
				out[p.Port] = append(out[p.Port], e.Address)
			}
		}
		return out
	}
	sameAgain := *old
	sameAgain.Ports = []resolver.Port{{Name: "http", Port: 80}}
	tests := []struct {
		name    string
		back    *resolver.Service
		after   time.Duration // since the deletion, when the service comes back
		want    map[int32][]string
		retired bool // the deleted incarnation is served beside the new one
	}{
		{"no endpoints yet: the old ones are lent", fresh(resolver.Port{Name: "http", Port: 80}, resolver.Port{Name: "admin", Port: 9000}), 0,
			map[int32][]string{80: {"10.0.0.1", "10.0.0.2"}, 9000: {"10.0.0.1"}}, true},
		{"one port has its own: only the other is lent", fresh(resolver.Port{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{ep("10.0.1.1")}}, resolver.Port{Name: "admin", Port: 9000}), 0,
			map[int32][]string{80: {"10.0.1.1"}, 9000: {"10.0.0.1"}}, true},
		{"every port has its own: nothing lent", fresh(resolver.Port{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{ep("10.0.1.1")}}), 0,
			map[int32][]string{80: {"10.0.1.1"}}, true},
		{"a port the old one did not have is not lent anything", fresh(resolver.Port{Name: "grpc", Port: 7000}), 0,
			map[int32][]string{}, true},
		{"only not-ready endpoints: the old ones are lent", fresh(resolver.Port{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{{Address: "10.0.1.1", Port: 8080}}}), 0,
			map[int32][]string{80: {"10.0.0.1", "10.0.0.2"}}, true},
		{"the same service back: served as it is, nothing retired", &sameAgain, 0,
			map[int32][]string{}, false},
		{"after the grace: nothing lent, nothing retired", fresh(resolver.Port{Name: "http", Port: 80}), 2 * time.Minute,
			map[int32][]string{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewStore(StoreOptions{Limits: Limits{TombstoneGrace: time.Minute}}, make(views, 100))
			if err != nil {
				t.Fatal(err)
			}
			s.OnResolution(resolver.Resolution{Services: with(old), Synced: true})
			s.OnResolution(resolver.Resolution{Services: with(nil), Synced: true})
			s.sweepTombstones(time.Now().Add(tt.after))
			s.OnResolution(resolver.Resolution{Services: with(tt.back), Synced: true})
			v := s.View()
			got := v.Services[key]
			if got == nil {
				t.Fatal("the re-created service is not served")
			}
			if got.UID != tt.back.UID {
				t.Errorf("served incarnation %q, want the new one %q", got.UID, tt.back.UID)
			}
			if eps := endpointsOf(got); !maps.EqualFunc(eps, tt.want, slices.Equal) {
				t.Errorf("endpoints %v, want %v", eps, tt.want)
			}
			if r, ok := v.Retired[key]; ok != tt.retired || (ok && r != old) {
				t.Errorf("retired %+v, want the deleted incarnation: %v", r, tt.retired)
			}
			// The same input again gives the same *Service: nothing is translated again.
			s.OnResolution(resolver.Resolution{Services: with(tt.back), Synced: true})
			if again := s.View().Services[key]; again != got {
				t.Error("the same input served as a new *Service")
			}
			// The service's own endpoints replace the lent ones at once.
			own := fresh(resolver.Port{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{ep("10.0.2.1")}})
			s.OnResolution(resolver.Resolution{Services: with(own), Synced: true})
			if got := s.View().Services[key]; got != own {
				t.Errorf("own endpoints: served %v", endpointsOf(got))
			}
		})
	}
	// The grace ending withdraws the lent endpoints and the retired incarnation.
	s, err := NewStore(StoreOptions{Limits: Limits{TombstoneGrace: time.Minute}}, make(views, 100))
	if err != nil {
		t.Fatal(err)
	}
	s.OnResolution(resolver.Resolution{Services: with(old), Synced: true})
	s.OnResolution(resolver.Resolution{Services: with(nil), Synced: true})
	empty := fresh(resolver.Port{Name: "http", Port: 80})
	s.OnResolution(resolver.Resolution{Services: with(empty), Synced: true, Sources: map[string]resolver.SourceState{"": resolver.Live}})
	if n := s.View().Services[key].EndpointCount(); n != 2 {
		t.Fatalf("lent endpoints: %d, want 2", n)
	}
	if st, _ := s.Service(key); !strings.Contains(st.Reason, "lending its endpoints") {
		t.Errorf("status reason %q does not say endpoints are lent", st.Reason)
	}
	s.sweepTombstones(time.Now().Add(2 * time.Minute))
	if v := s.View(); v.Services[key] != empty || len(v.Retired) != 0 {
		t.Errorf("after the grace: served %v, retired %v; want the service as it is, nothing retired", endpointsOf(v.Services[key]), v.Retired)
	}
}

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

// TestStoreCapacity: the admin API's capacity figures are what the store holds: admitted
// services and their endpoints, tombstones, and the services refused for want of room.
func TestStoreCapacity(t *testing.T) {
	s, err := NewStore(StoreOptions{Guard: GuardOptions{Disabled: true}, Limits: Limits{MaxServices: 2, TombstoneGrace: time.Minute, MaxTombstones: 5}}, make(views, 100))
	if err != nil {
		t.Fatal(err)
	}
	base := svcs(3, 2)
	s.OnResolution(resolver.Resolution{Services: base, Synced: true})
	got := s.Capacity()
	if got.Services != 2 || got.MaxServices != 2 || got.Endpoints != 4 || got.MaxEndpoints != 500000 || got.Tombstones != 0 || got.MaxTombstones != 5 ||
		len(got.Refused) != 1 {
		t.Fatalf("capacity %+v; want 2 of 2 services, 4 endpoints, one refused", got)
	}
	admitted := without(base, got.Refused[0].Name)
	s.OnResolution(resolver.Resolution{Services: without(admitted, "s0"), Synced: true})
	if got := s.Capacity(); got.Tombstones != 1 || got.Services+got.Tombstones > 3 {
		t.Errorf("after a deletion: %+v; want one tombstone", got)
	}
}
