package e2e

import (
	"fmt"
	"slices"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/xds/resource"
)

// TestSkeletonDeltaAndSotW subscribes like Envoy over both xDS flavours and checks that both get
// the same, valid resources, ACK them, and follow an endpoint change.
func TestSkeletonDeltaAndSotW(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2")
	httpPort := servicePort{name: "http", port: 8080, target: grpcPort.target}
	createService(t, ns, "echo", grpcPort)
	createService(t, ns, "web", httpPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	writeSlice(t, ns, "web-a", "web", httpPort, endpoint{b["b2"], true})
	h := startHoldfast(t, ns)
	ctx := testContext(t)

	echo, web := target(ns, "echo", grpcPort.port), target(ns, "web", httpPort.port)
	clients := map[string]*adsclient.Client{}
	for _, delta := range []bool{false, true} {
		name := map[bool]string{false: "sotw", true: "delta"}[delta]
		c, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "envoy-" + name, Delta: delta})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients[name] = c
	}

	// Everything an Envoy sidecar needs to route to both services, endpoints included.
	complete := func(wantEcho ...string) func(adsclient.State) bool {
		return func(s adsclient.State) bool {
			return has(s, resourcev3.ClusterType, echo, web) &&
				has(s, resourcev3.ListenerType, "outbound_80", "outbound_8080") &&
				has(s, resourcev3.RouteType, "outbound_80", "outbound_8080") &&
				slices.Equal(addresses(s, echo), wantEcho) &&
				slices.Equal(addresses(s, web), []string{b["b2"].HostPort()})
		}
	}
	for name, c := range clients {
		if err := c.WaitFor(ctx, complete(b["b1"].HostPort())); err != nil {
			t.Fatalf("%s client never got the full config: %v\nstate: %s", name, err, describe(c.State()))
		}
	}
	sotw, delta := clients["sotw"].State(), clients["delta"].State()
	for _, typ := range resource.Served {
		if len(sotw[typ]) != len(delta[typ]) {
			t.Errorf("%s: sotw has %d resources, delta %d", typ, len(sotw[typ]), len(delta[typ]))
		}
		for n, r := range sotw[typ] {
			if d, ok := delta[typ][n]; !ok || !proto.Equal(r.Message, d.Message) {
				t.Errorf("%s %s differs between sotw and delta", typ, n)
			}
		}
	}

	// Envoy listeners route by Host to the service's cluster, with every name a client may use.
	l := sotw[resourcev3.ListenerType]["outbound_8080"].Message.(*listenerv3.Listener)
	if got := l.GetAddress().GetSocketAddress(); got.GetAddress() != "127.0.0.1" || got.GetPortValue() != 8080 {
		t.Errorf("outbound_8080 binds %v, want 127.0.0.1:8080", got)
	}
	rc := sotw[resourcev3.RouteType]["outbound_8080"].Message.(*routev3.RouteConfiguration)
	if len(rc.VirtualHosts) != 1 || rc.VirtualHosts[0].Routes[0].GetRoute().GetCluster() != upstream(t, ns, "web", httpPort.port) ||
		!slices.Contains(rc.VirtualHosts[0].Domains, "web."+ns) || !slices.Contains(rc.VirtualHosts[0].Domains, web) {
		t.Errorf("outbound_8080 routes: %v", rc.VirtualHosts)
	}

	// An endpoint change reaches both flavours.
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	want := []string{b["b1"].HostPort(), b["b2"].HostPort()}
	slices.Sort(want)
	for name, c := range clients {
		if err := c.WaitFor(ctx, complete(want...)); err != nil {
			t.Fatalf("%s client missed the endpoint change: %v\nstate: %s", name, err, describe(c.State()))
		}
	}

	for name, c := range clients {
		st := c.Stats()
		if len(st.Invalid) > 0 || len(st.APIListeners) > 0 {
			t.Errorf("%s client got resources Envoy would reject: invalid %v, api_listeners %v", name, st.Invalid, st.APIListeners)
		}
		for _, typ := range resource.Served {
			if st.NACKs[typ] != 0 || st.ACKs[typ] == 0 {
				t.Errorf("%s client %s: %d ACKs, %d NACKs; want ACKs and no NACK", name, typ, st.ACKs[typ], st.NACKs[typ])
			}
		}
	}
}

// has says whether s holds every named resource of typ; clusters and assignments are named by
// their service port's listener name (whatever incarnation they carry).
func has(s adsclient.State, typ string, names ...string) bool {
	for _, n := range names {
		if _, ok := s.Upstream(typ, n); !ok {
			return false
		}
	}
	return true
}

// addresses lists the HEALTHY endpoints of an assignment, sorted.
func addresses(s adsclient.State, name string) []string {
	r, ok := s.Upstream(resourcev3.EndpointType, name)
	if !ok {
		return nil
	}
	var out []string
	for _, l := range r.Message.(*endpointv3.ClusterLoadAssignment).Endpoints {
		for _, e := range l.LbEndpoints {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
		}
	}
	slices.Sort(out)
	return out
}

func describe(s adsclient.State) string {
	out := ""
	for typ, m := range s {
		var names []string
		for n := range m {
			names = append(names, n)
		}
		slices.Sort(names)
		out += fmt.Sprintf("\n  %s: %v", typ, names)
	}
	return out
}
