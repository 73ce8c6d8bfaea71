package e2e

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/sync/errgroup"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/xds/translate"
)

// rejectTwoEndpoints makes a client refuse the assignment of cluster when it has exactly two
// endpoints, the way an older Envoy refuses a field it does not know.
func rejectTwoEndpoints(cluster string) func(string, adsclient.Resource) error {
	return func(typ string, r adsclient.Resource) error {
		if typ != resourcev3.EndpointType || translate.ServiceOf(r.Name) != cluster {
			return nil
		}
		n := 0
		for _, l := range r.Message.(*endpointv3.ClusterLoadAssignment).Endpoints {
			n += len(l.LbEndpoints)
		}
		if n == 2 {
			return errors.New("test peer: refusing an assignment with two endpoints")
		}
		return nil
	}
}

// TestNackNoResendLoop: a client that rejects a resource gets that version once and never in a
// loop; the NACK is counted and logged with its detail; the next version goes out and is taken.
func TestNackNoResendLoop(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2", "b3")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfast(t, ns)
	ctx := testContext(t)
	echo := target(ns, "echo", grpcPort.port)

	clients := map[string]*adsclient.Client{}
	for _, delta := range []bool{false, true} {
		name := map[bool]string{false: "sotw", true: "delta"}[delta]
		c, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "picky-" + name, Delta: delta, Reject: rejectTwoEndpoints(echo)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients[name] = c
		if err := c.WaitFor(ctx, func(s adsclient.State) bool { return len(addresses(s, echo)) == 1 }); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	for name, c := range clients {
		if err := harness.Eventually(ctx, func() bool { return c.Stats().NACKs[resourcev3.EndpointType] >= 1 }); err != nil {
			t.Fatalf("%s never rejected the two-endpoint assignment", name)
		}
	}
	// How often is the rejected version sent? Watched for quietWindow: a resend loop shows
	// thousands within it.
	time.Sleep(quietWindow)
	for name, c := range clients {
		st := c.Stats()
		acc, _ := c.State().Upstream(resourcev3.EndpointType, echo)
		accepted := acc.Version
		rejected := 0 // deliveries of any version other than the accepted one
		for k, n := range st.Deliveries {
			if strings.HasPrefix(k, resourcev3.EndpointType+" "+acc.Name+"@") && !strings.HasSuffix(k, "@"+accepted) {
				rejected = max(rejected, n)
			}
		}
		t.Logf("%s: %d NACKs, the rejected version delivered %d times in 5 s", name, st.NACKs[resourcev3.EndpointType], rejected)
		if st.NACKs[resourcev3.EndpointType] > 3 || rejected > 3 {
			t.Errorf("%s: the rejected version was sent again and again: %d NACKs, %v", name, st.NACKs[resourcev3.EndpointType], st.Deliveries)
		}
		if got := addresses(c.State(), echo); len(got) != 1 {
			t.Errorf("%s applied the rejected assignment: %v", name, got)
		}
	}
	waitMetric(ctx, t, h, `holdfast_xds_nacks_total{type="`+resourcev3.EndpointType+`"}`, func(v float64) bool { return v >= 2 })
	if log := h.LogTail(200); !strings.Contains(log, "refusing an assignment with two endpoints") || !strings.Contains(log, "picky-delta") {
		t.Errorf("the NACK's detail and client are not in the log:\n%s", log)
	}

	// A new version goes out and is taken.
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true}, endpoint{b["b3"], true})
	for name, c := range clients {
		if err := c.WaitFor(ctx, func(s adsclient.State) bool { return len(addresses(s, echo)) == 3 }); err != nil {
			t.Errorf("%s never got the fixed version: %v", name, err)
		}
	}
}

