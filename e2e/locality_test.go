package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/netns"
	"github.com/holdfast/holdfast/xds/bootstrap"
)

const testRegion = "region-1"

// zoneScene is a service with two backends on each of two nodes, in zones a and b.
type zoneScene struct {
	ns       string
	h        *harness.Holdfast
	target   string
	nets     map[string]*netns.Network     // by zone
	backends map[string]*harness.Backend   // a1, a2 (zone-a), b1, b2 (zone-b)
	zoneOf   map[string]string             // backend → zone
	nodes    map[string]string             // zone → the name of the Node object for it
	slice    func(withZone, withNode bool) // (re)writes the service's EndpointSlice
	// envoyAddr is where Holdfast binds Envoy's listeners: a loopback address of this scene's
	// own, since its Envoy (envoyClient) must reach both zones' namespaces from the host's.
	envoyAddr netip.Addr
}

// newZoneScene starts the nodes' namespaces and backends, Node objects labelled with their
// zone and region, the service, and a Holdfast watching the test's namespace.
func newZoneScene(t *testing.T, holdfastFlags ...string) *zoneScene {
	t.Helper()
	ctx := testContext(t)
	sc := &zoneScene{ns: newNamespace(t), nets: map[string]*netns.Network{}, backends: map[string]*harness.Backend{},
		zoneOf: map[string]string{}, nodes: map[string]string{}}
	for _, zone := range []string{"zone-a", "zone-b"} {
		// The two "nodes": a network namespace each, on /24s of their own, in zones zone-a
		// and zone-b of one region.
		n := ownNetwork(ctx, t, "hf-"+zone)
		sc.nets[zone] = n
		letter := zone[len(zone)-1:]
		for i := 1; i <= 2; i++ {
			id := fmt.Sprintf("%s%d", letter, i)
			b, err := harness.StartBackend(ctx, n, env.bins.Backend, id, grpcPort.target)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Kill)
			sc.backends[id], sc.zoneOf[id] = b, zone
		}
		node := sc.ns + "-node-" + letter
		sc.nodes[zone] = node
		createNode(t, node, zone)
	}
	createService(t, sc.ns, "echo", grpcPort)
	sc.target = target(sc.ns, "echo", grpcPort.port)
	sc.slice = func(withZone, withNode bool) {
		t.Helper()
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: sc.ns, Name: "echo-1", Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr(grpcPort.name), Port: ptr(grpcPort.target), Protocol: ptr(corev1.ProtocolTCP)}},
		}
		for _, id := range slices.Sorted(maps.Keys(sc.backends)) {
			e := discoveryv1.Endpoint{Addresses: []string{sc.backends[id].Addr.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}
			if withZone {
				e.Zone = ptr(sc.zoneOf[id])
			}
			if withNode {
				e.NodeName = ptr(sc.nodes[sc.zoneOf[id]])
			}
			s.Endpoints = append(s.Endpoints, e)
		}
		c := env.cluster.Client.DiscoveryV1().EndpointSlices(sc.ns)
		existing, err := c.Get(context.Background(), s.Name, metav1.GetOptions{})
		if err == nil {
			s.ResourceVersion = existing.ResourceVersion
			_, err = c.Update(context.Background(), s, metav1.UpdateOptions{})
		} else {
			_, err = c.Create(context.Background(), s, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("write endpointslice: %v", err)
		}
	}
	sc.slice(true, true)
	sc.envoyAddr = loopbackAddr()
	sc.h = startHoldfastOn(t, env.cluster, sc.ns, append([]string{"--envoy-listen-address", sc.envoyAddr.String()}, holdfastFlags...)...)
	return sc
}

// envoyClient starts a real Envoy in zone (Delta, from `holdfast bootstrap --envoy --zone`)
// and returns a plain gRPC channel that sends through it, as the application beside it would.
func (sc *zoneScene) envoyClient(ctx context.Context, t *testing.T, zone string) (*harness.GRPCClient, *harness.Envoy) {
	t.Helper()
	b, err := exec.CommandContext(ctx, env.bins.Holdfast, "bootstrap", "--envoy", "--delta", "--node-id", "envoy-"+zone,
		"--server", sc.h.XDSAddr, "--zone", zone, "--region", testRegion).Output()
	if err != nil {
		t.Fatalf("holdfast bootstrap --envoy: %v", err)
	}
	return envoyVia(ctx, t, nil, sc.envoyAddr, b, sc.target, grpcPort.port)
}

