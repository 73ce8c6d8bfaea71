package node

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
)

const holdfastNS = "holdfast-system"

// holdfastPods returns Holdfast's pods that are not being deleted.
func holdfastPods(ctx context.Context, t testing.TB) []corev1.Pod {
	t.Helper()
	pods, err := env.node.Client.CoreV1().Pods(holdfastNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=holdfast"})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// applyHoldfast applies the test overlay for Holdfast's image tag version, with extra
// arguments for its container, and waits until exactly two pods of it run, all Ready, none of
// an older template left (terminating ones included).
func applyHoldfast(ctx context.Context, t testing.TB, version string, args ...string) []corev1.Pod {
	t.Helper()
	overlay, err := testOverlay(version, args...)
	if err != nil {
		t.Fatal(err)
	}
	kubectl(ctx, t, "", "apply", "-k", overlay)
	kubectl(ctx, t, "", "-n", holdfastNS, "rollout", "status", "deployment/holdfast", "--timeout=300s")
	var pods []corev1.Pod
	err = harness.Eventually(ctx, func() bool {
		all, err := env.node.Client.CoreV1().Pods(holdfastNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=holdfast"})
		if err != nil || len(all.Items) != 2 {
			return false
		}
		pods = all.Items
		for _, p := range pods {
			if !podReady(p) || p.DeletionTimestamp != nil || p.Spec.Containers[0].Image != holdfastImage+":"+version {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("Holdfast %s: two Ready pods and nothing else: %v", version, err)
	}
	return pods
}

// podLogs returns the logs of a pod's (only) running container.
func podLogs(ctx context.Context, t testing.TB, ns, pod string) string {
	t.Helper()
	r, err := env.node.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metric sums the samples of a metric in a Prometheus text page at url.
func metric(ctx context.Context, url, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, sc.Err()
}

// TestHoldfastRollingUpdateUnderLoad: Holdfast's own Deployment rolled to a new image tag the
// way a user would (the overlay's images: entry changed and applied) while every client
// implementation sends steady RPCs: not one fails. The clients' streams end on the new pods,
// which started with an empty emptyDir and synced from the API server (they did not restore),
// and follow the next change from there. Then a new pod's container is killed as the OOM
// killer would: the kubelet restarts it in the same pod, where it restores its state file, and
// still no RPC fails.
func TestHoldfastRollingUpdateUnderLoad(t *testing.T) {
	ctx := testContext(t)
	d := holdfast(t)
	ns := appNamespace(ctx, t, "holdfast-rolling", 2)
	target := appTarget(ns)
	apps := clientApps(ctx, t, d, target, false)
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 2))
	var old []string
	for _, p := range holdfastPods(ctx, t) {
		old = append(old, p.Name)
	}
	version := versionB()
	if holdfastPods(ctx, t)[0].Spec.Containers[0].Image == holdfastImage+":"+version {
		version = env.version // run twice (-count 2): roll back the other way
	}

	marks := markAll(apps)
	pods := applyHoldfast(ctx, t, version)
	noFailures(t, apps, marks, "Holdfast's rolling update")
	for _, p := range pods {
		if slices.Contains(old, p.Name) {
			t.Fatalf("Holdfast pod %s of the old version still there", p.Name)
		}
		logs := podLogs(ctx, t, holdfastNS, p.Name)
		if !strings.Contains(logs, "no state file: starting empty") || strings.Contains(logs, `"decision":"state_restored"`) {
			t.Errorf("new pod %s did not start empty (a new pod's emptyDir is new):\n%s", p.Name, head(logs, 15))
		}
	}
	// The clients' streams are on the new pods: the old ones are gone, and the new ones count
	// them (grpc-go's own stream, and the agent's that serves the other two).
	var streams float64
	err := harness.Eventually(ctx, func() bool { // the clients reconnect with their own backoff
		streams = 0
		for _, p := range pods {
			n, err := metric(ctx, "http://"+p.Status.PodIP+":18080/metrics", "holdfast_xds_connected_clients")
			if err != nil {
				return false
			}
			streams += n
		}
		return streams >= 2
	})
	if err != nil {
		t.Errorf("new Holdfast pods have %v identified streams, want at least grpc-go's and the agent's: %v", streams, err)
	}
	scale(ctx, t, ns, 3)
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 3))

	// A container restart inside a pod keeps the emptyDir: the state file written after the
	// scale-up is restored before the API server answers.
	marks = markAll(apps)
	victim := pods[0]
	if err := env.node.KillContainer(ctx, victim.Status.ContainerStatuses[0].ContainerID, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	err = harness.Eventually(ctx, func() bool {
		p, err := env.node.Client.CoreV1().Pods(holdfastNS).Get(ctx, victim.Name, metav1.GetOptions{})
		return err == nil && podReady(*p) && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount > victim.Status.ContainerStatuses[0].RestartCount
	})
	if err != nil {
		t.Fatalf("Holdfast pod %s not restarted and Ready after its container was killed: %v", victim.Name, err)
	}
	if logs := podLogs(ctx, t, holdfastNS, victim.Name); !strings.Contains(logs, `"decision":"state_restored"`) {
		t.Errorf("restarted container of %s did not restore its state:\n%s", victim.Name, head(logs, 15))
	}
	routing(ctx, t, apps, target, waitPods(ctx, t, ns, 3))
	noFailures(t, apps, marks, "a Holdfast container's restart")
}

func head(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

const agentNS = "holdfast-node"

// agentPod returns the node's agent pod (the DaemonSet's, not being deleted).
func agentPod(ctx context.Context, t testing.TB) (corev1.Pod, bool) {
	t.Helper()
	pods, err := env.node.Client.CoreV1().Pods(agentNS).List(ctx, metav1.ListOptions{LabelSelector: "app=holdfast-agent"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			return p, true
		}
	}
	return corev1.Pod{}, false
}

// TestAgentDaemonSet: the agent DaemonSet's pod serves every client implementation on the
// node through its Unix socket (a hostPath). With Holdfast's pods all gone, the clients keep
// routing from the agent; the agent pod deleted and replaced by the DaemonSet while Holdfast is
// still gone, the new agent serves from the cache its predecessor left in the hostPath — to
// the clients that were connected and to one that starts only then — and no RPC fails.
func TestAgentDaemonSet(t *testing.T) {
	ctx := testContext(t)
	d := holdfast(t)
	ns := appNamespace(ctx, t, "agent-daemonset", 2)
	target := appTarget(ns)
	apps := clientApps(ctx, t, d, target, true)
	pods := waitPods(ctx, t, ns, 2)
	routing(ctx, t, apps, target, pods)
	before, ok := agentPod(ctx, t)
	if !ok {
		t.Fatal("no agent pod")
	}

	marks := markAll(apps)
	kubectl(ctx, t, "", "-n", holdfastNS, "scale", "deployment/holdfast", "--replicas=0")
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = env.node.Kubectl(ctx, "", "-n", holdfastNS, "scale", "deployment/holdfast", "--replicas=2")
		_, _ = env.node.Kubectl(ctx, "", "-n", holdfastNS, "rollout", "status", "deployment/holdfast", "--timeout=180s")
	})
	if err := harness.Eventually(ctx, func() bool { return len(holdfastPods(ctx, t)) == 0 }); err != nil {
		t.Fatal(err)
	}
	kubectl(ctx, t, "", "-n", holdfastNS, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=holdfast", "--timeout=60s")
	routing(ctx, t, apps, target, pods)
	noFailures(t, apps, marks, "Holdfast's pods going away")

	marks = markAll(apps)
	kubectl(ctx, t, "", "-n", agentNS, "delete", "pod", before.Name, "--wait=true", "--timeout=60s")
	var after corev1.Pod
	err := harness.Eventually(ctx, func() bool {
		var ok bool
		after, ok = agentPod(ctx, t)
		return ok && after.Name != before.Name && podReady(after)
	})
	if err != nil {
		t.Fatalf("the DaemonSet's new agent pod not Ready without Holdfast: %v", err)
	}
	if logs := podLogs(ctx, t, agentNS, after.Name); !strings.Contains(logs, `"decision":"agent_cache_restored"`) {
		t.Errorf("new agent pod %s did not serve from its hostPath cache:\n%s", after.Name, head(logs, 15))
	}
	routing(ctx, t, apps, target, pods)
	noFailures(t, apps, marks, "the agent pod's replacement")
	// A client that starts only now: what it gets can only come from the new agent's cache.
	late := clientApps(ctx, t, d, target, true)
	routing(ctx, t, late, target, pods)
}
