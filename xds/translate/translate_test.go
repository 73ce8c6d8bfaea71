package translate

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/internal/xdstest"
	"github.com/holdfast/holdfast/xds/resource"
)

func TestNaming(t *testing.T) {
	n := Naming{Domain: "example.org"}
	k := resolver.Key{Namespace: "shop", Name: "cart"}
	if got, want := n.Resource(k, 8080), "cart.shop.svc.example.org:8080"; got != want {
		t.Errorf("Resource = %q, want %q", got, want)
	}
	want := []string{"cart.shop.svc.example.org", "cart.shop.svc.example.org:80", "cart.shop.svc", "cart.shop.svc:80", "cart.shop", "cart.shop:80"}
	if got := n.Domains(k, 80); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Domains = %v, want %v", got, want)
	}
	if got := Outbound(443); got != "outbound_443" {
		t.Errorf("Outbound = %q", got)
	}
	// The cluster set's service: the MCS API's name whatever the cluster domain, and only
	// that name (the short forms are the cluster's own service's).
	cs := resolver.Key{Namespace: "shop", Name: "cart", ClusterSet: true}
	if got, want := n.Resource(cs, 8080), "cart.shop.svc.clusterset.local:8080"; got != want {
		t.Errorf("Resource(cluster set) = %q, want %q", got, want)
	}
	want = []string{"cart.shop.svc.clusterset.local", "cart.shop.svc.clusterset.local:80"}
	if got := n.Domains(cs, 80); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Domains(cluster set) = %v, want %v", got, want)
	}
	for _, c := range []struct{ uid, want string }{
		{"3f2a9c1e-77aa-4c1b-9f00-0123456789ab", "cart.shop.svc.example.org:8080~3f2a9c1e"},
		{"", "cart.shop.svc.example.org:8080"},
		{"short", "cart.shop.svc.example.org:8080"},
		{"3f2a/9c1e-77aa", "cart.shop.svc.example.org:8080"}, // not a UID's characters: no suffix
	} {
		got := n.Upstream(k, c.uid, 8080)
		if got != c.want {
			t.Errorf("Upstream(%q) = %q, want %q", c.uid, got, c.want)
		}
		if ServiceOf(got) != n.Resource(k, 8080) {
			t.Errorf("ServiceOf(%q) = %q", got, ServiceOf(got))
		}
	}
}