// createNode creates a Node object (no kubelet behind it) with Kubernetes' topology labels.
func createNode(t *testing.T, name, zone string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		corev1.LabelTopologyZone: zone, corev1.LabelTopologyRegion: testRegion}}}
	if _, err := env.cluster.Client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = env.cluster.Client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// client dials the service as a grpc-go client whose bootstrap puts it in zone ("" for none).
func (sc *zoneScene) client(t *testing.T, zone string, opts ...grpc.DialOption) *harness.GRPCClient {
	t.Helper()
	o := bootstrap.Options{NodeID: "app-" + zone, Server: sc.h.XDSAddr}
	if zone != "" {
		o.Zone, o.Region = zone, testRegion
	}
	c, err := harness.DialXDSWith(o, sc.target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// onlyHits makes n RPCs and fails unless every one succeeds on a backend in want, and every
// backend in want answers.
func onlyHits(ctx context.Context, t *testing.T, c *harness.GRPCClient, n int, want ...string) {
	t.Helper()
	hits, failures, err := c.Spread(ctx, n)
	if failures > 0 || !slices.Equal(slices.Sorted(maps.Keys(hits)), want) {
		t.Fatalf("%d RPCs: hits %s, %d failures (last: %v); want all on %v", n, harness.HitsString(hits), failures, err, want)
	}
}

func TestLocalityPrefersOwnZone(t *testing.T) {
	t.Parallel()
	sc := newZoneScene(t)
	ctx := testContext(t)
	a, b := sc.client(t, "zone-a"), sc.client(t, "zone-b")
	if err := a.WaitForBackends(ctx, "a1", "a2"); err != nil {
		t.Fatal(err)
	}
	onlyHits(ctx, t, a, 200, "a1", "a2")
	if err := b.WaitForBackends(ctx, "b1", "b2"); err != nil {
		t.Fatal(err)
	}
	onlyHits(ctx, t, b, 200, "b1", "b2")

	// An Envoy in zone a gets the same priorities, and a cluster whose outlier detection can
	// eject a whole zone (Envoy's default would stop at 10% of hosts).
	envoy, err := adsclient.Dial(sc.h.XDSAddr, adsclient.Options{NodeID: "envoy-a", Zone: "zone-a", Region: testRegion})
	if err != nil {
		t.Fatal(err)
	}
	defer envoy.Close()
	want := map[string]uint32{}
	for id, be := range sc.backends {
		want[be.Addr.String()] = map[string]uint32{"zone-a": 0, "zone-b": 1}[sc.zoneOf[id]]
	}
	var got map[string]uint32
	err = envoy.WaitFor(ctx, func(s adsclient.State) bool {
		r, ok := s.Upstream(resourcev3.EndpointType, sc.target)
		if !ok {
			return false
		}
		got = endpointPriorities(r.Message.(*endpointv3.ClusterLoadAssignment))
		c, ok := s.Upstream(resourcev3.ClusterType, sc.target)
		if !ok {
			return false
		}
		od := c.Message.(*clusterv3.Cluster).GetOutlierDetection()
		return od.GetMaxEjectionPercent().GetValue() == 100 && od.GetEnforcingConsecutiveGatewayFailure().GetValue() == 100 && maps.Equal(got, want)
	})
	if err != nil {
		t.Fatalf("Envoy-like client in zone-a: priorities %v, want %v: %v", got, want, err)
	}
	if st := envoy.Stats(); len(st.Invalid) > 0 {
		t.Fatalf("resources that fail ValidateAll: %v", st.Invalid)
	}

	// CSDS shows each client the assignment its locality gets, as synced.
	conn, err := grpc.NewClient(sc.h.AdminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, zone := range []string{"zone-a", "zone-b"} {
		resp, err := statusv3.NewClientStatusDiscoveryServiceClient(conn).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{
			NodeMatchers: []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "app-" + zone}}}}})
		if err != nil || len(resp.GetConfig()) != 1 {
			t.Fatalf("CSDS for app-%s: %v, %v", zone, resp, err)
		}
		var found bool
		for _, g := range resp.GetConfig()[0].GetGenericXdsConfigs() {
			if g.GetTypeUrl() != resourcev3.EndpointType {
				continue
			}
			found = true
			var cla endpointv3.ClusterLoadAssignment
			if g.GetClientStatus() != adminv3.ClientResourceStatus_ACKED || g.GetConfigStatus() != statusv3.ConfigStatus_SYNCED || g.GetXdsConfig().UnmarshalTo(&cla) != nil {
				t.Fatalf("CSDS for app-%s: %v", zone, g)
			}
			for id, be := range sc.backends {
				want := uint32(1)
				if sc.zoneOf[id] == zone {
					want = 0
				}
				if got := endpointPriorities(&cla)[be.Addr.String()]; got != want {
					t.Errorf("CSDS for app-%s: %s at priority %d, want %d", zone, id, got, want)
				}
			}
		}
		if !found {
			t.Errorf("CSDS for app-%s shows no assignment", zone)
		}
	}
}