// TestSlowClientIsolated: a client that never reads sits beside 50 that do. The 50 get every
// change while the slow one is disconnected and counted.
func TestSlowClientIsolated(t *testing.T) {
	t.Parallel()
	const fast = 50
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2", "b3", "b4")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfastOn(t, env.cluster, ns, "--xds-ack-timeout", "2s")
	ctx := testContext(t)
	echo := target(ns, "echo", grpcPort.port)

	slow, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "slow", NeverRead: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Close() })
	clients := make([]*adsclient.Client, fast)
	for i := range clients {
		c, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: fmt.Sprintf("fast-%d", i), Delta: i%2 == 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients[i] = c
	}
	all := func(n int) error {
		g, gctx := errgroup.WithContext(ctx)
		for _, c := range clients {
			g.Go(func() error {
				return c.WaitFor(gctx, func(s adsclient.State) bool { return len(addresses(s, echo)) == n })
			})
		}
		return g.Wait()
	}
	if err := all(1); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var took []time.Duration
	for n := 2; n <= 4; n++ {
		eps := []endpoint{}
		for i := 1; i <= n; i++ {
			eps = append(eps, endpoint{b[fmt.Sprintf("b%d", i)], true})
		}
		start := time.Now()
		writeSlice(t, ns, "echo-a", "echo", grpcPort, eps...)
		if err := all(n); err != nil {
			t.Fatalf("change %d did not reach every fast client: %v", n, err)
		}
		mu.Lock()
		took = append(took, time.Since(start))
		mu.Unlock()
	}
	t.Logf("every one of %d fast clients had each change after %v", fast, took)
	waitMetric(ctx, t, h, "holdfast_xds_slow_clients_disconnected_total", func(v float64) bool { return v == 1 })
	if log := h.LogTail(300); !strings.Contains(log, "client too slow") || !strings.Contains(log, "node=slow") {
		t.Errorf("no log line for the slow client")
	}
	for i, c := range clients {
		if st := c.Stats(); st.NACKs[resourcev3.EndpointType] != 0 {
			t.Errorf("fast client %d NACKed: %v", i, st.NACKs)
		}
	}
}

// TestVersionsDeterministic: two Holdfast processes on the same API server serve the same
// version of every resource, so that a client moving between them re-applies nothing.
func TestVersionsDeterministic(t *testing.T) {
	t.Parallel()
	httpPort := servicePort{name: "http", port: 8080, target: grpcPort.target}
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2")
	createService(t, ns, "echo", grpcPort, httpPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	createService(t, ns, "web", httpPort)
	ctx := testContext(t)
	echo, web := target(ns, "echo", grpcPort.port), target(ns, "web", httpPort.port)
	complete := func(s adsclient.State) bool {
		return has(s, resourcev3.ClusterType, echo, web) && has(s, resourcev3.EndpointType, echo, web) &&
			has(s, resourcev3.ListenerType, "outbound_80", "outbound_8080") &&
			has(s, resourcev3.RouteType, "outbound_80", "outbound_8080") && len(addresses(s, echo)) == 2
	}
	versions := func(h int, delta bool) map[string]string {
		hf := startHoldfast(t, ns)
		c, err := adsclient.Dial(hf.XDSAddr, adsclient.Options{NodeID: fmt.Sprintf("node-%d", h), Delta: delta})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WaitFor(ctx, complete); err != nil {
			t.Fatalf("holdfast %d: %v\n%s", h, err, describe(c.State()))
		}
		out := map[string]string{}
		for typ, m := range c.State() {
			for n, r := range m {
				out[typ+" "+n] = r.Version
			}
		}
		return out
	}
	for _, delta := range []bool{true, false} {
		first, second := versions(1, delta), versions(2, delta)
		if len(first) < 8 || len(first) != len(second) {
			t.Fatalf("%d resources from one Holdfast, %d from the other; want the same 8 or more", len(first), len(second))
		}
		for k, v := range first {
			if v == "" || second[k] != v {
				t.Errorf("delta=%v %s: version %q from one Holdfast, %q from the other", delta, k, v, second[k])
			}
		}
		t.Logf("delta=%v: %d resources, identical versions from both processes", delta, len(first))
	}
}
