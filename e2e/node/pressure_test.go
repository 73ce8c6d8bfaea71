package node

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
)

// slicesReady counts the ready and the not-ready endpoints of the application's
// EndpointSlices in ns, as the controller wrote them.
func slicesReady(ctx context.Context, ns string) (ready, notReady int, err error) {
	slices, err := env.node.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=app"})
	if err != nil {
		return 0, 0, err
	}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				ready++
			} else {
				notReady++
			}
		}
	}
	return ready, notReady, nil
}

func nodeCondition(ctx context.Context) corev1.ConditionStatus {
	n, err := env.node.Client.CoreV1().Nodes().Get(ctx, "holdfast-node", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// guardHeld sums holdfast_guard_held over Holdfast's pods (the metric is 1 while a pod holds).
func guardHeld(ctx context.Context, t testing.TB, pods []corev1.Pod) float64 {
	t.Helper()
	var held float64
	for _, p := range pods {
		v, err := metric(ctx, "http://"+p.Status.PodIP+":18080/metrics", "holdfast_guard_held")
		if err != nil {
			t.Fatal(err)
		}
		held += v
	}
	return held
}

// TestNodeUnderPressure is seed 001: the node's kubelet stops (SIGSTOP) — an overloaded node
// missing its heartbeats — with Holdfast's replicas and every pod of the application on it.
// The node lifecycle controller marks the node NotReady and its pods not ready, and the
// EndpointSlice controller every endpoint of the application. The pods themselves serve on.
// What Holdfast serves then (docs/design.md, "A node that stops reporting"): the mass-
// withdrawal guard holds the withdrawal, so the clients keep every endpoint and not one RPC
// fails; once the kubelet continues, the endpoints are ready again, the hold ends by itself and
// the next change reaches clients at once.
//
// The guard's thresholds are set to this cluster's scale (its fleet: the application's pods,
// Holdfast's, CoreDNS's and the API server's, 8 endpoints): a fleet of at least 4 usable
// endpoints, a change withdrawing at least 3 of them and more than half of the fleet within a
// minute. Holdfast's own rolling update (2 endpoints) and an ordinary scale-down by one (4 to
// 3) are applied at once — the thresholds hold only what the node's failure does.
func TestNodeUnderPressure(t *testing.T) {
	ctx := testContext(t)
	d := holdfast(t)
	// The application first: Holdfast's own rolling update to the new thresholds withdraws its
	// two old pods' endpoints, a small part of the fleet then.
	ns := appNamespace(ctx, t, "node-pressure", 4)
	version := holdfastPods(ctx, t)[0].Spec.Containers[0].Image[len(holdfastImage)+1:]
	pods := applyHoldfast(ctx, t, version, "--guard-min-fleet-endpoints=4", "--guard-min-withdrawn-endpoints=3", "--guard-hold-period=10m")
	t.Cleanup(func() { applyHoldfast(context.Background(), t, version) })
	target := appTarget(ns)
	apps := clientApps(ctx, t, d, target, false)
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 4))
	scale(ctx, t, ns, 3)
	app := waitPods(ctx, t, ns, 3)
	routing(ctx, t, apps, target, app)
	if held := guardHeld(ctx, t, pods); held != 0 {
		t.Fatalf("the guard holds (%v pods) after an ordinary scale-down:\n%s", held, grepLogs(ctx, t, pods, "guard"))
	}

	marks := markAll(apps)
	stopped := time.Now()
	if err := env.node.Kubelet.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = env.node.Kubelet.Resume()
		}
	})
	err := harness.Eventually(ctx, func() bool {
		r, nr, err := slicesReady(ctx, ns)
		return err == nil && nodeCondition(ctx) != corev1.ConditionTrue && r == 0 && nr == 3
	})
	if err != nil {
		t.Fatalf("the application's endpoints did not all turn not ready with the kubelet stopped: %v", err)
	}
	t.Logf("node %s and every endpoint not ready %v after the kubelet stopped", nodeCondition(ctx), time.Since(stopped).Round(time.Second))
	if err := harness.Eventually(ctx, func() bool { return guardHeld(ctx, t, pods) == 2 }); err != nil {
		t.Fatalf("the guard of both Holdfast pods does not hold the node's withdrawal: %v", err)
	}
	// Long enough for a withdrawal to have reached every client several times over.
	time.Sleep(10 * time.Second)
	routing(ctx, t, apps, target, app)
	noFailures(t, apps, marks, "the node's NotReady")

	if err := env.node.Kubelet.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	err = harness.Eventually(ctx, func() bool {
		r, _, err := slicesReady(ctx, ns)
		return err == nil && nodeCondition(ctx) == corev1.ConditionTrue && r == 3
	})
	if err != nil {
		t.Fatalf("the node and the application's endpoints not ready again after the kubelet continued: %v", err)
	}
	if err := harness.Eventually(ctx, func() bool { return guardHeld(ctx, t, pods) == 0 }); err != nil {
		t.Fatalf("the hold did not end when the endpoints were ready again: %v", err)
	}
	noFailures(t, apps, marks, "the node's NotReady and recovery")
	scale(ctx, t, ns, 2)
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 2))
}

// grepLogs returns the lines of Holdfast's pods' logs that contain s.
func grepLogs(ctx context.Context, t testing.TB, pods []corev1.Pod, s string) string {
	t.Helper()
	var out []string
	for _, p := range pods {
		for _, l := range strings.Split(podLogs(ctx, t, holdfastNS, p.Name), "\n") {
			if strings.Contains(l, s) {
				out = append(out, p.Name+": "+l)
			}
		}
	}
	return strings.Join(out, "\n")
}
