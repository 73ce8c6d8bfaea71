package e2e

import (
	"fmt"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/faultproxy"
)

// TestGuardHoldsWithdrawalAfterStale: a service of 10 endpoints emptied while the source is
// healthy goes through at once; one emptied while the source was stale is held when the source
// comes back (the Monzo failure mode: trusting the first word after a silence), and applied after
// the hold period.
func TestGuardHoldsWithdrawalAfterStale(t *testing.T) {
	t.Parallel()
	const holdPeriod = 8 * time.Second
	ns := newNamespace(t)
	api := env.cluster.Client.DiscoveryV1().EndpointSlices(ns)
	ctx := testContext(t)
	for i, name := range []string{"calm", "big"} {
		createService(t, ns, name, grpcPort)
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-a", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr(grpcPort.name), Port: ptr(grpcPort.target), Protocol: ptr(corev1.ProtocolTCP)}},
		}
		for j := range 10 {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.247.%d.%d", i, j+1)}})
		}
		if _, err := api.Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p, h := holdfastBehindProxy(t, ns, "--guard-hold-period", holdPeriod.String())
	envoy, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "guard-stale"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = envoy.Close() })
	endpoints := func(svc string) func(adsclient.State) int {
		return func(s adsclient.State) int {
			r, ok := s.Upstream(resourcev3.EndpointType, target(ns, svc, grpcPort.port))
			if !ok {
				return -1
			}
			n := 0
			for _, l := range r.Message.(*endpointv3.ClusterLoadAssignment).Endpoints {
				n += len(l.LbEndpoints)
			}
			return n
		}
	}
	has := func(svc string, n int) func(adsclient.State) bool {
		return func(s adsclient.State) bool { return endpoints(svc)(s) == n }
	}
	if err := envoy.WaitFor(ctx, func(s adsclient.State) bool { return has("calm", 10)(s) && has("big", 10)(s) }); err != nil {
		t.Fatal(err)
	}

	// Healthy source: emptying a 10-endpoint service is an ordinary scale to zero.
	if err := api.Delete(ctx, "calm-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := envoy.WaitFor(ctx, has("calm", 0)); err != nil {
		t.Fatalf("a scale to zero with a healthy source was not applied: %v", err)
	}

	// The source goes stale; meanwhile "big" is emptied; then the source comes back.
	p.SetMode(faultproxy.Fail500)
	waitStale(ctx, t, h, ns, 1)
	if err := api.Delete(ctx, "big-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p.SetMode(faultproxy.Pass)
	waitStale(ctx, t, h, ns, 0)
	waitMetric(ctx, t, h, "holdfast_guard_held", func(v float64) bool { return v == 1 })
	held := time.Now()
	if n := endpoints("big")(envoy.State()); n != 10 {
		t.Errorf("during the hold clients have %d endpoints of big, want the 10 last known", n)
	}
	if err := envoy.WaitFor(ctx, has("big", 0)); err != nil {
		t.Fatalf("the held withdrawal was never applied: %v", err)
	}
	if d := time.Since(held); d < holdPeriod/2 {
		t.Errorf("applied %v after the hold began; hold period %v", d, holdPeriod)
	}
	waitMetric(ctx, t, h, `holdfast_guard_releases_total{how="hold_period"}`, positive)
}
