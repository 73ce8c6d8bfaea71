package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
)

// TestGuardHoldsMassWithdrawal: 10 services × 5 endpoints; deleting 8 services' slices at once
// is held (clients keep routing: grpc-go, and a real Envoy sidecar) until the hold period
// passes with a healthy source; a single scale-down goes through at once.
func TestGuardHoldsMassWithdrawal(t *testing.T) {
	t.Parallel()
	const holdPeriod = 10 * time.Second
	ns := newNamespace(t)
	var live []string
	for _, s := range []int{0, 9} {
		for j := range 5 {
			live = append(live, fmt.Sprintf("s%d-%d", s, j))
		}
	}
	b := startBackends(t, grpcPort.target, live...)
	api := env.cluster.Client.DiscoveryV1().EndpointSlices(ns)
	ctx := testContext(t)
	guardedFleet(ctx, t, ns, func(i, j int) string {
		if be, ok := b[fmt.Sprintf("s%d-%d", i, j)]; ok {
			return be.Addr.String()
		}
		return ""
	})
	// "At once" means in one publish: the eight deletions below take a few milliseconds each on
	// an idle machine but can straddle the default 10 ms hold-off on a loaded one, and a first
	// deletion published on its own is (rightly) below the guard's threshold. A longer hold-off
	// makes them one change, as a real mass deletion is.
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, append(args, "--guard-min-fleet-endpoints", "10", "--guard-min-withdrawn-endpoints", "10",
		"--guard-hold-period", holdPeriod.String(), "--debounce", "1s", "--debounce-max", "3s")...)
	s0 := dial(t, h, target(ns, "s0", grpcPort.port))
	s9 := dial(t, h, target(ns, "s9", grpcPort.port))
	s0Envoy, envoy := sidecarEnvoy(ctx, t, h, sidecar, target(ns, "s0", grpcPort.port), grpcPort.port)
	all := []string{"s0-0", "s0-1", "s0-2", "s0-3", "s0-4"}
	if err := s0.WaitForBackends(ctx, all...); err != nil {
		t.Fatal(err)
	}
	if err := s0Envoy.WaitForBackends(ctx, all...); err != nil {
		t.Fatalf("through Envoy: %v", err)
	}

	// One service scaled down while the source is healthy: applied at once.
	writeSlice(t, ns, "s9-a", "s9", grpcPort, endpoint{b["s9-0"], true}, endpoint{b["s9-1"], true}, endpoint{b["s9-2"], true}, endpoint{b["s9-3"], true})
	if err := s9.WaitForBackends(ctx, "s9-0", "s9-1", "s9-2", "s9-3"); err != nil {
		t.Fatalf("single scale-down: %v", err)
	}

	// 8 of 10 services lose all their endpoints at once: 40 more of 50.
	for i := range 8 {
		if err := api.Delete(ctx, fmt.Sprintf("s%d-a", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deleted := time.Now()
	waitMetric(ctx, t, h, "holdfast_guard_held", func(v float64) bool { return v == 1 })
	code, body, err := h.Get(ctx, "/readyz")
	var rz struct {
		Ready bool
		Held  *struct {
			Withdrawn int
			Reason    string
			Services  []string
		}
	}
	// Withdrawals add up over --guard-window: s9's earlier scale-down counts too (40 + 1 of 50).
	if err != nil || json.Unmarshal([]byte(body), &rz) != nil || code != 200 || rz.Held == nil || rz.Held.Withdrawn != 41 || len(rz.Held.Services) != 9 {
		t.Errorf("/readyz during the hold = %d %s; want ready, held, 41 endpoints of 9 services", code, body)
	}
	// Clients keep routing to the old endpoints while the change is held.
	for impl, c := range map[harness.Impl]*harness.GRPCClient{harness.ImplGo: s0, harness.ImplEnvoy: s0Envoy} {
		hits, failures, err := c.Spread(ctx, 25)
		record("guard holds a mass withdrawal (40 of 50 endpoints at once)", string(impl),
			fmt.Sprintf("keeps routing during the hold: %d of 25 RPCs failed, %d of 5 endpoints reached", failures, len(hits)))
		if failures != 0 || len(hits) != 5 {
			t.Errorf("during the hold s0 through %s reached %s with %d failures (%v)", impl, harness.HitsString(hits), failures, err)
		}
	}
	if v, err := envoy.Stat(ctx, "listener_manager.listener_removed"); err != nil || v != 0 {
		t.Errorf("Envoy removed %v listeners during the hold (%v)", v, err)
	}
	if !strings.Contains(h.LogTail(100), "mass withdrawal held") {
		t.Error("no log line for the hold")
	}

	// After the hold period with a healthy source, the change is applied.
	failsFast(ctx, t, s0, "s0 after the hold period")
	appliedAfter := time.Since(deleted)
	failsFast(ctx, t, s0Envoy, "s0 through Envoy after the hold period")
	if appliedAfter < holdPeriod {
		t.Errorf("the held change was applied after %v, before the %v hold period", appliedAfter, holdPeriod)
	}
	t.Logf("held for about %v (hold period %v)", appliedAfter.Round(100*time.Millisecond), holdPeriod)
	waitMetric(ctx, t, h, `holdfast_guard_releases_total{how="hold_period"}`, func(v float64) bool { return v == 1 })
	waitMetric(ctx, t, h, "holdfast_guard_held", func(v float64) bool { return v == 0 })
	if hits, failures, err := s9.Spread(ctx, 8); failures != 0 || len(hits) != 4 {
		t.Errorf("s9 disturbed: %s, %d failures (%v)", harness.HitsString(hits), failures, err)
	}
}

// guardedFleet creates services s0..s9 in ns, each with one slice "s<i>-a" of 5 ready
// endpoints: addr(i, j) gives endpoint j of service i, "" for an address nobody dials.
func guardedFleet(ctx context.Context, t *testing.T, ns string, addr func(i, j int) string) {
	t.Helper()
	fleet(ctx, t, ns, 10, 5, addr)
}

// fleet creates services s0..s<services-1> in ns, each with one slice "s<i>-a" of perService
// ready endpoints: addr(i, j) gives endpoint j of service i, "" for an address nobody dials.
func fleet(ctx context.Context, t *testing.T, ns string, services, perService int, addr func(i, j int) string) {
	t.Helper()
	api := env.cluster.Client.DiscoveryV1().EndpointSlices(ns)
	for i := range services {
		svc := fmt.Sprintf("s%d", i)
		createService(t, ns, svc, grpcPort)
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svc + "-a", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr(grpcPort.name), Port: ptr(grpcPort.target), Protocol: ptr(corev1.ProtocolTCP)}},
		}
		for j := range perService {
			a := addr(i, j)
			if a == "" {
				a = fmt.Sprintf("10.246.%d.%d", i, j+1)
			}
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}})
		}
		if _, err := api.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGuardHoldsOnlyTheWithdrawal: during a held withdrawal of 60 % of the fleet, a new service