func TestAssignment(t *testing.T) {
	eps := []resolver.Endpoint{
		{Address: "10.0.0.1", Port: 8080, Ready: true, Serving: true, Zone: "b"},
		{Address: "10.0.0.2", Port: 8080, Ready: true, Serving: true, Zone: "a"},
		{Address: "10.0.0.3", Port: 8080, Serving: true, Terminating: true, Zone: "a"},
		{Address: "10.0.0.4", Port: 8080, Zone: "a"}, // not serving: left out
		{Address: "fd00::5", Port: 8080, Ready: true, Serving: true, Zone: "a"},
	}
	cla := assignment("svc", eps, nil)
	if err := cla.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	type row struct {
		zone, addr string
		health     corev3.HealthStatus
	}
	var got []row
	for _, l := range cla.Endpoints {
		if w := l.LoadBalancingWeight.GetValue(); w != uint32(len(l.LbEndpoints)) {
			t.Errorf("zone %q weight %d, want %d", l.Locality.Zone, w, len(l.LbEndpoints))
		}
		for _, e := range l.LbEndpoints {
			got = append(got, row{l.Locality.Zone, e.GetEndpoint().Address.GetSocketAddress().Address, e.HealthStatus})
		}
	}
	want := []row{
		{"a", "10.0.0.2", corev3.HealthStatus_HEALTHY},
		{"a", "10.0.0.3", corev3.HealthStatus_DRAINING},
		{"a", "fd00::5", corev3.HealthStatus_HEALTHY},
		{"b", "10.0.0.1", corev3.HealthStatus_HEALTHY},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("endpoint %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if empty := assignment("svc", nil, nil); len(empty.Endpoints) != 0 || empty.ClusterName != "svc" || empty.ValidateAll() != nil {
		t.Errorf("zero endpoints must give a valid, empty assignment, got %v", empty)
	}
}

// TestAssignmentTerminatingFallback: a port with no ready endpoint anywhere serves its
// serving+terminating endpoints as HEALTHY (kube-proxy's rule, KEP-1669); one ready endpoint
// anywhere, in any zone, makes them DRAINING again. Not-serving endpoints never count.
func TestAssignmentTerminatingFallback(t *testing.T) {
	ready := resolver.Endpoint{Address: "10.0.0.1", Port: 8080, Ready: true, Serving: true, Zone: "b"}
	term1 := resolver.Endpoint{Address: "10.0.0.2", Port: 8080, Serving: true, Terminating: true, Zone: "a"}
	term2 := resolver.Endpoint{Address: "10.0.0.3", Port: 8080, Serving: true, Terminating: true, Zone: "b"}
	gone := resolver.Endpoint{Address: "10.0.0.4", Port: 8080, Terminating: true, Zone: "a"} // not serving
	notReady := resolver.Endpoint{Address: "10.0.0.5", Port: 8080, Zone: "a"}
	tests := []struct {
		name string
		eps  []resolver.Endpoint
		want map[string]corev3.HealthStatus
	}{
		{"all terminating and serving", []resolver.Endpoint{term1, term2},
			map[string]corev3.HealthStatus{"10.0.0.2": corev3.HealthStatus_HEALTHY, "10.0.0.3": corev3.HealthStatus_HEALTHY}},
		{"one ready in another zone", []resolver.Endpoint{ready, term1, term2},
			map[string]corev3.HealthStatus{"10.0.0.1": corev3.HealthStatus_HEALTHY, "10.0.0.2": corev3.HealthStatus_DRAINING, "10.0.0.3": corev3.HealthStatus_DRAINING}},
		{"terminating, not serving, not ready", []resolver.Endpoint{term1, gone, notReady},
			map[string]corev3.HealthStatus{"10.0.0.2": corev3.HealthStatus_HEALTHY}},
		{"nothing serving", []resolver.Endpoint{gone, notReady}, map[string]corev3.HealthStatus{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, prio := range []func(int) uint32{nil, func(i int) uint32 { return uint32(i % 2) }} {
				cla := assignment("svc", tt.eps, prio)
				got := map[string]corev3.HealthStatus{}
				for _, l := range cla.Endpoints {
					for _, e := range l.LbEndpoints {
						got[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = e.HealthStatus
					}
				}
				if !maps.Equal(got, tt.want) {
					t.Errorf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestSpeaksHTTP2(t *testing.T) {
	tests := []struct {
		port resolver.Port
		want bool
	}{
		{resolver.Port{Name: "http"}, false},
		{resolver.Port{Name: "grpc"}, true},
		{resolver.Port{Name: "grpc-api"}, true},
		{resolver.Port{Name: "grpcx"}, false},
		{resolver.Port{Name: "web", AppProtocol: "kubernetes.io/h2c"}, true},
		{resolver.Port{Name: "grpc", AppProtocol: "http"}, false},
		{resolver.Port{Name: "", AppProtocol: "GRPC"}, true},
	}
	for _, tt := range tests {
		if got := speaksHTTP2(&tt.port); got != tt.want {
			t.Errorf("speaksHTTP2(%+v) = %v, want %v", tt.port, got, tt.want)
		}
	}
}

func TestAssembleByClientKind(t *testing.T) {
	a, b := xdstest.TwoServices()
	sets := assembleView(t, testView(a, b))
	grpcSet, envoySet := sets[resource.KindGRPC], sets[resource.KindEnvoy]

	wantShared := "a.ns.svc.cluster.local:80,a.ns.svc.cluster.local:9000,b.other.svc.cluster.local:80"
	for _, kind := range []resource.Kind{resource.KindGRPC, resource.KindEnvoy} {
		for _, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType} {
			if got := strings.Join(resourceNames(sets[kind][typ]), ","); got != wantShared {
				t.Errorf("%s %s = %s, want %s", kind, typ, got, wantShared)
			}
		}
		if err := checkReferences(sets[kind], nil); err != nil {
			t.Errorf("%s references: %v", kind, err)
		}
		for typ, rs := range sets[kind] {
			for _, r := range rs {
				if err := r.(validator).ValidateAll(); err != nil {
					t.Errorf("%s %s %s: %v", kind, typ, resource.NameOf(r), err)
				}
			}
		}
	}
	if got := strings.Join(resourceNames(grpcSet[resourcev3.ListenerType]), ","); got != wantShared {
		t.Errorf("grpc listeners = %s", got)
	}
	if got := strings.Join(resourceNames(envoySet[resourcev3.ListenerType]), ","); got != "outbound_80,outbound_9000" {
		t.Errorf("envoy listeners = %s", got)
	}
	for _, r := range grpcSet[resourcev3.ListenerType] {
		if r.(*listenerv3.Listener).ApiListener == nil {
			t.Errorf("grpc listener %s has no api_listener", resource.NameOf(r))
		}
	}
	for _, r := range envoySet[resourcev3.ListenerType] {
		l := r.(*listenerv3.Listener)
		if l.ApiListener != nil {
			t.Errorf("envoy listener %s has an api_listener: Envoy rejects those over LDS", l.Name)
		}
		if l.Address.GetSocketAddress().GetAddress() != "127.0.0.1" {
			t.Errorf("envoy listener %s binds %v", l.Name, l.Address)
		}
	}
	// outbound_80 has one virtual host per service with port 80.
	for _, r := range envoySet[resourcev3.RouteType] {
		rc := r.(*routev3.RouteConfiguration)
		if rc.Name != "outbound_80" {
			continue
		}
		var hosts []string
		for _, vh := range rc.VirtualHosts {
			hosts = append(hosts, vh.Name)
		}
		if got := strings.Join(hosts, ","); got != "a.ns.svc.cluster.local:80,b.other.svc.cluster.local:80" {
			t.Errorf("outbound_80 virtual hosts = %s", got)
		}
	}
	// Envoy retries, on another host, only what never reached a backend; gRPC clients' routes
	// carry no retry policy (theirs would take gRPC status codes, and retry what a backend saw).
	for _, r := range envoySet[resourcev3.RouteType] {
		for _, vh := range r.(*routev3.RouteConfiguration).VirtualHosts {
			p := vh.Routes[0].GetRoute().GetRetryPolicy()
			if p.GetRetryOn() != "connect-failure,refused-stream,reset-before-request" || p.GetNumRetries().GetValue() != 2 ||
				len(p.GetRetryHostPredicate()) != 1 || p.GetRetryHostPredicate()[0].GetTypedConfig().GetTypeUrl() !=
				"type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" {
				t.Errorf("envoy %s virtual host %s: retry policy %v", resource.NameOf(r), vh.Name, p)
			}
		}
	}
	for _, r := range grpcSet[resourcev3.RouteType] {
		for _, vh := range r.(*routev3.RouteConfiguration).VirtualHosts {
			if p := vh.Routes[0].GetRoute().GetRetryPolicy(); p != nil {
				t.Errorf("grpc %s: retry policy %v", resource.NameOf(r), p)
			}
		}
	}
}

// TestIncarnationsLookNew: the same service deleted and created again (a new UID) with the same
// ports and endpoints differs in every resource a client gets, byte for byte — the listener
// too, which keeps its name and points to the new route configuration — because gRPC C-core
// and grpc-js-xds ignore a resource identical to one they were told no longer exists. The
// listener keeps the name clients dial; the same UID gives the same bytes. (Envoy's
// outbound_<port> listener is shared by every service with the port; its route changes.)
func TestIncarnationsLookNew(t *testing.T) {
	a, _ := xdstest.TwoServices()
	first, second, again := *a, *a, *a
	first.UID, second.UID, again.UID = "11111111-aaaa", "22222222-bbbb", "11111111-aaaa"
	bytesOf := func(s *resolver.Service) map[resource.Kind]map[resourcev3.Type]map[string][]byte {
		out := map[resource.Kind]map[resourcev3.Type]map[string][]byte{}
		for kind, set := range assembleSets(t, testView(s)) {
			out[kind] = map[resourcev3.Type]map[string][]byte{}
			for typ, l := range set {
				out[kind][typ] = map[string][]byte{}
				for _, r := range l {
					out[kind][typ][r.Name] = r.Any.GetValue()
				}
			}
		}
		return out
	}
	one, two, same := bytesOf(&first), bytesOf(&second), bytesOf(&again)
	for kind, types := range one {
		for typ, byName := range types {
			if kind == resource.KindEnvoy && typ == resourcev3.ListenerType {
				continue // outbound_<port> belongs to the port number, not to a service
			}
			for name, b := range byName {
				if !bytes.Equal(same[kind][typ][name], b) {
					t.Errorf("%s %s %s: the same UID gave other bytes", kind, typ, name)
				}
				for name2, b2 := range two[kind][typ] {
					if bytes.Equal(b, b2) {
						t.Errorf("%s %s: %s of the first incarnation and %s of the second are identical", kind, typ, name, name2)
					}
				}
			}
		}
	}
	lis := two[resource.KindGRPC][resourcev3.ListenerType]
	if _, ok := lis["a.ns.svc.cluster.local:80"]; !ok {
		t.Errorf("gRPC listeners %v: the name clients dial must not change", slices.Collect(maps.Keys(lis)))
	}
	for _, typ := range []resourcev3.Type{resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		if _, ok := two[resource.KindGRPC][typ]["a.ns.svc.cluster.local:80~22222222"]; !ok {
			t.Errorf("gRPC %s: %v, want the incarnation in the name", typ, slices.Collect(maps.Keys(two[resource.KindGRPC][typ])))
		}
	}
	if err := checkReferences(plain(assembleSets(t, testView(&second))[resource.KindGRPC]), nil); err != nil {
		t.Errorf("references of the second incarnation: %v", err)
	}
}

// TestRetiredIncarnationServedBeside: while a service created again is within its tombstone's
// grace, its earlier incarnation's cluster, assignment and gRPC route configuration are served
// beside the new incarnation's (make before break: a client moving to the new names never
// finds the old ones gone first); the listener points to the new one, and Envoy's virtual host
// too. A retired incarnation with the same names as the live one adds nothing.
func TestRetiredIncarnationServedBeside(t *testing.T) {
	a, b := xdstest.TwoServices()
	old, cur := *a, *a
	old.UID, cur.UID = "11111111-aaaa", "22222222-bbbb"
	v := testView(&cur, b)
	v.retired = map[resolver.Key]*resolver.Service{a.Key: &old}
	sets := assembleSets(t, v)
	oldName, newName := "a.ns.svc.cluster.local:80~11111111", "a.ns.svc.cluster.local:80~22222222"
	for kind, set := range sets {
		for _, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType} {
			names := resourceNames(resource.Messages(set[typ]))
			if !slices.Contains(names, oldName) || !slices.Contains(names, newName) {
				t.Errorf("%s %s: %v, want both incarnations", kind, typ, names)
			}
		}
		if err := checkReferences(plain(set), nil); err != nil {
			t.Errorf("%s references: %v", kind, err)
		}
	}
	grpcSet := sets[resource.KindGRPC]
	if names := resourceNames(resource.Messages(grpcSet[resourcev3.RouteType])); !slices.Contains(names, oldName) || !slices.Contains(names, newName) {
		t.Errorf("gRPC routes %v, want both incarnations", names)
	}
	for _, r := range grpcSet[resourcev3.ListenerType] {
		if r.Name == "a.ns.svc.cluster.local:80" && !bytes.Contains(r.Any.GetValue(), []byte(newName)) {
			t.Errorf("the listener does not point to the new incarnation's route")
		}
	}
	if n := len(grpcSet[resourcev3.ListenerType]); n != 3 {
		t.Errorf("%d gRPC listeners, want 3: a retired incarnation adds none", n)
	}
	for _, r := range sets[resource.KindEnvoy][resourcev3.RouteType] {
		if bytes.Contains(r.Any.GetValue(), []byte(oldName)) {
			t.Errorf("Envoy route %s still routes to the retired incarnation", r.Name)
		}
	}
	// The same names (no UIDs): nothing added.
	v = testView(a, b)
	v.retired = map[resolver.Key]*resolver.Service{a.Key: a}
	if got, want := len(assembleSets(t, v)[resource.KindGRPC][resourcev3.ClusterType]), len(assembleSets(t, testView(a, b))[resource.KindGRPC][resourcev3.ClusterType]); got != want {
		t.Errorf("%d clusters with a same-named retired incarnation, want %d", got, want)
	}
}

func TestCheckReferences(t *testing.T) {
	a, _ := xdstest.TwoServices()
	tests := []struct {
		name    string
		mutate  func(map[resourcev3.Type][]types.Resource)
		wantErr string
	}{
		{"complete", func(map[resourcev3.Type][]types.Resource) {}, ""},
		{"missing route", func(m map[resourcev3.Type][]types.Resource) { m[resourcev3.RouteType] = m[resourcev3.RouteType][1:] }, "route configuration"},
		{"missing cluster", func(m map[resourcev3.Type][]types.Resource) {
			m[resourcev3.ClusterType] = m[resourcev3.ClusterType][1:]
		}, "cluster"},
		{"missing assignment", func(m map[resourcev3.Type][]types.Resource) {
			m[resourcev3.EndpointType] = m[resourcev3.EndpointType][1:]
		}, "load assignment"},
	}
	for _, kind := range []resource.Kind{resource.KindGRPC, resource.KindEnvoy} {
		for _, tt := range tests {
			t.Run(string(kind)+"/"+tt.name, func(t *testing.T) {
				set := assembleView(t, testView(a))[kind]
				tt.mutate(set)
				err := checkReferences(set, nil)
				switch {
				case tt.wantErr == "" && err != nil:
					t.Fatalf("unexpected error: %v", err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
					t.Fatalf("error %v, want one mentioning %q", err, tt.wantErr)
				}
			})
		}
	}
}

func TestVersionIsContentDerived(t *testing.T) {
	a, b := xdstest.TwoServices()
	v1 := assembleSets(t, testView(a, b))
	a2, b2 := xdstest.TwoServices() // equal content, different pointers
	v2 := assembleSets(t, testView(b2, a2))
	for _, kind := range []resource.Kind{resource.KindGRPC, resource.KindEnvoy} {
		for typ := range v1[kind] {
			if resource.ListVersion(v1[kind][typ]) != resource.ListVersion(v2[kind][typ]) {
				t.Errorf("%s %s: same content, different versions", kind, typ)
			}
		}
	}
	a2.Ports[0].Endpoints = nil
	v3 := assembleSets(t, testView(a2, b2))
	for _, kind := range []resource.Kind{resource.KindGRPC, resource.KindEnvoy} {
		for typ, wantChange := range map[resourcev3.Type]bool{
			resourcev3.EndpointType: true, resourcev3.ClusterType: false, resourcev3.ListenerType: false, resourcev3.RouteType: false,
		} {
			if changed := resource.ListVersion(v1[kind][typ]) != resource.ListVersion(v3[kind][typ]); changed != wantChange {
				t.Errorf("%s %s: version changed = %v after an endpoint change, want %v", kind, typ, changed, wantChange)
			}
		}
	}
	// A new virtual host changes the Envoy route configuration's version.
	c := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: "c"}, Ports: []resolver.Port{{Name: "http", Port: 80}}}
	v4 := assembleSets(t, testView(a, b, c))
	if resource.ListVersion(v1[resource.KindEnvoy][resourcev3.RouteType]) == resource.ListVersion(v4[resource.KindEnvoy][resourcev3.RouteType]) {
		t.Error("a new service on port 80 must change outbound_80's version")
	}
}

func TestInvalidServiceKeepsPreviousResources(t *testing.T) {
	b := NewBuilder(testTranslator)
	a, _ := xdstest.TwoServices()
	b.update(testView(a).services, &Result{})
	before := b.built[a.Key]
	// An empty endpoint address fails Envoy's validation (socket address: min_len 1).
	bad := &resolver.Service{Key: a.Key, Ports: []resolver.Port{{Name: "http", Port: 80, Endpoints: []resolver.Endpoint{{Address: "", Port: 1, Ready: true}}}}}
	b.update(testView(bad).services, &Result{})
	if b.built[a.Key] != before {
		t.Fatal("an invalid translation replaced the service's previous resources")
	}
	if why := b.invalid[a.Key].why; !strings.Contains(why, "socket") && !strings.Contains(why, "Address") {
		t.Errorf("the invalid service is not reported with its reason: %q", why)
	}
	b.update(testView(a).services, &Result{}) // a valid state again
	if len(b.invalid) != 0 || b.built[a.Key].src != a {
		t.Errorf("a valid state did not clear the invalid report: %v", b.invalid)
	}
}

func TestBadServiceDoesNotBlockOthers(t *testing.T) {
	good, _ := xdstest.TwoServices()
	bad := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: "bad"}, Ports: []resolver.Port{
		{Name: "http", Port: 70000, Endpoints: []resolver.Endpoint{{Address: "10.0.0.9", Port: 80, Ready: true}}},
	}}
	sets := assembleView(t, testView(good, bad))
	for _, kind := range []resource.Kind{resource.KindGRPC, resource.KindEnvoy} {
		clusters := strings.Join(resourceNames(sets[kind][resourcev3.ClusterType]), ",")
		if strings.Contains(clusters, "bad.") || !strings.Contains(clusters, "a.ns.svc.cluster.local:80") {
			t.Errorf("%s clusters = %s, want the good service's only", kind, clusters)
		}
		if err := checkReferences(sets[kind], nil); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	if got := strings.Join(resourceNames(sets[resource.KindEnvoy][resourcev3.ListenerType]), ","); got != "outbound_80,outbound_9000" {
		t.Errorf("envoy listeners = %s", got)
	}
}

// The Envoy route configuration is assembled from its virtual hosts' bytes; it must be exactly
// what proto would serialise, or clients would decode something else than was validated.
func TestOutboundRouteBytesMatchProto(t *testing.T) {
	a, b := xdstest.TwoServices()
	c := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: "c"}, Ports: []resolver.Port{{Name: "http", Port: 80}}}
	sets := assembleSets(t, testView(a, b, c))
	for _, r := range sets[resource.KindEnvoy][resourcev3.RouteType] {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Any.Value, want) {
			t.Errorf("%s: assembled bytes differ from proto's serialisation", r.Name)
		}
		var back routev3.RouteConfiguration
		if err := proto.Unmarshal(r.Any.Value, &back); err != nil || !proto.Equal(&back, r.Msg) {
			t.Errorf("%s: bytes do not decode to the route configuration: %v", r.Name, err)
		}
	}
}
