package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/fleet"
	"github.com/holdfast/holdfast/internal/testkit"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/publish"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
	"github.com/holdfast/holdfast/xds/translate"
)

// captured keeps the snapshots handed to it.
type captured struct {
	mu    sync.Mutex
	snaps serve.Snapshots
	n     int
}

func (c *captured) SetSnapshots(s serve.Snapshots) {
	c.mu.Lock()
	c.snaps, c.n = s, c.n+1
	c.mu.Unlock()
}
func (c *captured) Delivery(resource.Kind, resourcev3.Type, map[string]string, time.Time, time.Duration) serve.Delivery {
	return serve.Delivery{}
}
func (c *captured) Settled() <-chan struct{} { return nil }
func (c *captured) last() serve.Snapshots    { c.mu.Lock(); defer c.mu.Unlock(); return c.snaps }

// fleetResources translates a synthetic fleet with Holdfast's own translation.
func fleetResources(t testing.TB, services, per int) resources {
	t.Helper()
	built, err := translate.NewBuilder(translate.Translator{Naming: translate.Naming{Domain: "cluster.local"}, EnvoyListenAddress: "127.0.0.1"}).Build(fleet.New(services, per), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := resources{}
	for kind, byType := range built.Set {
		res[kind] = map[resourcev3.Type]map[string]*resource.Resource{}
		for _, typ := range resource.Served {
			res[kind][typ] = map[string]*resource.Resource{}
			for _, r := range byType[typ] {
				res[kind][typ][r.Name] = r
			}
		}
	}
	return res
}

func TestCacheRoundTripAndDefects(t *testing.T) {
	res := fleetResources(t, 20, 3)
	now := time.Now().Truncate(time.Second)
	good, err := encodeCache(res, now, now)
	if err != nil {
		t.Fatal(err)
	}
	back, at, err := decodeCache(bytes.NewReader(good), 1<<30)
	if err != nil || !at.Equal(now) {
		t.Fatalf("round trip: %v, written at %v", err, at)
	}
	for kind, types := range res {
		for typ, rs := range types {
			for n, r := range rs {
				if b := back[kind][typ][n]; b == nil || b.Version != r.Version || !bytes.Equal(b.Any.GetValue(), r.Any.GetValue()) {
					t.Fatalf("%s %s %s did not survive", kind, typ, n)
				}
			}
		}
	}
	nl := bytes.IndexByte(good, '\n')
	header, payload := string(good[:nl]), good[nl+1:]
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"empty", nil, "header"},
		{"truncated", good[:len(good)-10], "truncated"},
		{"a flipped byte", append([]byte(header+"\n"), append(append([]byte{}, payload[:20]...), append([]byte{payload[20] ^ 1}, payload[21:]...)...)...), "checksum"},
		{"a newer format", []byte(strings.Replace(header, "holdfast-agent-cache 1 ", "holdfast-agent-cache 2 ", 1) + "\n" + string(payload)), "future_version"},
		{"not a cache", []byte("hello\n{}"), "header"},
		{"oversized", good, "too_large"},
	}
	for _, tt := range tests {
		limit := int64(1 << 30)
		if tt.reason == "too_large" {
			limit = 100
		}
		_, _, err := decodeCache(bytes.NewReader(tt.data), limit)
		var le *cache.LoadError
		if !errors.As(err, &le) || le.Reason != tt.reason {
			t.Errorf("%s: %v, want reason %s", tt.name, err, tt.reason)
		}
	}
}

func FuzzDecodeCache(f *testing.F) {
	res := fleetResources(f, 3, 2)
	good, err := encodeCache(res, time.Now(), time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("holdfast-agent-cache 1 2 00\n{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, _, err := decodeCache(bytes.NewReader(data), 1<<20)
		if err == nil && got == nil {
			t.Fatal("no error and no resources")
		}
	})
}

