package cache

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

// svcs builds services named s0..s(n-1) with per ready endpoints each.
func svcs(n, per int) map[resolver.Key]*resolver.Service {
	out := map[resolver.Key]*resolver.Service{}
	for i := range n {
		k := resolver.Key{Namespace: "ns", Name: fmt.Sprintf("s%d", i)}
		var eps []resolver.Endpoint
		for j := range per {
			eps = append(eps, resolver.Endpoint{Address: fmt.Sprintf("10.0.%d.%d", i, j+1), Port: 80, Ready: true, Serving: true})
		}
		out[k] = &resolver.Service{Key: k, Ports: []resolver.Port{{Port: 80, Endpoints: eps}}}
	}
	return out
}

func without(m map[resolver.Key]*resolver.Service, names ...string) map[resolver.Key]*resolver.Service {
	out := map[resolver.Key]*resolver.Service{}
	for k, v := range m {
		out[k] = v
	}
	for _, n := range names {
		delete(out, resolver.Key{Namespace: "ns", Name: n})
	}
	return out
}

func scaled(m map[resolver.Key]*resolver.Service, name string, keep int) map[resolver.Key]*resolver.Service {
	out := without(m)
	k := resolver.Key{Namespace: "ns", Name: name}
	s := *out[k]
	s.Ports = []resolver.Port{{Port: 80, Endpoints: s.Ports[0].Endpoints[:keep]}}
	out[k] = &s
	return out
}

// liveOf is the state the store has applied: what clients are served once the tombstones of
// deleted services (served as they were for their grace period) are gone.
func liveOf(s *Store) map[resolver.Key]*resolver.Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

func TestGuardJudge(t *testing.T) {
	now := time.Now()
	never := func(resolver.Key) time.Time { return time.Time{} }
	justNow := func(resolver.Key) time.Time { return now.Add(-time.Second) }
	longAgo := func(resolver.Key) time.Time { return now.Add(-time.Hour) }
	opts := GuardOptions{MinFleetEndpoints: 20, MinWithdrawnEndpoints: 10, MinServiceEndpoints: 5}
	opts.defaults()
	base := svcs(10, 5) // 50 endpoints
	tests := []struct {
		name        string
		opts        GuardOptions
		next        map[resolver.Key]*resolver.Service
		unhealthyAt func(resolver.Key) time.Time
		wantHold    bool
		wantOut     int
	}{
		{"nothing changes", opts, base, never, false, 0},
		{"one service scaled down while healthy", opts, scaled(base, "s0", 1), never, false, 4},
		{"half the fleet exactly is allowed", opts, without(base, "s0", "s1", "s2", "s3", "s4"), never, false, 25},
		{"8 of 10 services deleted at once", opts, without(base, "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"), never, true, 40},
		{"the whole fleet replaced", opts, svcs(0, 0), never, true, 50},
		{"a small fleet is never held", GuardOptions{MinFleetEndpoints: 1000, MinWithdrawnEndpoints: 10, MinServiceEndpoints: 5, MaxWithdrawFraction: 0.5}, svcs(0, 0), never, false, 50},
		{"guard off", GuardOptions{Disabled: true}, svcs(0, 0), never, false, 0},
		{"a service emptied right after its source was stale", opts, scaled(base, "s3", 0), justNow, true, 5},
		{"a service emptied long after", opts, scaled(base, "s3", 0), longAgo, false, 5},
		{"a small service emptied right after a stale source", GuardOptions{MinFleetEndpoints: 20, MinWithdrawnEndpoints: 10, MinServiceEndpoints: 6}, scaled(base, "s3", 0), justNow, false, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			o.defaults()
			v := o.judge(base, tt.next, now, tt.unhealthyAt)
			if v.Hold != tt.wantHold || v.Withdrawn != tt.wantOut {
				t.Errorf("hold=%v withdrawn=%d (%s), want hold=%v withdrawn=%d", v.Hold, v.Withdrawn, v.Reason, tt.wantHold, tt.wantOut)
			}
			if v.Hold && (v.Reason == "" || len(v.Services) == 0) {
				t.Errorf("a hold must say why and what: %+v", v)
			}
		})
	}
}