// and an endpoint added to a held service reach grpc-go clients at once (before, they waited
// for the hold: with the default 2 m hold, every deploy in the cluster did); the withdrawn
// endpoints stay served until an operator releases the hold, and then go.
func TestGuardHoldsOnlyTheWithdrawal(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	ids := []string{"new-1"}
	for j := range 6 {
		ids = append(ids, fmt.Sprintf("s0-%d", j))
	}
	b := startBackends(t, grpcPort.target, ids...)
	api := env.cluster.Client.DiscoveryV1().EndpointSlices(ns)
	ctx := testContext(t)
	guardedFleet(ctx, t, ns, func(i, j int) string {
		if be, ok := b[fmt.Sprintf("s%d-%d", i, j)]; ok {
			return be.Addr.String()
		}
		return ""
	})
	// The guard's thresholds at this scale (50 endpoints); a hold period no test waits out.
	h := startHoldfastOn(t, env.cluster, ns, "--guard-min-fleet-endpoints", "10", "--guard-min-withdrawn-endpoints", "10",
		"--guard-hold-period", "10m", "--debounce", "1s", "--debounce-max", "3s")
	s0 := dial(t, h, target(ns, "s0", grpcPort.port))
	if err := s0.WaitForBackends(ctx, "s0-0", "s0-1", "s0-2", "s0-3", "s0-4"); err != nil {
		t.Fatal(err)
	}
	// 6 of 10 services lose every endpoint at once (30 of 50): held.
	for i := 1; i <= 6; i++ {
		if err := api.Delete(ctx, fmt.Sprintf("s%d-a", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(ctx, t, h, "holdfast_guard_held", func(v float64) bool { return v == 1 })
	s1 := dial(t, h, target(ns, "s1", grpcPort.port))

	// While it is held: a new service, and a sixth endpoint for s0 (a held-alike service: it
	// takes part in the same change).
	createService(t, ns, "newcomer", grpcPort)
	writeSlice(t, ns, "newcomer-a", "newcomer", grpcPort, endpoint{b["new-1"], true})
	var eps []endpoint
	for j := range 6 {
		eps = append(eps, endpoint{b[fmt.Sprintf("s0-%d", j)], true})
	}
	writeSlice(t, ns, "s0-a", "s0", grpcPort, eps...)
	start := time.Now()
	newcomer := dial(t, h, target(ns, "newcomer", grpcPort.port))
	if err := newcomer.WaitForBackends(ctx, "new-1"); err != nil {
		t.Fatalf("a new service waited for the hold: %v", err)
	}
	if err := s0.WaitForBackends(ctx, "s0-0", "s0-1", "s0-2", "s0-3", "s0-4", "s0-5"); err != nil {
		t.Fatalf("an endpoint added during the hold waited for it: %v", err)
	}
	t.Logf("the new service and the new endpoint reached clients %v after they were written, during the hold", time.Since(start).Round(10*time.Millisecond))
	if v, _ := h.Metric(ctx, "holdfast_guard_held"); v != 1 {
		t.Fatal("the hold ended by itself")
	}
	out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, "--addr", h.AdminAddr, "services", ns).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		switch name, state := f[1], f[2]; {
		case name == "newcomer" && state != "live", name == "s0" && state != "live":
			t.Errorf("%s is %s during the hold, want live:\n%s", name, state, out)
		case name == "s1" && state != "held":
			t.Errorf("s1 (emptied by the held change) is %s, want held:\n%s", state, out)
		}
	}
	// Released: the withdrawal goes through; the newcomer and s0's six stay.
	hold := heldID(ctx, t, h)
	if out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, "--addr", h.AdminAddr, "release", fmt.Sprint(hold)).CombinedOutput(); err != nil {
		t.Fatalf("release: %v\n%s", err, out)
	}
	failsFast(ctx, t, s1, "s1 after the release")
	if hits, failures, err := newcomer.Spread(ctx, 5); failures != 0 || hits["new-1"] != 5 {
		t.Errorf("the newcomer after the release: %s, %d failures (%v)", harness.HitsString(hits), failures, err)
	}
}

