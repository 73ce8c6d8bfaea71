package clusterset

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

var (
	t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Hour)
)

func svc(name string, exported time.Time, ports ...resolver.Port) *resolver.Service {
	return &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: name}, UID: name + "-" + exported.Format("150405"), ExportedAt: exported, Ports: ports}
}

func port(name string, n int32, addrs ...string) resolver.Port {
	p := resolver.Port{Name: name, Port: n}
	for _, a := range addrs {
		p.Endpoints = append(p.Endpoints, resolver.Endpoint{Address: a, Port: 8080, Ready: true, Serving: true, Zone: "z"})
	}
	return p
}

func ep(addr, cluster string) resolver.Endpoint {
	return resolver.Endpoint{Address: addr, Port: 8080, Ready: true, Serving: true, Zone: "z", Cluster: cluster}
}

func TestMerge(t *testing.T) {
	k := resolver.Key{Namespace: "ns", Name: "web", ClusterSet: true}
	tests := []struct {
		name      string
		from      []Contribution
		ports     []resolver.Port
		uid       string
		conflicts []string // substrings, in order
	}{
		{
			name:  "one cluster",
			from:  []Contribution{{"a", svc("web", t0, port("grpc", 80, "10.1.0.2", "10.1.0.1"))}},
			ports: []resolver.Port{{Name: "grpc", Port: 80, Endpoints: []resolver.Endpoint{ep("10.1.0.1", "a"), ep("10.1.0.2", "a")}}},
			uid:   "web-000000",
		},
		{
			name: "two clusters: endpoints together, sorted, each with its cluster",
			from: []Contribution{
				{"a", svc("web", t0, port("grpc", 80, "10.1.0.9"))},
				{"b", svc("web", t1, port("grpc", 80, "10.2.0.1"))},
			},
			ports: []resolver.Port{{Name: "grpc", Port: 80, Endpoints: []resolver.Endpoint{ep("10.1.0.9", "a"), ep("10.2.0.1", "b")}}},
			uid:   "web-000000",
		},
		{
			name: "ports are the union",
			from: []Contribution{
				{"a", svc("web", t0, port("grpc", 80, "10.1.0.1"))},
				{"b", svc("web", t1, port("grpc", 80, "10.2.0.1"), port("admin", 9000, "10.2.0.1"))},
			},
			ports: []resolver.Port{
				{Name: "grpc", Port: 80, Endpoints: []resolver.Endpoint{ep("10.1.0.1", "a"), ep("10.2.0.1", "b")}},
				{Name: "admin", Port: 9000, Endpoints: []resolver.Endpoint{ep("10.2.0.1", "b")}},
			},
			uid: "web-000000",
		},
		{
			name: "a port's name differs: the oldest export's applies",
			from: []Contribution{
				{"b", svc("web", t0, port("grpc", 80, "10.2.0.1"))},
				{"a", svc("web", t1, port("http", 80, "10.1.0.1"))},
			},
			ports:     []resolver.Port{{Name: "grpc", Port: 80, Endpoints: []resolver.Endpoint{ep("10.1.0.1", "a"), ep("10.2.0.1", "b")}}},
			uid:       "web-000000",
			conflicts: []string{`port 80: cluster a calls it "http"`},
		},
		{
			name: "an address in two clusters is served once, the oldest export's",
			from: []Contribution{
				{"a", svc("web", t0, port("grpc", 80, "10.9.0.1"))},
				{"b", svc("web", t1, port("grpc", 80, "10.9.0.1", "10.2.0.1"))},
			},
			ports:     []resolver.Port{{Name: "grpc", Port: 80, Endpoints: []resolver.Endpoint{ep("10.2.0.1", "b"), ep("10.9.0.1", "a")}}},
			uid:       "web-000000",
			conflicts: []string{"endpoint 10.9.0.1:8080 is in clusters a and b; a's is served"},
		},
	}
	many := make([]string, 30)
	for i := range many {
		many[i] = fmt.Sprintf("10.9.0.%d", i+1)
	}
	tests = append(tests, struct {
		name      string
		from      []Contribution
		ports     []resolver.Port
		uid       string
		conflicts []string
	}{
		name: "conflicts are bounded",
		from: []Contribution{{"a", svc("web", t0, port("grpc", 80, many...))}, {"b", svc("web", t1, port("grpc", 80, many...))}},
		ports: []resolver.Port{{Name: "grpc", Port: 80, Endpoints: func() []resolver.Endpoint {
			eps := port("grpc", 80, many...).Endpoints
			slices.SortFunc(eps, func(x, y resolver.Endpoint) int { return strings.Compare(x.Address, y.Address) })
			for i := range eps {
				eps[i].Cluster = "a"
			}
			return eps
		}()}},
		uid:       "web-000000",
		conflicts: []string{"endpoint 10.9.0.10:8080 is in clusters a and b", "", "", "", "", "", "", "", "", "", "and 20 more"},
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Merge(k, tt.from...)
			if got.Key != k || got.UID != tt.uid || !got.ExportedAt.Equal(tt.from[0].Service.ExportedAt) {
				t.Errorf("key %v uid %q exported %v; want %v %q %v", got.Key, got.UID, got.ExportedAt, k, tt.uid, tt.from[0].Service.ExportedAt)
			}
			if !reflect.DeepEqual(got.Ports, tt.ports) {
				t.Errorf("ports:\n got %+v\nwant %+v", got.Ports, tt.ports)
			}
			if len(got.Conflicts) != len(tt.conflicts) {
				t.Fatalf("conflicts %q, want %d like %q", got.Conflicts, len(tt.conflicts), tt.conflicts)
			}
			for i, c := range tt.conflicts {
				if !strings.Contains(got.Conflicts[i], c) {
					t.Errorf("conflict %d: %q, want it to say %q", i, got.Conflicts[i], c)
				}
			}
			for _, c := range tt.from { // inputs are never changed
				for _, p := range c.Service.Ports {
					for _, e := range p.Endpoints {
						if e.Cluster != "" {
							t.Errorf("input endpoint %s of %s was tagged %q", e.HostPort(), c.Cluster, e.Cluster)
						}
					}
				}
			}
		})
	}
}

