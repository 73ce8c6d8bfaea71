package cache

import (
	"strings"
	"testing"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

// TestServiceStatus walks one store through every state a service can be in and checks what an
// operator is told about each.
func TestServiceStatus(t *testing.T) {
	s, err := NewStore(StoreOptions{
		Guard:  GuardOptions{MinFleetEndpoints: 20, MinWithdrawnEndpoints: 10, HoldPeriod: time.Minute},
		Limits: Limits{MaxServices: 11, TombstoneGrace: time.Minute},
	}, make(views, 100))
	if err != nil {
		t.Fatal(err)
	}
	key := func(n string) resolver.Key { return resolver.Key{Namespace: "ns", Name: n} }
	base := svcs(10, 5)
	healthy := map[string]resolver.SourceState{"": resolver.Live}
	res := func(m map[resolver.Key]*resolver.Service, sources map[string]resolver.SourceState, degraded map[resolver.Key]string) resolver.Resolution {
		return resolver.Resolution{Services: m, Synced: true, Sources: sources, Degraded: degraded}
	}
	check := func(step, name string, want ServiceState, reason string) {
		t.Helper()
		st, ok := s.Service(key(name))
		if !ok {
			t.Fatalf("%s: %s unknown", step, name)
		}
		if st.State != want || !strings.Contains(st.Reason, reason) {
			t.Errorf("%s: %s is %s (%q), want %s (%q)", step, name, st.State, st.Reason, want, reason)
		}
	}

	s.OnResolution(res(base, healthy, nil))
	check("synced", "s0", StateLive, "")

	s.OnResolution(res(base, map[string]resolver.SourceState{"": resolver.Stale}, map[resolver.Key]string{key("s1"): "nothing usable"}))
	check("source stale", "s0", StateStale, "all namespaces is stale")
	check("source stale", "s1", StateDegraded, "nothing usable")

	// Two new services with the limit at 11: one is served, the other refused.
	grown := without(base)
	for k, v := range svcs(12, 1) {
		if _, ok := grown[k]; !ok {
			grown[k] = v
		}
	}
	s.OnResolution(res(grown, healthy, nil))
	check("over the limit", "s10", StateLive, "")
	check("over the limit", "s11", StateRefused, "not served")
	if st, _ := s.Service(key("s11")); st.Service != nil {
		t.Error("a refused service has a served state")
	}

	s.OnResolution(res(without(grown, "s10", "s11"), healthy, nil))
	check("deleted", "s10", StateDeleted, "served as it last was")

	mass := without(base, "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7")
	s.OnResolution(res(mass, healthy, nil))
	h := s.Held()
	if h == nil {
		t.Fatal("no hold")
	}
	check("held", "s0", StateHeld, "would withdraw")
	check("held", "s9", StateLive, "")
	if st, _ := s.Service(key("s0")); st.HoldID != h.ID {
		t.Errorf("held service names hold %d, want %d", st.HoldID, h.ID)
	}

	all := s.Services()
	if len(all) != 11 || all[0].Key != key("s0") {
		t.Errorf("Services() = %d entries starting with %v, want 11 sorted", len(all), all[0].Key)
	}
	if _, ok := s.Service(key("nope")); ok {
		t.Error("an unknown service has a status")
	}
}

func TestServiceStatusRestored(t *testing.T) {
	dir := t.TempDir()
	data, err := encodeState(sampleServices(), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(dir+"/"+StateFileName, data); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(StoreOptions{StateDir: dir}, make(views, 10))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(); err != nil {
		t.Fatal(err)
	}
	st, ok := s.Service(resolver.Key{Namespace: "ns", Name: "a"})
	if !ok || st.State != StateRestored || !strings.Contains(st.Reason, "1h0m0s ago") {
		t.Fatalf("restored service: %+v", st)
	}
	if st.Service.Origin.ServiceVersion != "41" {
		t.Errorf("restored service lost its provenance: %+v", st.Service.Origin)
	}
}