func TestStoreHoldLifecycle(t *testing.T) {
	newStore := func() *Store {
		s, err := NewStore(StoreOptions{Guard: GuardOptions{MinFleetEndpoints: 20, MinWithdrawnEndpoints: 10, HoldPeriod: time.Minute}}, make(views, 100))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := svcs(10, 5)
	mass := without(base, "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7")
	sync := func(m map[resolver.Key]*resolver.Service) resolver.Resolution {
		return resolver.Resolution{Services: m, Synced: true}
	}

	s := newStore()
	s.OnResolution(sync(base))
	s.OnResolution(sync(scaled(base, "s9", 4)))
	if got := len(usable(s.View().Services)); got != 49 {
		t.Fatalf("a single scale-down must apply at once: %d usable endpoints", got)
	}
	s.OnResolution(sync(mass))
	h := s.Held()
	// Held: nothing is withdrawn; what the change adds (s9 back to 5 endpoints) goes through.
	if h == nil || len(usable(s.View().Services)) != 50 {
		t.Fatalf("a mass withdrawal was applied, or its addition held: %d usable endpoints", len(usable(s.View().Services)))
	}
	s.OnResolution(sync(mass)) // still true: the same hold goes on
	if h2 := s.Held(); h2 == nil || h2.ID != h.ID || !h2.Since.Equal(h.Since) {
		t.Fatalf("the hold restarted: %+v then %+v", h, h2)
	}
	s.expireHold(h.Since.Add(30 * time.Second))
	if s.Held() == nil {
		t.Fatal("released before the hold period")
	}
	s.expireHold(h.Since.Add(time.Minute))
	if s.Held() != nil || len(usable(liveOf(s))) != 10 {
		t.Fatal("not applied after the hold period")
	}

	// An operator releases a hold at once.
	s = newStore()
	s.OnResolution(sync(base))
	s.OnResolution(sync(mass))
	if err := s.Release(s.Held().ID + 1); err == nil {
		t.Error("released a hold that does not exist")
	}
	if err := s.Release(s.Held().ID); err != nil || len(usable(liveOf(s))) != 10 {
		t.Fatalf("operator release: %v", err)
	}

	// A change that stops being a mass withdrawal clears the hold and applies.
	s = newStore()
	s.OnResolution(sync(base))
	s.OnResolution(sync(mass))
	s.OnResolution(sync(scaled(base, "s0", 3)))
	if s.Held() != nil || len(usable(s.View().Services)) != 48 {
		t.Fatal("a corrected change did not clear the hold")
	}

	// A source that turns unhealthy during the hold restarts its clock.
	s = newStore()
	s.OnResolution(sync(base))
	s.OnResolution(sync(mass))
	h = s.Held()
	r := sync(mass)
	r.UnhealthyAt = map[string]time.Time{"": h.Since.Add(50 * time.Second)}
	s.OnResolution(r)
	s.expireHold(h.Since.Add(70 * time.Second))
	if s.Held() == nil {
		t.Fatal("applied although the source was unhealthy 20s ago")
	}

	// A source that is unhealthy now never lets a hold expire, however long ago it went stale.
	s = newStore()
	s.OnResolution(sync(base))
	s.OnResolution(sync(mass))
	h = s.Held()
	r = sync(mass)
	r.Sources = map[string]resolver.SourceState{"": resolver.Stale}
	r.UnhealthyAt = map[string]time.Time{"": h.Since.Add(-time.Hour)}
	s.OnResolution(r)
	for _, after := range []time.Duration{2 * time.Minute, 10 * time.Minute} {
		s.expireHold(h.Since.Add(after))
		if s.Held() == nil {
			t.Fatalf("applied %v into the hold while the source is still unhealthy", after)
		}
	}
	r.Sources = map[string]resolver.SourceState{"": resolver.Live}
	s.OnResolution(r)
	s.expireHold(h.Since.Add(10*time.Minute + 30*time.Second))
	if s.Held() == nil {
		t.Fatal("applied the moment the source became healthy: the hold period must pass first")
	}
	s.expireHold(h.Since.Add(12 * time.Minute))
	if s.Held() != nil {
		t.Fatal("not applied a hold period after the source became healthy")
	}
}

// A restart in the middle of a hold neither loses the hold nor applies the change: only applied
// state is written, and the first sync after a restore is judged against it.
func TestRestartMidHoldHoldsAgain(t *testing.T) {
	dir := t.TempDir()
	opts := StoreOptions{StateDir: dir, WriteDelay: time.Millisecond, Guard: GuardOptions{MinFleetEndpoints: 20, MinWithdrawnEndpoints: 10}}
	s, err := NewStore(opts, make(views, 100))
	if err != nil {
		t.Fatal(err)
	}
	base := svcs(10, 5)
	mass := without(base, "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7")
	s.OnResolution(resolver.Resolution{Services: base, Synced: true})
	s.OnResolution(resolver.Resolution{Services: mass, Synced: true})
	if s.Held() == nil {
		t.Fatal("not held")
	}
	if !s.flush() { // what SIGTERM does on the way out
		t.Fatal("flush failed")
	}

	s2, err := NewStore(opts, make(views, 100))
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := len(usable(s2.View().Services)); got != 50 {
		t.Fatalf("restored %d endpoints, want the 50 served before the restart", got)
	}
	s2.OnResolution(resolver.Resolution{Services: mass, Synced: true})
	if s2.Held() == nil || len(usable(s2.View().Services)) != 50 {
		t.Fatal("after the restart the held change was applied")
	}
}

// TestWithhold: what a held change may apply at once is everything but its withdrawals.
func TestWithhold(t *testing.T) {
	ep := func(addr string, ready bool) resolver.Endpoint {
		return resolver.Endpoint{Address: addr, Port: 8080, Ready: ready, Serving: ready}
	}
	svc := func(name string, ports ...resolver.Port) *resolver.Service {
		return &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: name}, Ports: ports}
	}
	port := func(n int32, eps ...resolver.Endpoint) resolver.Port {
		return resolver.Port{Name: fmt.Sprint(n), Port: n, Endpoints: eps}
	}
	a, b, c := ep("10.0.0.1", true), ep("10.0.0.2", true), ep("10.0.0.3", true)
	aDown := ep("10.0.0.1", false)
	tests := []struct {
		name         string
		served, next *resolver.Service // nil: absent
		want         *resolver.Service // nil: absent
		samePointer  bool              // want is next itself
	}{
		{"a new service", nil, svc("s", port(80, a)), svc("s", port(80, a)), true},
		{"a new endpoint", svc("s", port(80, a)), svc("s", port(80, a, b)), svc("s", port(80, a, b)), true},
		{"an endpoint dropped: kept", svc("s", port(80, a, b)), svc("s", port(80, a)), svc("s", port(80, a, b)), false},
		{"an endpoint not ready: kept ready", svc("s", port(80, a, b)), svc("s", port(80, aDown, b)), svc("s", port(80, a, b)), false},
		{"dropped and added at once: both", svc("s", port(80, a, b)), svc("s", port(80, b, c)), svc("s", port(80, a, b, c)), false},
		{"an endpoint becomes ready: taken", svc("s", port(80, aDown)), svc("s", port(80, a)), svc("s", port(80, a)), true},
		{"a port dropped: kept", svc("s", port(80, a), port(90, b)), svc("s", port(80, a)), svc("s", port(80, a), port(90, b)), false},
		{"a port added beside a withdrawal", svc("s", port(80, a, b)), svc("s", port(80, a), port(90, c)), svc("s", port(80, a, b), port(90, c)), false},
		{"deleted with endpoints: kept", svc("s", port(80, a)), nil, svc("s", port(80, a)), false},
		{"deleted without usable endpoints: gone", svc("s", port(80, aDown)), nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			served, next := map[resolver.Key]*resolver.Service{}, map[resolver.Key]*resolver.Service{}
			k := resolver.Key{Namespace: "ns", Name: "s"}
			if tt.served != nil {
				served[k] = tt.served
			}
			if tt.next != nil {
				next[k] = tt.next
			}
			got := withhold(served, next)[k]
			if (got == nil) != (tt.want == nil) || (got != nil && !reflect.DeepEqual(got.Ports, tt.want.Ports)) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if tt.samePointer && got != tt.next {
				t.Error("a service the change withdraws nothing from must keep the change's pointer")
			}
			if !tt.samePointer && got != nil && got == tt.next {
				t.Error("the change's own service served although it withdraws")
			}
		})
	}
}

