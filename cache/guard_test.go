package cache

import (
	"fmt"
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

// applied is the state the store has applied: what clients are served once the tombstones of
// deleted services (served as they were for their grace period) are gone.
func applied(s *Store) map[resolver.Key]*resolver.Service {
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
	if h == nil || len(usable(s.View().Services)) != 49 {
		t.Fatal("a mass withdrawal was applied")
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
	if s.Held() != nil || len(usable(applied(s))) != 10 {
		t.Fatal("not applied after the hold period")
	}

	// An operator releases a hold at once.
	s = newStore()
	s.OnResolution(sync(base))
	s.OnResolution(sync(mass))
	if err := s.Release(s.Held().ID + 1); err == nil {
		t.Error("released a hold that does not exist")
	}
	if err := s.Release(s.Held().ID); err != nil || len(usable(applied(s))) != 10 {
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