// recorder keeps what a Merger hands on.
type recorder struct {
	mu  sync.Mutex
	got []resolver.Resolution
	ch  chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 100)} }

func (r *recorder) OnResolution(res resolver.Resolution) {
	r.mu.Lock()
	r.got = append(r.got, res)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

// until waits for the merger's latest view to satisfy cond, and returns it. (The merger may
// coalesce changes into one view, or hand on a view more than once: a test waits for the state
// it expects, not for a count of views.)
func (r *recorder) until(t *testing.T, what string, cond func(resolver.Resolution) bool) resolver.Resolution {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		var last resolver.Resolution
		ok := len(r.got) > 0
		if ok {
			last = r.got[len(r.got)-1]
		}
		r.mu.Unlock()
		if ok && cond(last) {
			return last
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("no merged view where %s; the last: %+v", what, last.Services)
		}
	}
}

// after waits for a view handed on after the first n, and returns the latest.
func (r *recorder) after(t *testing.T, n int) resolver.Resolution {
	t.Helper()
	return r.until(t, "a new view", func(resolver.Resolution) bool {
		r.mu.Lock() // until holds no lock while it asks
		defer r.mu.Unlock()
		return len(r.got) > n
	})
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// fakeClock is a Clock that moves only when a test advances it, and tells the test when the
// merger has set a timer: the merger then has nothing to do until the clock reaches it.
type fakeClock struct {
	armed chan time.Duration // each timer set, by its duration

	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	c       chan time.Time
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), armed: make(chan time.Duration, 100)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) TimerAt(deadline time.Time) (<-chan time.Time, func() bool) {
	f.mu.Lock()
	ft := &fakeTimer{at: deadline, c: make(chan time.Time, 1)}
	if !deadline.After(f.now) { // due already
		ft.stopped = true
		ft.c <- f.now
	} else {
		f.timers = append(f.timers, ft)
	}
	d := deadline.Sub(f.now)
	f.mu.Unlock()
	f.armed <- d
	return ft.c, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		was := !ft.stopped
		ft.stopped = true
		return was
	}
}

// Advance moves the clock on by d and fires the timers it reaches.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	for _, ft := range f.timers {
		if !ft.stopped && !ft.at.After(f.now) {
			ft.stopped = true
			ft.c <- f.now
		}
	}
}