func endpointPriorities(cla *endpointv3.ClusterLoadAssignment) map[string]uint32 {
	out := map[string]uint32{}
	for _, le := range cla.GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			out[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = le.GetPriority()
		}
	}
	return out
}

// failoverBound is how many RPCs may fail while a dead zone is left: the ones in flight or
// picked before grpc-go sees every connection of the zone fail, or before Envoy ejects the
// zone's hosts. Measured: 0–2 (grpc-go), 1 (Envoy, with the retry of its routes).
const failoverBound = 10

func TestLocalityFailsOverWhenZoneDies(t *testing.T) {
	t.Parallel()
	sc := newZoneScene(t)
	ctx := testContext(t)
	a := sc.client(t, "zone-a")
	viaEnvoy, _ := sc.envoyClient(ctx, t, "zone-a")
	clients := []struct {
		name harness.Impl
		c    *harness.GRPCClient
		log  *load
	}{{name: harness.ImplGo, c: a}, {name: harness.ImplEnvoy, c: viaEnvoy}}
	for i := range clients {
		if err := clients[i].c.WaitForBackends(ctx, "a1", "a2"); err != nil {
			t.Fatalf("%s: %v", clients[i].name, err)
		}
		clients[i].log = logCalls(clients[i].c)
		defer clients[i].log.finish() //nolint:errcheck // failures are counted from the log
	}

	// Zone a's backends die; its EndpointSlice still lists them as ready, as Kubernetes does
	// until the node is noticed. The client moves to zone b by itself: grpc-go when its
	// connections fail, Envoy when outlier detection ejects the zone's hosts (Holdfast's
	// clusters let it eject all of them: 3 gateway failures in a row each), its route retrying
	// on another host what never reached one meanwhile (without that retry: 105–133 failed).
	marks := make([]int, len(clients))
	for i, c := range clients {
		marks[i] = c.log.mark()
	}
	killed := time.Now()
	addrs := map[string]netip.Addr{}
	for _, id := range []string{"a1", "a2"} {
		addrs[id] = sc.backends[id].Addr
		sc.backends[id].Kill()
	}
	for i, c := range clients {
		failures := c.log.waitSettled(ctx, t, sc, marks[i], "zone-b")
		t.Logf("%s: zone a died: calls on zone b after %v, %d failed", c.name, time.Since(killed).Round(time.Millisecond), failures)
		record("zone failover through priorities: own zone's backends killed", string(c.name), fmt.Sprintf("moves to the other zone; %d RPCs failed", failures))
		if failures > failoverBound {
			t.Errorf("%s: %d RPCs failed while failing over to zone b, want at most %d", c.name, failures, failoverBound)
		}
	}

	// Zone a comes back at the same addresses: traffic returns, and nothing fails (Envoy
	// returns when its ejection time, 15 s, is over).
	for i, c := range clients {
		marks[i] = c.log.mark()
	}
	back := time.Now()
	for _, id := range []string{"a1", "a2"} {
		b, err := harness.StartBackendAt(ctx, sc.nets["zone-a"], env.bins.Backend, id, addrs[id], grpcPort.target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Kill)
		sc.backends[id] = b
	}
	for i, c := range clients {
		failures := c.log.waitSettled(ctx, t, sc, marks[i], "zone-a")
		t.Logf("%s: zone a back: calls on zone a after %v, %d failed", c.name, time.Since(back).Round(time.Millisecond), failures)
		if failures > 0 {
			t.Errorf("%s: %d RPCs failed while zone a came back", c.name, failures)
		}
	}
}

