package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/internal/testpki"
)

// helm runs the pinned Helm (harness.Helm) and fails the test on an error.
func helm(ctx context.Context, t testing.TB, args ...string) string {
	t.Helper()
	out, err := harness.Helm(ctx, env.node.Kubeconfig, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHelmInstallOnNode: the chart installed for real, beside the kustomize deployment the
// other tests use (under another name and namespace, so nothing is shared): the image built
// for the tests, one replica with a small CPU request (the node has 2 CPUs and already runs
// two replicas). Helm's --wait sees the pod Ready (synced through the chart's RBAC, TLS from
// the Secret the chart mounts), and a grpc-go client routes through it over TLS to pods whose
// EndpointSlice the real controller wrote. helm uninstall removes every object it made,
// cluster-scoped ones included.
func TestHelmInstallOnNode(t *testing.T) {
	ctx := testContext(t)
	holdfast(t) // the node and the image are up; the kustomize deployment is not touched
	const name, ns = "holdfast-helm", "holdfast-helm"
	kubectl(ctx, t, "", "create", "namespace", ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, _ = env.node.Kubectl(ctx, "", "delete", "namespace", ns, "--wait=false")
	})
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(root, "deploy", "helm", "holdfast")
	out := helm(ctx, t, "install", name, chart, "--namespace", ns,
		"--set", "name="+name, "--set", "image.repository="+holdfastImage, "--set", "image.tag="+env.version,
		"--set", "replicas=1", "--set", "resources.requests.cpu=100m", "--set", "resources.requests.memory=128Mi")
	if !strings.Contains(out, "STATUS: deployed") {
		t.Fatalf("helm install did not deploy:\n%s", out)
	}
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			helm(ctx, t, "uninstall", name, "--namespace", ns)
		}
	})

	// Its certificate names its Service's cluster IP, which the client dials from this machine.
	ip := strings.TrimSpace(kubectl(ctx, t, "", "-n", ns, "get", "service", name, "-o", "jsonpath={.spec.clusterIP}"))
	ca, err := testpki.NewCA("holdfast helm e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(name, name+"."+ns+".svc", ip)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for n, b := range map[string][]byte{"ca.crt": ca.PEM(), "tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubectl(ctx, t, "", "-n", ns, "create", "secret", "generic", "holdfast-tls", "--from-file="+filepath.Join(dir, "tls.crt"),
		"--from-file="+filepath.Join(dir, "tls.key"), "--from-file="+filepath.Join(dir, "ca.crt"))
	kubectl(ctx, t, "", "-n", ns, "rollout", "status", "deployment/"+name, "--timeout=180s")

	app := appNamespace(ctx, t, "helm-on-node", 2)
	pods := podNames(ctx, t, app)
	a := startApp(ctx, t, deployment{clusterIP: ip, caFile: filepath.Join(dir, "ca.crt")}, appTarget(app), harness.ImplGo, false, 0)
	if err := a.Routing(ctx, appTarget(app), pods...); err != nil {
		t.Fatalf("grpc-go through the Helm-installed Holdfast: %v", err)
	}

	helm(ctx, t, "uninstall", name, "--namespace", ns, "--wait")
	uninstalled = true
	for _, kind := range []string{"priorityclass", "clusterrole", "clusterrolebinding"} {
		if out, err := env.node.Kubectl(ctx, "", "get", kind, name, name+"-critical", "--ignore-not-found", "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("after helm uninstall, %s objects remain: %q %v", kind, out, err)
		}
	}
}