// waitArmed waits until the merger sets a timer, and returns its duration.
func (f *fakeClock) waitArmed(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.armed:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("the merger set no timer")
		return 0
	}
}

// runMerger runs a Merger handing on to rec until the test ends.
func runMerger(t *testing.T, o Options, rec *recorder) *Merger {
	t.Helper()
	m, err := New(o, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

func view(services ...*resolver.Service) resolver.Resolution {
	r := resolver.Resolution{Services: map[resolver.Key]*resolver.Service{}, Synced: true, Sources: map[string]resolver.SourceState{"": resolver.Live}}
	for _, s := range services {
		r.Services[s.Key] = s
	}
	return r
}

func TestMerger(t *testing.T) {
	rec := newRecorder()
	clock := newFakeClock()
	m := runMerger(t, Options{Home: "a", SyncTimeout: 300 * time.Millisecond, Clock: clock}, rec)

	local := svc("local", time.Time{}, port("grpc", 80, "10.1.0.5"))
	webA := svc("web", t0, port("grpc", 80, "10.1.0.1"))
	webB := svc("web", t1, port("grpc", 80, "10.2.0.1"))
	onlyB := svc("only-b", t1, port("grpc", 80, "10.2.0.7"))
	hiddenB := svc("hidden", time.Time{}, port("grpc", 80, "10.2.0.8"))

	homeObs := m.Add("a")
	bObs := m.Add("b")
	homeObs.OnResolution(view(local, webA))
	// b has not synced, and its timeout has not passed: the merger waits for it (a timer to the
	// timeout, and nothing handed on) — and the clock never reaches the timeout in this test.
	if d := clock.waitArmed(t); d != 300*time.Millisecond {
		t.Errorf("the merger waits %v for b, want its sync timeout", d)
	}
	if n := rec.count(); n != 0 {
		t.Fatalf("%d merged views handed on before b synced or timed out", n)
	}

	bObs.OnResolution(view(webB, onlyB, hiddenB))
	cs := resolver.Key{Namespace: "ns", Name: "web", ClusterSet: true}
	got := rec.until(t, "b is merged", func(r resolver.Resolution) bool { _, ok := r.Remote["b"]; return ok })
	if got.Services[local.Key] != local || got.Services[webA.Key] != webA {
		t.Errorf("the home cluster's own services are not passed on as they are: %v", got.Services)
	}
	if s := got.Services[cs]; s == nil || len(s.Ports) != 1 || len(s.Ports[0].Endpoints) != 2 {
		t.Fatalf("cluster-set web: %+v, want both clusters' endpoints", s)
	}
	if _, ok := got.Services[resolver.Key{Namespace: "ns", Name: "only-b", ClusterSet: true}]; !ok {
		t.Error("a service only b exports is not in the cluster set")
	}
	for k := range got.Services {
		if k.Name == "hidden" {
			t.Errorf("b's service that is not exported is served as %v", k)
		}
		if !k.ClusterSet && k.Name == "only-b" {
			t.Errorf("another cluster's service is served under a cluster-local name: %v", k)
		}
	}
	if got.Home != "a" || got.Remote["b"][""] != resolver.Live {
		t.Errorf("home %q remote %v", got.Home, got.Remote)
	}
	first := got.Services[cs]

	// b goes stale: its resolver keeps its last view and says so; the endpoints stay.
	stale := view(webB, onlyB, hiddenB)
	stale.Sources[""] = resolver.Stale
	bObs.OnResolution(stale)
	got = rec.until(t, "b is stale", func(r resolver.Resolution) bool { return r.SourceIn("b", "ns") == resolver.Stale })
	if got.Services[cs] != first {
		t.Error("an unchanged cluster-set service was merged again (new pointer)")
	}
	if got.SourceIn("b", "ns") != resolver.Stale || got.Healthy() {
		t.Errorf("b's staleness is not passed on: %v", got.Remote)
	}

	// b removed: its endpoints leave the cluster set, and a late publish of its is dropped.
	m.Remove("b")
	got = rec.until(t, "b is gone", func(r resolver.Resolution) bool { _, ok := r.Remote["b"]; return !ok })
	if s := got.Services[cs]; s == nil || len(s.Ports[0].Endpoints) != 1 || s.Ports[0].Endpoints[0].Cluster != "a" {
		t.Errorf("after removing b, web is %+v; want a's endpoint only", s)
	}
	if _, ok := got.Services[resolver.Key{Namespace: "ns", Name: "only-b", ClusterSet: true}]; ok {
		t.Error("a service only the removed cluster exported is still served")
	}
	n := rec.count()
	bObs.OnResolution(view(webB))
	homeObs.OnResolution(view(local, webA))
	got = rec.after(t, n)
	if s := got.Services[cs]; len(s.Ports[0].Endpoints) != 1 {
		t.Errorf("a removed cluster's late publish was merged: %+v", s)
	}
}

// TestMergerGivesUpWaiting: a cluster that never syncs delays the first merged view by the
// sync timeout, no more, and readiness says so.
func TestMergerGivesUpWaiting(t *testing.T) {
	rec := newRecorder()
	clock := newFakeClock()
	m := runMerger(t, Options{Home: "a", SyncTimeout: 200 * time.Millisecond, Clock: clock}, rec)
	m.Add("b")
	m.Add("a").OnResolution(view(svc("web", t0, port("grpc", 80, "10.1.0.1"))))
	// The merger waits for b with a timer to its sync timeout, handing nothing on.
	if d := clock.waitArmed(t); d != 200*time.Millisecond {
		t.Errorf("the merger waits %v for b, want its sync timeout", d)
	}
	clock.Advance(199 * time.Millisecond)
	if n := rec.count(); n != 0 {
		t.Fatalf("%d merged views handed on before b's sync timeout", n)
	}
	if cl := m.Clusters(); cl[1].GaveUp {
		t.Errorf("b given up on before its sync timeout: %+v", cl)
	}
	clock.Advance(time.Millisecond)
	got := rec.until(t, "anything", func(resolver.Resolution) bool { return true })
	if len(got.Services) != 2 {
		t.Errorf("services %v, want a's web and its cluster-set service", got.Services)
	}
	cl := m.Clusters()
	if len(cl) != 2 || cl[0].ID != "a" || !cl[0].Home || !cl[0].Synced || cl[1].ID != "b" || cl[1].Synced || !cl[1].GaveUp {
		t.Errorf("clusters %+v", cl)
	}
}

// TestMergerSeed: restarted while cluster b is unreachable, the merger serves b's endpoints
// from the restored state (stale) rather than withdraw them, without waiting for b's sync
// timeout; b's own view replaces them once it syncs.
func TestMergerSeed(t *testing.T) {
	rec := newRecorder()
	m := runMerger(t, Options{Home: "a", SyncTimeout: time.Hour}, rec)

	webA := svc("web", t0, port("grpc", 80, "10.1.0.1"))
	webB := svc("web", t1, port("grpc", 80, "10.2.0.1", "10.2.0.2"))
	cs := resolver.Key{Namespace: "ns", Name: "web", ClusterSet: true}
	restored := map[resolver.Key]*resolver.Service{cs: Merge(cs, Contribution{"a", webA}, Contribution{"b", webB})}

	homeObs := m.Add("a")
	bObs := m.Add("b")
	m.Seed(restored)
	homeObs.OnResolution(view(webA))
	got := rec.until(t, "web is served", func(r resolver.Resolution) bool { return r.Services[cs] != nil }) // not an hour later: b is restored
	if s := got.Services[cs]; s == nil || !reflect.DeepEqual(s.Ports, restored[cs].Ports) {
		t.Fatalf("with b restored, web is %+v; want %+v", s, restored[cs])
	}
	if got.SourceIn("b", "ns") != resolver.Stale {
		t.Errorf("restored cluster b's source is %s, want stale", got.SourceIn("b", "ns"))
	}
	if cl := m.Clusters(); len(cl) != 2 || !cl[1].Restored || cl[1].Synced || cl[1].GaveUp {
		t.Errorf("clusters %+v; want b restored", cl)
	}

	bObs.OnResolution(view(svc("web", t1, port("grpc", 80, "10.2.0.3"))))
	got = rec.until(t, "b has synced", func(r resolver.Resolution) bool { return r.SourceIn("b", "ns") == resolver.Live })
	if eps := got.Services[cs].Ports[0].Endpoints; len(eps) != 2 || eps[1].Address != "10.2.0.3" || eps[1].Cluster != "b" {
		t.Errorf("after b synced, web's endpoints are %+v; want a's and b's new one", eps)
	}
}
