package node

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
)

// waitPods waits until exactly n of the application's pods in ns are Ready and none other
// exists (terminating ones included), and returns their names.
func waitPods(ctx context.Context, t testing.TB, ns string, n int) []string {
	t.Helper()
	var names []string
	err := harness.Eventually(ctx, func() bool {
		all, err := env.node.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=app"})
		if err != nil {
			return false
		}
		names = podNames(ctx, t, ns)
		return len(names) == n && len(all.Items) == n
	})
	if err != nil {
		t.Fatalf("%s: %d Ready application pods and nothing else: have %v: %v", ns, n, names, err)
	}
	return names
}

// setReady flips a pod's readiness endpoint: the kubelet's probe then turns the pod Ready or
// not, and the EndpointSlice controller its endpoint.
func setReady(ctx context.Context, t testing.TB, ns, pod string, ready bool) {
	t.Helper()
	p, err := env.node.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := "/ready/off"
	if ready {
		path = "/ready/on"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Status.PodIP+":8081"+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", pod, path, resp.Status)
	}
}

// routing asserts every application routes to exactly want.
func routing(ctx context.Context, t testing.TB, apps map[harness.Impl]*harness.App, target string, want []string) {
	t.Helper()
	for _, impl := range harness.Impls {
		if err := apps[impl].Routing(ctx, target, want...); err != nil {
			t.Fatal(err)
		}
	}
}

// noFailures asserts no application had a failed RPC since its mark, and that each made RPCs.
func noFailures(t testing.TB, apps map[harness.Impl]*harness.App, marks map[harness.Impl]int, during string) {
	t.Helper()
	for _, impl := range harness.Impls {
		rs := apps[impl].Since(marks[impl], "")
		n, last := apps[impl].Failures(marks[impl], "")
		t.Logf("%s: %d RPCs during %s, %d failed", impl, len(rs), during, n)
		if len(rs) == 0 {
			t.Errorf("%s made no RPCs during %s", impl, during)
		}
		if n > 0 {
			t.Errorf("%s: %d of %d RPCs failed during %s (last: %s)", impl, n, len(rs), during, last)
		}
	}
}

func markAll(apps map[harness.Impl]*harness.App) map[harness.Impl]int {
	m := map[harness.Impl]int{}
	for impl, a := range apps {
		m[impl] = a.Mark()
	}
	return m
}

func scale(ctx context.Context, t testing.TB, ns string, n int) {
	t.Helper()
	kubectl(ctx, t, "", "-n", ns, "scale", "deployment/app", "--replicas="+strconv.Itoa(n))
}

// TestAppFollowed: the application's pods come and go the way a cluster moves them — a
// scale-up, a readiness probe failing and passing again, a scale-down — and every client
// implementation routes to exactly the Ready pods each time, from EndpointSlices the real
// controller wrote.
func TestAppFollowed(t *testing.T) {
	ctx := testContext(t)
	d := holdfast(t)
	ns := appNamespace(ctx, t, "app-followed", 2)
	target := appTarget(ns)
	apps := clientApps(ctx, t, d, target, false)
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 2))

	scale(ctx, t, ns, 4)
	pods := waitPods(ctx, t, ns, 4)
	routing(ctx, t, apps, target, pods)

	setReady(ctx, t, ns, pods[0], false)
	if err := harness.Eventually(ctx, func() bool { return !slices.Contains(podNames(ctx, t, ns), pods[0]) }); err != nil {
		t.Fatalf("%s still Ready after its probe failed: %v", pods[0], err)
	}
	routing(ctx, t, apps, target, pods[1:])
	setReady(ctx, t, ns, pods[0], true)
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 4))

	scale(ctx, t, ns, 1)
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 1))
}

// rollApp rolls the application in ns to its v2 image and returns its new Ready pods, none of
// them one of old.
func rollApp(ctx context.Context, t testing.TB, ns string, old []string) []string {
	t.Helper()
	kubectl(ctx, t, "", "-n", ns, "set", "image", "deployment/app", "app="+appImage+":v2")
	kubectl(ctx, t, "", "-n", ns, "rollout", "status", "deployment/app", "--timeout=180s")
	pods := waitPods(ctx, t, ns, len(old))
	for _, p := range pods {
		if slices.Contains(old, p) {
			t.Fatalf("pod %s of the old version still there after the rollout: %v", p, pods)
		}
	}
	return pods
}

// TestAppRollingUpdateUnderLoad: the application rolled to a new image tag (maxUnavailable 0,
// old pods draining for 3 s after SIGTERM, as a server behind a proxy does) while every client
// implementation sends steady RPCs: not one fails, and all of them end on the new pods.
func TestAppRollingUpdateUnderLoad(t *testing.T) {
	ctx := testContext(t)
	d := holdfast(t)
	ns := appNamespace(ctx, t, "app-rolling", 3)
	target := appTarget(ns)
	apps := clientApps(ctx, t, d, target, false)
	old := waitPods(ctx, t, ns, 3)
	routing(ctx, t, apps, target, old)

	marks := markAll(apps)
	start := time.Now()
	pods := rollApp(ctx, t, ns, old)
	routing(ctx, t, apps, target, pods)
	noFailures(t, apps, marks, fmt.Sprintf("the rolling update (%v)", time.Since(start).Round(time.Second)))
}
