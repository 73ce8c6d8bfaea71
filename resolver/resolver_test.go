package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/holdfast/holdfast/internal/testkit"
)

// resolutions collects what the resolver publishes.
type resolutions chan Resolution

func (r resolutions) OnResolution(res Resolution) { r <- res }

func (r resolutions) next(t *testing.T, cond func(Resolution) bool) Resolution {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case res := <-r:
			if cond(res) {
				return res
			}
		case <-deadline:
			t.Fatal("no matching resolution within 10s")
		}
	}
}

func endpointsOf(res Resolution, k Key) int {
	s, ok := res.Services[k]
	if !ok {
		return -1
	}
	return len(s.Ports[0].Endpoints)
}

// A re-list re-delivers every object as an update; one that changes neither anything routable nor
// a resourceVersion must not change the published *Service, so that nothing downstream
// re-translates or re-pushes it. (The fake clientset keeps resourceVersions as they are, which is
// what a re-list looks like.)
func TestResolverIgnoresUnchangedRedelivery(t *testing.T) {
	a, b := Key{Namespace: "ns", Name: "a"}, Key{Namespace: "ns", Name: "b"}
	objs := []*corev1.Service{svcNamed("a"), svcNamed("b")}
	client := fake.NewClientset(objs[0], objs[1], sliceFor("a", "10.0.0.1"), sliceFor("b", "10.0.0.2"))
	out := make(resolutions, 100)
	r, err := New(Options{Client: client}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()

	first := out.next(t, func(res Resolution) bool { return res.Synced && endpointsOf(res, a) == 1 && endpointsOf(res, b) == 1 })

	// Touch a's slice without changing anything routable, then really change b.
	s := sliceFor("a", "10.0.0.1")
	s.Annotations = map[string]string{"touched": "yes"}
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, sliceFor("b", "10.0.0.2", "10.0.0.3"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	second := out.next(t, func(res Resolution) bool { return endpointsOf(res, b) == 2 })
	if second.Services[a] != first.Services[a] {
		t.Error("an update that changed nothing routable replaced service a")
	}
	if second.Services[b] == first.Services[b] {
		t.Error("a real change kept service b's old value")
	}
	if ob, nb := first.Services[b].Origin.ObservedAt, second.Services[b].Origin.ObservedAt; !nb.After(ob) {
		t.Errorf("service b changed but its observed-at went from %v to %v", ob, nb)
	}

	// Deleting the Service removes it, even with its slice still present.
	if err := client.CoreV1().Services("ns").Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	out.next(t, func(res Resolution) bool { _, ok := res.Services[a]; return !ok })
}

func svcNamed(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
}

func sliceFor(svc string, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return s
}

// With --namespaces a,b each namespace is its own source: objects elsewhere are never seen, and
// a change in one namespace is applied without touching the other.
func TestResolverWatchesOnlyItsNamespaces(t *testing.T) {
	in := func(ns string, o *corev1.Service) *corev1.Service { o.Namespace = ns; return o }
	sl := func(ns string, s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice { s.Namespace = ns; return s }
	client := fake.NewClientset(
		in("a", svcNamed("x")), sl("a", sliceFor("x", "10.0.0.1")),
		in("b", svcNamed("y")), sl("b", sliceFor("y", "10.0.0.2")),
		in("c", svcNamed("z")), sl("c", sliceFor("z", "10.0.0.3")),
	)
	out := make(resolutions, 100)
	r, err := New(Options{Client: client, Namespaces: []string{"a", "b"}}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	ax, by, cz := Key{Namespace: "a", Name: "x"}, Key{Namespace: "b", Name: "y"}, Key{Namespace: "c", Name: "z"}
	first := out.next(t, func(res Resolution) bool { return endpointsOf(res, ax) == 1 && endpointsOf(res, by) == 1 })
	if _, ok := first.Services[cz]; ok {
		t.Fatal("a service outside --namespaces was resolved")
	}
	if got := len(r.Sources()); got != 2 {
		t.Fatalf("%d sources, want one per namespace", got)
	}
	if err := client.CoreV1().Services("a").Delete(ctx, "x", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next := out.next(t, func(res Resolution) bool { _, ok := res.Services[ax]; return !ok })
	if next.Services[by] != first.Services[by] {
		t.Error("a change in namespace a touched namespace b")
	}
}

// A service's ObservedAt is when the event reached Holdfast, not when the debounce let it
// through; a source going stale is published at once, not after the debounce.
func TestResolverTimesEventsAndPublishesHealthAtOnce(t *testing.T) {
	a := Key{Namespace: "ns", Name: "a"}
	client := fake.NewClientset(svcNamed("a"), sliceFor("a", "10.0.0.1"))
	out := make(resolutions, 100)
	const holdOff = 300 * time.Millisecond
	r, err := New(Options{Client: client, HoldOff: holdOff, MaxDelay: time.Second, ProbeInterval: 50 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	out.next(t, func(res Resolution) bool { return res.Synced && endpointsOf(res, a) == 1 })

	sent := time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Update(ctx, sliceFor("a", "10.0.0.1", "10.0.0.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	res := out.next(t, func(res Resolution) bool { return endpointsOf(res, a) == 2 })
	got := time.Now()
	at := res.Services[a].Origin.ObservedAt
	if at.Before(sent) || got.Sub(at) < holdOff {
		t.Errorf("observed at %v after the write, published %v after that: want the event's arrival, before the %v debounce",
			at.Sub(sent), got.Sub(at), holdOff)
	}

	// With a 20 s debounce, a source's health is still published at once: when it syncs, and
	// when the API server stops answering its probes.
	client2 := fake.NewClientset(svcNamed("a"), sliceFor("a", "10.0.0.1"))
	var down atomic.Bool // the reactor chain must be set before the client is used
	client2.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, errors.New("API server down")
		}
		return false, nil, nil
	})
	out2 := make(resolutions, 100)
	r2, err := New(Options{Client: client2, HoldOff: 20 * time.Second, MaxDelay: 30 * time.Second,
		ProbeInterval: 50 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond}, out2)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = r2.Run(ctx) }()
	out2.next(t, func(res Resolution) bool { return res.Synced && endpointsOf(res, a) == 1 })
	down.Store(true)
	out2.next(t, func(res Resolution) bool { return res.SourceOf("ns") == Stale })
}

// A source that recovers from its fourth fault in a row re-lists as promptly as after its
// first: the API server has just answered a probe, so the restart waits the base backoff
// (jittered), not one that doubled through the earlier faults. With doubling, the fifth wait
// would be 1.6–3.2 s here. The test reads the wait each restart chose (logged), not the clock.
func TestSourceRelistsPromptlyAfterRepeatedFaults(t *testing.T) {
	client := fake.NewClientset(svcNamed("a"), sliceFor("a", "10.0.0.1"))
	var down atomic.Bool
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		if down.Load() {
			return true, nil, errors.New("API server down")
		}
		return false, nil, nil
	})
	out := make(resolutions, 1000)
	var logs testkit.Log
	const base = 200 * time.Millisecond
	r, err := New(Options{Client: client, ProbeInterval: 20 * time.Millisecond, ProbeTimeout: 20 * time.Millisecond,
		RestartBackoff: base, MaxRestartBackoff: time.Minute, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	out.next(t, func(res Resolution) bool { return res.Synced && res.SourceOf("ns") == Live })
	for range 5 {
		down.Store(true)
		out.next(t, func(res Resolution) bool { return res.SourceOf("ns") == Stale })
		down.Store(false)
		out.next(t, func(res Resolution) bool { return res.SourceOf("ns") == Live })
	}
	if st := r.Sources()[0]; st.Restarts != 5 {
		t.Errorf("%d restarts, want one per recovery (5)", st.Restarts)
	}
	var waits []time.Duration
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct {
			Decision, Reason string
			After            time.Duration `json:"after"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Decision == "source_restart" && rec.Reason == restartRecovered {
			waits = append(waits, rec.After)
		}
	}
	if len(waits) != 5 {
		t.Fatalf("%d restarts after recovery logged, want 5:\n%s", len(waits), logs.String())
	}
	for i, w := range waits {
		if w > base {
			t.Errorf("recovery %d waited %v before re-listing; want at most the base backoff %v", i+1, w, base)
		}
	}
}

// TestOrphanSlicesWaitForTheirService: Services and EndpointSlices come on separate watches, and
// the slices of a Service just created are often seen first (one "object rejected" warning for
// a valid slice in a burst of 10,000 services came from this). A slice whose Service is not
// seen yet is reported only if none arrives within OrphanGrace; one that never gets a Service is
// reported once, after it.
func TestOrphanSlicesWaitForTheirService(t *testing.T) {
	client := fake.NewClientset()
	out := make(resolutions, 100)
	var logs testkit.Log
	r, err := New(Options{Client: client, OrphanGrace: 500 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	out.next(t, func(res Resolution) bool { return res.Synced })

	// The slice first, its Service after the slice reached the resolver: served, never reported.
	created := time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Create(ctx, sliceFor("late", "10.0.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The gap between two watches' events: the slice's reached the run loop before the Service
	// is created.
	testkit.Eventually(t, "the slice taken by the run loop", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		_, pending := r.dirty[Key{Namespace: "ns", Name: "late"}]
		return !pending && r.sources[0].Status().LastEvent.After(created)
	})
	if _, err := client.CoreV1().Services("ns").Create(ctx, svcNamed("late"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out.next(t, func(res Resolution) bool { return endpointsOf(res, Key{Namespace: "ns", Name: "late"}) == 1 })
	// A slice that never gets a Service: reported once the grace is over.
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Create(ctx, sliceFor("ghost", "10.0.0.2"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the ghost's slice reported", func() bool { return strings.Contains(logs.String(), "ghost-1") })
	if !strings.Contains(logs.String(), "reason=service_not_found") {
		t.Fatalf("the ghost's slice was reported, not as service_not_found:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "late-1") {
		t.Errorf("late's slice was reported although its Service came within the grace:\n%s", logs.String())
	}
	if n := testutil.ToFloat64(r.rejections.counter.WithLabelValues(ReasonServiceNotFound)); n != 1 {
		t.Errorf("service_not_found counted %v times, want once", n)
	}
}