// A cache older than --max-cache-age is served all the same, and says so.
func TestLoadCacheTooOld(t *testing.T) {
	dir := t.TempDir()
	res := fleetResources(t, 5, 2)
	data, err := encodeCache(res, time.Now(), time.Now().Add(-48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cacheFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	down := &captured{}
	reg := prometheus.NewRegistry()
	a, err := New(Options{Upstream: "127.0.0.1:1", NodeID: "n", CacheDir: dir, MaxCacheAge: 24 * time.Hour, Downstream: down, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.LoadCache(); err != nil {
		t.Fatal(err)
	}
	// The age is how long ago upstream confirmed the content, read when scraped: it grows.
	if n, err := testutil.GatherAndCount(reg, "holdfast_agent_restored_cache_age_seconds"); err != nil || n != 1 {
		t.Fatalf("age metric: %d %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "holdfast_agent_restored_cache_age_seconds" && mf.GetMetric()[0].GetGauge().GetValue() < 47*3600 {
			t.Errorf("restored cache age %v s, want the 48 h since upstream confirmed it", mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	st := a.Status()
	if !st.Ready || !st.Cache.ServingRestored || !st.Cache.TooOld || st.Cache.AgeSeconds < 47*3600 || !st.Cache.ConfirmedAt.Before(time.Now().Add(-47*time.Hour)) {
		t.Errorf("status = %+v", st)
	}
	snap := down.last()[resource.KindGRPC]
	if len(snap.List(resourcev3.ClusterType)) != 5 || len(snap.List(resourcev3.EndpointType)) != 5 {
		t.Errorf("served from the old cache: %d clusters, %d assignments", len(snap.List(resourcev3.ClusterType)), len(snap.List(resourcev3.EndpointType)))
	}
}

// BenchmarkAgentStartFromDisk: 1,000 services × 10 endpoints, both client kinds: the time from
// reading the cache file to serving it, and the heap it takes.
func BenchmarkAgentStartFromDisk(b *testing.B) {
	dir := b.TempDir()
	data, err := encodeCache(fleetResources(b, 1000, 10), time.Now(), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cacheFileName), data, 0o600); err != nil {
		b.Fatal(err)
	}
	var heap float64
	for i := 0; b.Loop(); i++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		down := &captured{}
		a, err := New(Options{Upstream: "127.0.0.1:1", NodeID: fmt.Sprint("n", i), CacheDir: dir, Downstream: down})
		if err != nil {
			b.Fatal(err)
		}
		if err := a.LoadCache(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap = float64(after.HeapInuse-min(before.HeapInuse, after.HeapInuse)) / (1 << 20)
		runtime.KeepAlive(a)
		b.StartTimer()
	}
	b.ReportMetric(heap, "heap-MiB")
	b.ReportMetric(float64(len(data))/(1<<20), "cache-MiB")
}

// upstream runs Holdfast's own xDS server for services on addr ("" = a free port).
func upstream(t *testing.T, addr string, services map[resolver.Key]*resolver.Service) (*serve.Server, string) {
	t.Helper()
	srv, err := serve.NewServer(serve.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := publish.New(publish.Options{Translator: translate.Translator{Naming: translate.Naming{Domain: "cluster.local"}, EnvoyListenAddress: "127.0.0.1"}}, srv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = pub.Run(ctx) }()
	pub.OnView(cache.View{Services: services, Synced: true, Generation: 1})
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	testkit.Eventually(t, "listening on "+addr, func() bool { // the port may linger a moment after a stop
		lis, err = net.Listen("tcp", addr)
		return err == nil
	})
	go func() { _ = srv.GRPC.Serve(lis) }()
	t.Cleanup(func() { srv.GRPC.Stop() })
	return srv, lis.Addr().String()
}

// While upstream is away the agent keeps everything; after it returns, a service deleted
// meanwhile goes only because upstream says so, and a changed one changes.
func TestAgentReconnectRemovesOnlyWhatUpstreamSaysIsGone(t *testing.T) {
	services := fleet.New(3, 2)
	up, addr := upstream(t, "", services)
	down := &captured{}
	a, err := New(Options{Upstream: addr, NodeID: "n", Kinds: []resource.Kind{resource.KindGRPC}, Downstream: down,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	clusters := func() []*resource.Resource {
		if s := down.last(); s != nil {
			return s[resource.KindGRPC].List(resourcev3.ClusterType)
		}
		return nil
	}
	testkit.Eventually(t, "the agent mirrors 3 services", func() bool { return len(clusters()) == 3 && a.Status().Upstream["grpc"].Synced })
	name := func(i int) string { return translate.Naming{Domain: "cluster.local"}.Resource(fleet.Key(i), 80) }
	before, _ := down.last()[resource.KindGRPC].Get(resourcev3.EndpointType, name(0))

	up.GRPC.Stop()
	testkit.Eventually(t, "the agent sees upstream gone", func() bool { return !a.Status().Upstream["grpc"].Connected })
	if n := len(clusters()); n != 3 {
		t.Fatalf("with upstream away the agent serves %d clusters, want all 3", n)
	}

	// Upstream returns without service 2 and with service 0 changed.
	next := map[resolver.Key]*resolver.Service{fleet.Key(0): fleet.New(1, 5)[fleet.Key(0)], fleet.Key(1): services[fleet.Key(1)]}
	upstream(t, addr, next)
	testkit.Eventually(t, "the agent applies upstream's state", func() bool {
		s := down.last()[resource.KindGRPC]
		now, ok := s.Get(resourcev3.EndpointType, name(0))
		_, gone := s.Get(resourcev3.ClusterType, name(2))
		return len(clusters()) == 2 && !gone && ok && now.Version != before.Version
	})
}

// An upstream state bigger than the cache's bounds is refused: NACKed with the reason (Holdfast
// records it) and not served.
func TestAgentRefusesWhatExceedsItsBounds(t *testing.T) {
	up, addr := upstream(t, "", fleet.New(3, 2))
	down := &captured{}
	// 3 services are 3 resources of each type; 5 in all fit clusters and some assignments only.
	a, err := New(Options{Upstream: addr, NodeID: "small", Kinds: []resource.Kind{resource.KindGRPC}, Downstream: down, MaxResources: 5,
		SettleTimeout: 50 * time.Millisecond, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	var detail string
	testkit.Eventually(t, "Holdfast records the agent's refusal", func() bool {
		for _, c := range up.Clients() {
			if c.NodeID == "small" && len(c.Nacks) > 0 {
				detail = c.Nacks[0].Detail
				return true
			}
		}
		return false
	})
	if !strings.Contains(detail, "cache limits exceeded (6 resources of 5") {
		t.Errorf("NACK detail = %q", detail)
	}
	if n := a.Status().Counts[resource.KindGRPC]; n > 5 {
		t.Errorf("the agent holds %d resources, over its bound of 5", n)
	}
}

// scriptedUpstream is an ADS server that sends the agent what a test hands it, on the agent's
// open Delta stream, and passes on the agent's answers.
type scriptedUpstream struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	send    chan *discoveryv3.DeltaDiscoveryResponse
	answers chan *discoveryv3.DeltaDiscoveryRequest
	end     chan struct{} // a receive ends the current stream
}

func (u *scriptedUpstream) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	go func() {
		for {
			req, err := st.Recv()
			if err != nil {
				return
			}
			if req.GetResponseNonce() != "" {
				u.answers <- req
			}
		}
	}()
	for {
		select {
		case r := <-u.send:
			if err := st.Send(r); err != nil {
				return err
			}
		case <-u.end:
			return errors.New("stream ended by the test")
		case <-st.Context().Done():
			return nil
		}
	}
}

func startScripted(t *testing.T) (*scriptedUpstream, string) {
	t.Helper()
	u := &scriptedUpstream{send: make(chan *discoveryv3.DeltaDiscoveryResponse), answers: make(chan *discoveryv3.DeltaDiscoveryRequest, 100), end: make(chan struct{})}
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, u)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return u, lis.Addr().String()
}

// respond sends one Delta response of typ with rs and the removed names, and waits for the
// agent's answer to it.
func (u *scriptedUpstream) respond(t *testing.T, typ resourcev3.Type, nonce string, rs map[string]*resource.Resource, removed ...string) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typ, Nonce: nonce, RemovedResources: removed}
	for _, r := range rs {
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: r.Name, Version: r.Version, Resource: r.Any})
	}
	select {
	case u.send <- resp:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent never opened its stream")
	}
	for {
		select {
		case ack := <-u.answers:
			if ack.GetResponseNonce() == nonce {
				return ack
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer to %s %s", typ, nonce)
		}
	}
}

// TestAgentServesOnlyCompleteViews: the agent serves local clients a kind's view only once
// upstream has answered every type on the stream and the view is closed under references; what
// arrives one type at a time (clusters first) is not served half-way, so no local client is
// ever told its listeners are gone. A removal reaches local clients only from a complete view,
// and a stream that ends before it answered every type leaves them what they have.
func TestAgentServesOnlyCompleteViews(t *testing.T) {
	res := fleetResources(t, 2, 2)[resource.KindGRPC]
	u, addr := startScripted(t)
	down := &captured{}
	a, err := New(Options{Upstream: addr, NodeID: "n", Kinds: []resource.Kind{resource.KindGRPC}, Downstream: down,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = a.Run(ctx) }()
	published := func() int { down.mu.Lock(); defer down.mu.Unlock(); return down.n }

	for i, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType} {
		if ack := u.respond(t, typ, fmt.Sprint("a", i), res[typ]); ack.GetErrorDetail() != nil {
			t.Fatalf("%s NACKed: %v", typ, ack.GetErrorDetail())
		}
		if n := published(); n != 0 {
			t.Fatalf("after %s alone the agent served something (%d snapshots)", typ, n)
		}
		if st := a.Status(); st.Ready || len(st.NotReady) != 1 || !strings.Contains(st.NotReady[0], "has not answered") {
			t.Fatalf("status after %s: %+v", typ, st)
		}
	}
	u.respond(t, resourcev3.RouteType, "a3", res[resourcev3.RouteType])
	if n := published(); n != 1 {
		t.Fatalf("the complete view was published in %d steps, want 1", n)
	}
	for _, typ := range resource.Served {
		if got := len(down.last()[resource.KindGRPC].List(typ)); got != 2 {
			t.Fatalf("%s: %d served, want 2", typ, got)
		}
	}
	if !a.Status().Ready {
		t.Fatal("not ready with a complete view")
	}

	// Service 1 goes, one type at a time as Holdfast pushes it: clusters first. Until the view is
	// closed again (no route pointing at the removed cluster), local clients keep it all.
	naming := translate.Naming{Domain: "cluster.local"}
	gone := naming.Resource(fleet.Key(1), 80)
	u.respond(t, resourcev3.ClusterType, "b0", nil, gone)
	u.respond(t, resourcev3.EndpointType, "b1", nil, gone)
	if n := published(); n != 1 {
		t.Fatalf("a removal reached local clients from an incomplete view (%d snapshots)", n)
	}
	if st := a.Status(); !st.Ready || !strings.Contains(st.Upstream["grpc"].Waiting, "not closed under references") {
		t.Fatalf("status while the removal is incomplete: %+v", st.Upstream["grpc"])
	}
	u.respond(t, resourcev3.ListenerType, "b2", nil, gone)
	u.respond(t, resourcev3.RouteType, "b3", nil, gone)
	if n := published(); n != 2 {
		t.Fatalf("the complete removal was published in %d steps, want one more", n-1)
	}
	for _, typ := range resource.Served {
		if _, ok := down.last()[resource.KindGRPC].Get(typ, gone); ok {
			t.Errorf("%s %s still served", typ, gone)
		}
	}

	// A new stream that answers three types and ends: nothing changes for local clients.
	u.end <- struct{}{}
	for i, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType} {
		u.respond(t, typ, fmt.Sprint("c", i), nil)
	}
	if n := published(); n != 2 {
		t.Fatalf("a partial stream published %d more snapshots", n-2)
	}
}

// TestAgentPartialCacheRefused: a cache file that does not hold a complete view of every
// configured kind — a type missing (an agent killed before its first complete sync used to write
// only clusters), a kind missing, references not closed — is refused on load with its reason,
// and nothing is served from it.
func TestAgentPartialCacheRefused(t *testing.T) {
	full := fleetResources(t, 3, 2)
	onlyClusters := resources{}
	for k, types := range full {
		onlyClusters[k] = typeSet{resourcev3.ClusterType: types[resourcev3.ClusterType]}
	}
	oneKind := resources{resource.KindGRPC: full[resource.KindGRPC]}
	dangling := resources{}
	for k, types := range full {
		dangling[k] = maps.Clone(types)
		dangling[k][resourcev3.EndpointType] = map[string]*resource.Resource{} // clusters without assignments
	}
	for _, tt := range []struct {
		name string
		res  resources
		want string
	}{
		{"only clusters", onlyClusters, "no type.googleapis.com/envoy.config.endpoint"},
		{"a kind missing", oneKind, "no envoy resources"},
		{"not closed", dangling, "is not in the snapshot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			data, err := encodeCache(tt.res, time.Now(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, cacheFileName), data, 0o600); err != nil {
				t.Fatal(err)
			}
			down := &captured{}
			a, err := New(Options{Upstream: "127.0.0.1:1", NodeID: "n", CacheDir: dir, Downstream: down})
			if err != nil {
				t.Fatal(err)
			}
			err = a.LoadCache()
			var le *cache.LoadError
			if !errors.As(err, &le) || le.Reason != "incomplete" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("load: %v, want reason incomplete saying %q", err, tt.want)
			}
			if down.last() != nil {
				t.Error("something was served from a refused cache")
			}
			if st := a.Status(); st.Ready || st.Cache.ServingRestored || len(st.NotReady) != 2 {
				t.Errorf("status = %+v", st)
			}
		})
	}
	// A complete cache with an empty type (no services at all) is a complete view.
	empty := resources{}
	for _, k := range []resource.Kind{resource.KindGRPC, resource.KindEnvoy} {
		empty[k] = typeSet{}
		for _, typ := range resource.Served {
			empty[k][typ] = map[string]*resource.Resource{}
		}
	}
	dir := t.TempDir()
	data, err := encodeCache(empty, time.Now(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, cacheFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Upstream: "127.0.0.1:1", NodeID: "n", CacheDir: dir, Downstream: &captured{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.LoadCache(); err != nil || !a.Status().Ready {
		t.Errorf("an empty but complete cache: %v, ready %v", err, a.Status().Ready)
	}
}

// TestAgentPresentsItsPlace: the agent says upstream where its local clients are — zone,
// region and cluster — so that Holdfast orders endpoints for them.
func TestAgentPresentsItsPlace(t *testing.T) {
	a, err := New(Options{Upstream: "127.0.0.1:1", NodeID: "n", Zone: "z1", Region: "r1", ClusterID: "east",
		Kinds: []resource.Kind{resource.KindGRPC}, Downstream: &captured{}})
	if err != nil {
		t.Fatal(err)
	}
	n := a.node(resource.KindGRPC)
	if got := resource.LocalityOf(n); got != (resource.Locality{Zone: "z1", Region: "r1", Cluster: "east"}) {
		t.Errorf("the agent presents %+v", got)
	}
	if k, known := resource.KindOf(n); k != resource.KindGRPC || !known {
		t.Errorf("the agent presents kind %s (known %v)", k, known)
	}
}