// TestHoldAppliesAllButTheWithdrawal: while a mass withdrawal is held, a new service and an
// endpoint added to a held service are served at once; the withdrawn endpoints stay until
// the hold ends, and then go.
func TestHoldAppliesAllButTheWithdrawal(t *testing.T) {
	s, err := NewStore(StoreOptions{Guard: GuardOptions{MinFleetEndpoints: 20, MinWithdrawnEndpoints: 10, HoldPeriod: time.Minute}}, make(views, 100))
	if err != nil {
		t.Fatal(err)
	}
	base := svcs(10, 5)
	s.OnResolution(resolver.Resolution{Services: base, Synced: true})
	// 60 % of the fleet withdrawn (s0-s5 emptied), s6 grows by one, a new service appears.
	next := without(base)
	for i := range 6 {
		k := resolver.Key{Namespace: "ns", Name: fmt.Sprintf("s%d", i)}
		next[k] = &resolver.Service{Key: k, Ports: []resolver.Port{{Port: 80}}}
	}
	k6 := resolver.Key{Namespace: "ns", Name: "s6"}
	grown := *base[k6]
	grown.Ports = []resolver.Port{{Port: 80, Endpoints: append(slices.Clone(base[k6].Ports[0].Endpoints),
		resolver.Endpoint{Address: "10.0.6.99", Port: 80, Ready: true, Serving: true})}}
	next[k6] = &grown
	fresh := resolver.Key{Namespace: "ns", Name: "new"}
	next[fresh] = &resolver.Service{Key: fresh, Ports: []resolver.Port{{Port: 80, Endpoints: []resolver.Endpoint{{Address: "10.9.9.9", Port: 80, Ready: true, Serving: true}}}}}
	s.OnResolution(resolver.Resolution{Services: next, Synced: true})
	if s.Held() == nil {
		t.Fatal("a 60% withdrawal was not held")
	}
	v := s.View()
	if v.Services[fresh] != next[fresh] {
		t.Error("a new service waits for the hold")
	}
	if v.Services[k6] != next[k6] {
		t.Error("an endpoint added to a service waits for the hold")
	}
	if n := len(usable(v.Services)); n != 50+1+1 {
		t.Errorf("%d usable endpoints served, want the 50 held ones plus the two added", n)
	}
	st, _ := s.Service(resolver.Key{Namespace: "ns", Name: "s0"})
	if st.State != StateHeld {
		t.Errorf("s0 is %s, want held", st.State)
	}
	if st, _ := s.Service(fresh); st.State == StateHeld {
		t.Error("the new service is reported held")
	}
	if err := s.Release(s.Held().ID); err != nil {
		t.Fatal(err)
	}
	if n := len(usable(liveOf(s))); n != 20+1+1 {
		t.Errorf("after the release %d usable endpoints applied, want 22", n)
	}
}