// heldID returns the ID of the hold Holdfast reports in /readyz.
func heldID(ctx context.Context, t *testing.T, h *harness.Holdfast) int {
	t.Helper()
	_, body, err := h.Get(ctx, "/readyz")
	var rz struct{ Held *struct{ ID int } }
	if err != nil || json.Unmarshal([]byte(body), &rz) != nil || rz.Held == nil {
		t.Fatalf("no hold in /readyz: %s %v", body, err)
	}
	return rz.Held.ID
}

// TestGuardAtDefaults: the guard at its default settings (no guard or debounce flag) against a
// mass deletion made the way controllers make one: 24 of 30 services' EndpointSlices (120 of
// 150 endpoints) deleted by 8 workers at once, each delete as soon as the last returned. The
// deletions straddle several publishes, so the first ones go out before the guard's window
// adds up to its limit; the rest are held. Whatever went out stays within the limit (50 % of
// the fleet), the services not touched keep every endpoint, and the test says which went out
// and which were held.
func TestGuardAtDefaults(t *testing.T) {
	t.Parallel()
	const services, perService, deleted, workers = 30, 5, 24, 8
	ns := newNamespace(t)
	ctx := testContext(t)
	api := env.cluster.Client.DiscoveryV1().EndpointSlices(ns)
	b := startBackends(t, grpcPort.target, "kept-0", "kept-1", "kept-2", "kept-3", "kept-4")
	fleet(ctx, t, ns, services, perService, func(i, j int) string {
		if i == services-1 { // the last service is dialled: its endpoints are real
			return b[fmt.Sprintf("kept-%d", j)].Addr.String()
		}
		return ""
	})
	h := startHoldfast(t, ns)
	kept := dial(t, h, target(ns, fmt.Sprintf("s%d", services-1), grpcPort.port))
	if err := kept.WaitForBackends(ctx, "kept-0", "kept-1", "kept-2", "kept-3", "kept-4"); err != nil {
		t.Fatal(err)
	}
	waitMetric(ctx, t, h, "holdfast_resolver_services", func(v float64) bool { return v == services })

	next := make(chan int, deleted)
	for i := range deleted {
		next <- i
	}
	close(next)
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for i := range next {
				if err := api.Delete(gctx, fmt.Sprintf("s%d-a", i), metav1.DeleteOptions{}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	waitMetric(ctx, t, h, "holdfast_guard_held", func(v float64) bool { return v == 1 })
	_, body, err := h.Get(ctx, "/readyz")
	var rz struct {
		Held *struct {
			Withdrawn int
			Reason    string
			Services  []string
		}
	}
	if err != nil || json.Unmarshal([]byte(body), &rz) != nil || rz.Held == nil {
		t.Fatalf("/readyz during the hold: %s %v", body, err)
	}
	// Each service's state as an operator sees it.
	out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, "--addr", h.AdminAddr, "services", ns).CombinedOutput()
	if err != nil {
		t.Fatalf("holdfastctl services: %v\n%s", err, out)
	}
	state := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 {
			state[f[1]] = f[2]
		}
	}
	var wentOut, heldNames []string
	for i := range services {
		name := fmt.Sprintf("s%d", i)
		switch {
		case i >= deleted && state[name] != "live":
			t.Errorf("%s, which nobody touched, is %q:\n%s", name, state[name], out)
		case i >= deleted:
		case state[name] == "held":
			heldNames = append(heldNames, name)
		default:
			wentOut = append(wentOut, name)
		}
	}
	t.Logf("guard at its defaults: %d services (%d endpoints) went out before the hold: %v; held: %d services (%d endpoints): %v; reason: %s",
		len(wentOut), len(wentOut)*perService, wentOut, len(heldNames), rz.Held.Withdrawn, heldNames, rz.Held.Reason)
	// The guard's promise at its default fraction (0.5): no more than half the fleet's
	// endpoints are withdrawn within its window, whatever the order of the deletions.
	if out := len(wentOut) * perService; out > services*perService/2 {
		t.Errorf("%d of %d endpoints went out before the hold, more than half the fleet", out, services*perService)
	}
	if len(heldNames) == 0 {
		t.Error("nothing was held")
	}
	if hits, failures, err := kept.Spread(ctx, 25); failures != 0 || len(hits) != perService {
		t.Errorf("a service nobody touched: %s, %d failures (%v)", harness.HitsString(hits), failures, err)
	}
}
