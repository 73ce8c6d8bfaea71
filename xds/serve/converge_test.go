package serve

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/fleet"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/resource"
)

// envoyLike is an ADS client for tests that applies what it is sent: wildcard CDS, EDS for
// the names it is told to want. It ACKs everything.
type envoyLike struct {
	delta bool
	have  map[string]string // EDS name → version
}

// TestStreamsConvergeUnderRandomChanges publishes random sequences of changes, some settled
// before the next (so streams take the O(changed) path) and some in bursts (so they fall back
// to a full comparison), and checks after each settled step that SotW and Delta clients hold
// exactly the current assignments they subscribed to, and that the SotW version kept up to
// date change by change equals the one computed from scratch.
func TestStreamsConvergeUnderRandomChanges(t *testing.T) {
	t.Run("no locality", func(t *testing.T) { streamsConverge(t, nil) })
	// Endpoints are spread over zone-0..2: a client in zone-1 is served variants.
	t.Run("zone-1", func(t *testing.T) { streamsConverge(t, &corev3.Locality{Zone: "zone-1"}) })
}

func streamsConverge(t *testing.T, loc *corev3.Locality) {
	srv, conn, publish := testServer(t)
	rng := rand.New(rand.NewPCG(1, 2))
	services := fleet.New(40, 3)
	gen := uint64(1)
	view := func() cache.View {
		gen++
		return cache.View{Services: maps.Clone(services), Synced: true, Generation: gen}
	}
	publish(view())
	name := func(i int) string { return testTranslator.Naming.Resource(fleet.Key(i), 80) }
	// Both clients want services 0..29 (30..39 are never subscribed; some are deleted and
	// re-created along the way).
	var wanted []string
	for i := range 30 {
		wanted = append(wanted, name(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	node := &corev3.Node{Id: "e", UserAgentName: "envoy", Locality: loc}
	sotw, delta := &envoyLike{have: map[string]string{}}, &envoyLike{delta: true, have: map[string]string{}}
	sst, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sst.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNames: wanted}); err != nil {
		t.Fatal(err)
	}
	if err := dst.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: wanted}); err != nil {
		t.Fatal(err)
	}
	sin, din := responses(sst.Recv), responses(dst.Recv)
	// apply takes one response (or waits up to 50 ms for one), applies it and ACKs it.
	apply := func() {
		{
			select {
			case r, ok := <-sin:
				if !ok {
					t.Fatal("SotW stream ended")
				}
				for _, a := range r.Resources {
					m, err := a.UnmarshalNew()
					if err != nil {
						t.Fatal(err)
					}
					sotw.have[resource.NameOf(m)] = fmt.Sprintf("%016x", resource.Hash(a.Value)) // SotW carries no version per resource: compare bytes
				}
				if err := sst.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNames: wanted, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
					t.Fatal(err)
				}
			case r, ok := <-din:
				if !ok {
					t.Fatal("Delta stream ended")
				}
				for _, res := range r.Resources {
					delta.have[res.Name] = res.Version
				}
				for _, n := range r.RemovedResources {
					delete(delta.have, n)
				}
				if err := dst.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResponseNonce: r.Nonce}); err != nil {
					t.Fatal(err)
				}
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	// converged says what differs between the clients and the current snapshot, "" if nothing.
	converged := func() string {
		idx := srv.snapshot(resource.KindEnvoy).index(resourcev3.EndpointType).at(resource.LocalityOf(node))
		want := map[string]string{}
		var set uint64
		for _, n := range wanted {
			if r, ok := idx.byName[n]; ok {
				want[n] = r.Version
				set ^= r.Hash()
			}
		}
		if !maps.Equal(delta.have, want) {
			return fmt.Sprintf("Delta client holds %v, want %v", delta.have, want)
		}
		// SotW EDS cannot remove: the client keeps assignments of deleted services until
		// their clusters go. Everything that exists must be current.
		for n := range want {
			r := idx.byName[n]
			if v := fmt.Sprintf("%016x", resource.Hash(r.Any.Value)); sotw.have[n] != v {
				return fmt.Sprintf("SotW client holds %s with bytes %q, want %q", n, sotw.have[n], v)
			}
		}
		// The version the server keeps for the SotW client's set, change by change, is the one
		// computed from scratch. (The client itself is not told of a removal alone: SotW EDS
		// has no way to say it, so its version_info can lag.)
		srv.mu.Lock()
		var got string
		for _, st := range srv.streams {
			if st.flavour == flavourSotW {
				st.mu.Lock()
				got = st.types[resourcev3.EndpointType].sotw.version
				st.mu.Unlock()
			}
		}
		srv.mu.Unlock()
		if got != setVersion(set) {
			return fmt.Sprintf("SotW version %s, want %s (computed from scratch)", got, setVersion(set))
		}
		return ""
	}
	check := func(step int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			diff := converged()
			if diff == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d: not converged after 5s: %s", step, diff)
			}
			apply()
		}
	}
	check(0)
	for step := 1; step <= 60; step++ {
		burst := 1
		if step%4 == 0 {
			burst = 3 // published back to back: streams are mid-response and skip an index
		}
		for range burst {
			for range 1 + rng.IntN(3) {
				i := rng.IntN(40)
				k := fleet.Key(i)
				switch s, ok := services[k]; {
				case !ok:
					services[k] = fleet.New(i+1, 2)[k]
				case rng.IntN(5) == 0:
					delete(services, k)
				default:
					eps := slices.Clone(s.Ports[0].Endpoints)
					eps[0].Port = 8000 + rng.Int32N(1000)
					services[k] = withEndpointList(s, eps)
				}
			}
			publish(view())
		}
		check(step)
	}
	// Both clients want most of the index and hold what they want: their streams keep it as
	// the index plus exceptions, not as maps of their own.
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, st := range srv.streams {
		st.mu.Lock()
		ts := st.types[resourcev3.EndpointType]
		compact := ts.names.base != nil && ts.sent.base != nil
		st.mu.Unlock()
		if !compact {
			t.Errorf("%s stream: EDS state not compact (names on an index: %v, sent on an index: %v)", st.flavour, ts.names.base != nil, ts.sent.base != nil)
		}
	}
}

func withEndpointList(s *resolver.Service, eps []resolver.Endpoint) *resolver.Service {
	out := *s
	out.Ports = slices.Clone(s.Ports)
	out.Ports[0].Endpoints = eps
	return &out
}