func TestLocalityNoZoneInfo(t *testing.T) {
	t.Parallel()
	sc := newZoneScene(t)
	ctx := testContext(t)
	all := []string{"a1", "a2", "b1", "b2"}

	t.Run("a client without locality gets every endpoint at one priority", func(t *testing.T) {
		c := sc.client(t, "")
		if err := c.WaitForBackends(ctx, all...); err != nil {
			t.Fatal(err)
		}
	})

	a := sc.client(t, "zone-a")
	if err := a.WaitForBackends(ctx, "a1", "a2"); err != nil {
		t.Fatal(err)
	}
	t.Run("endpoints without zone or node get one priority", func(t *testing.T) {
		sc.slice(false, false)
		if err := a.WaitForBackends(ctx, all...); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a zone missing from the slice comes from the endpoint's Node", func(t *testing.T) {
		sc.slice(false, true)
		if err := a.WaitForBackends(ctx, "a1", "a2"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a Node's zone label change moves its endpoints", func(t *testing.T) {
		nodes := env.cluster.Client.CoreV1().Nodes()
		n, err := nodes.Get(ctx, sc.nodes["zone-a"], metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Labels[corev1.LabelTopologyZone] = "zone-c"
		if _, err := nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Nothing is in zone a any more; everything is in the client's region.
		if err := a.WaitForBackends(ctx, all...); err != nil {
			t.Fatal(err)
		}
	})
}

// linkDownBound: with zone a's link down, RPCs sent on its connections can wait for their 2 s
// deadline until the connections are declared dead — at worst by keepalive (grpc-go's
// shortest: a ping after 10 s without reads, 2 s for its answer), about 12 s / 2 s of them
// plus those in flight. Measured: 3 failures, zone b after 4.6 s (the blackhole route fails
// the writes sooner than keepalive would).
const linkDownBound = 12

// With zone a's node off the network (its processes alive, its packets lost) the client,
// which has keepalive on as it should, moves to zone b; and back when the link returns.
func TestLocalityFailsOverWhenZoneLinkDown(t *testing.T) {
	t.Parallel()
	sc := newZoneScene(t)
	ctx := testContext(t)
	a := sc.client(t, "zone-a", grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}))
	if err := a.WaitForBackends(ctx, "a1", "a2"); err != nil {
		t.Fatal(err)
	}
	log := logCalls(a)
	defer log.finish() //nolint:errcheck // failures are counted from the log
	mark := log.mark()
	down := time.Now()
	if err := sc.nets["zone-a"].SetLink(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.nets["zone-a"].SetLink(context.Background(), true) })
	failures := log.waitSettled(ctx, t, sc, mark, "zone-b")
	t.Logf("zone a's link down: calls on zone b after %v, %d failed", time.Since(down).Round(time.Millisecond), failures)
	if failures > linkDownBound {
		t.Errorf("%d RPCs failed while failing over to zone b, want at most %d", failures, linkDownBound)
	}
	mark = log.mark()
	up := time.Now()
	if err := sc.nets["zone-a"].SetLink(ctx, true); err != nil {
		t.Fatal(err)
	}
	failures = log.waitSettled(ctx, t, sc, mark, "zone-a")
	t.Logf("zone a's link up: calls on zone a after %v, %d failed", time.Since(up).Round(time.Millisecond), failures)
	if failures > 0 {
		t.Errorf("%d RPCs failed while zone a came back", failures)
	}
}

// With closeness off by default, a Service that asks for it (trafficDistribution: PreferClose)
// gets it, and EndpointSlice hints name the zones that consume each endpoint.
func TestLocalityHonoursServiceChoiceAndHints(t *testing.T) {
	t.Parallel()
	sc := newZoneScene(t, "--locality-default", "off")
	ctx := testContext(t)
	a := sc.client(t, "zone-a")
	if err := a.WaitForBackends(ctx, "a1", "a2", "b1", "b2"); err != nil {
		t.Fatalf("default off: %v", err)
	}
	svcs := env.cluster.Client.CoreV1().Services(sc.ns)
	svc, err := svcs.Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.TrafficDistribution = ptr(corev1.ServiceTrafficDistributionPreferClose)
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitForBackends(ctx, "a1", "a2"); err != nil {
		t.Fatalf("PreferClose: %v", err)
	}
	// Every endpoint hinted for the other zone: zone a's clients should use zone b's endpoints.
	slices := env.cluster.Client.DiscoveryV1().EndpointSlices(sc.ns)
	s, err := slices.Get(ctx, "echo-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range s.Endpoints {
		other := map[string]string{"zone-a": "zone-b", "zone-b": "zone-a"}[*s.Endpoints[i].Zone]
		s.Endpoints[i].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: other}}}
	}
	if _, err := slices.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitForBackends(ctx, "b1", "b2"); err != nil {
		t.Fatalf("hints: %v", err)
	}
}
