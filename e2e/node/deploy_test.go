package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/internal/testpki"
	"github.com/holdfast/holdfast/xds/bootstrap"
)

// deployment is Holdfast as deployed on the node by the repository's with-agent overlay.
type deployment struct {
	clusterIP string // the holdfast Service's
	caFile    string // the CA of Holdfast's certificate
	agentSock string // the agent DaemonSet's socket, on this machine (a hostPath)
}

var deployed struct {
	once sync.Once
	d    deployment
	err  error
}

// holdfast deploys Holdfast once for the package (the tests that change it restore it).
func holdfast(t testing.TB) deployment {
	t.Helper()
	deployed.once.Do(func() { deployed.d, deployed.err = deploy(context.Background()) })
	if deployed.err != nil {
		t.Fatal(deployed.err)
	}
	return deployed.d
}

// testOverlay is the kustomization the tests apply: the repository's with-agent overlay as it
// is, with only what one node forces changed, and the image built for the tests under the tag
// version. args are appended to Holdfast's (a test that needs other thresholds says why).
func testOverlay(version string, args ...string) (string, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(env.dir, "overlay-")
	if err != nil {
		return "", err
	}
	// kustomize takes a base by a relative path only.
	base, err := filepath.Rel(dir, filepath.Join(root, "deploy", "overlays", "with-agent"))
	if err != nil {
		return "", err
	}
	k := fmt.Sprintf(`# The with-agent overlay on one node of 2 CPUs. Changed, and why:
# - replicas 2: three replicas of 500m CPU each, plus a fourth during a rolling update (maxSurge
#   1), do not fit; two and a surge do. Spread and anti-affinity stay: on one node they are
#   satisfied as they are.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: registry.example.com/holdfast
    newName: %s
    newTag: %s
patches:
  - target: {kind: Deployment, name: holdfast}
    patch: |
      - op: replace
        path: /spec/replicas
        value: 2
`, base, holdfastImage, version)
	for _, a := range args {
		k += fmt.Sprintf("      - op: add\n        path: /spec/template/spec/containers/0/args/-\n        value: %q\n", a)
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600)
}

func deploy(ctx context.Context) (deployment, error) {
	var d deployment
	overlay, err := testOverlay(env.version)
	if err != nil {
		return d, err
	}
	if out, err := env.node.Kubectl(ctx, "", "apply", "-k", overlay); err != nil {
		return d, fmt.Errorf("apply the overlay: %w\n%s", err, out)
	}
	ip, err := env.node.Kubectl(ctx, "", "-n", "holdfast-system", "get", "service", "holdfast", "-o", "jsonpath={.spec.clusterIP}")
	if err != nil {
		return d, err
	}
	d.clusterIP = strings.TrimSpace(ip)
	// Holdfast's certificate: its Service's names (the agent dials holdfast.holdfast-system.svc)
	// and its cluster IP (clients on this machine dial that).
	ca, err := testpki.NewCA("holdfast e2e node CA")
	if err != nil {
		return d, err
	}
	leaf, err := ca.Issue("holdfast", "holdfast.holdfast-system.svc", "holdfast.holdfast-system.svc.cluster.local", d.clusterIP)
	if err != nil {
		return d, err
	}
	files := map[string][]byte{"ca.crt": ca.PEM(), "tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(env.dir, n), b, 0o600); err != nil {
			return d, err
		}
	}
	d.caFile, d.agentSock = filepath.Join(env.dir, "ca.crt"), "/var/run/holdfast/agent.sock"
	for _, args := range [][]string{
		{"-n", "holdfast-system", "create", "secret", "generic", "holdfast-tls", "--from-file=" + filepath.Join(env.dir, "tls.crt"),
			"--from-file=" + filepath.Join(env.dir, "tls.key"), "--from-file=" + d.caFile},
		{"-n", "holdfast-node", "create", "configmap", "holdfast-ca", "--from-file=" + d.caFile},
	} {
		if out, err := env.node.Kubectl(ctx, "", args...); err != nil {
			return d, fmt.Errorf("%w\n%s", err, out)
		}
	}
	for _, w := range [][]string{
		{"-n", "holdfast-system", "rollout", "status", "deployment/holdfast", "--timeout=180s"},
		{"-n", "holdfast-node", "rollout", "status", "daemonset/holdfast-agent", "--timeout=180s"},
	} {
		if out, err := env.node.Kubectl(ctx, "", w...); err != nil {
			pods, _ := env.node.Kubectl(ctx, "", "get", "pods", "-A", "-o", "wide")
			return d, fmt.Errorf("%w\n%s\n%s\nkubelet: %s", err, out, pods, env.node.Kubelet.Tail(30))
		}
	}
	return d, nil
}

// appNamespace creates a namespace with the test application: replicas pods of its image
// behind Service app (port 80, named grpc), each ready through its own readiness endpoint,
// draining 3 s after SIGTERM as a well-behaved server does.
func appNamespace(ctx context.Context, t testing.TB, name string, replicas int) string {
	t.Helper()
	kubectl(ctx, t, "", "create", "namespace", name)
	kubectl(ctx, t, "", "label", "namespace", name, "holdfast.io/mesh=true")
	t.Cleanup(func() { _, _ = env.node.Kubectl(context.Background(), "", "delete", "namespace", name, "--wait=false") })
	kubectl(ctx, t, appManifest(name, replicas, "v1"), "apply", "-f", "-")
	kubectl(ctx, t, "", "-n", name, "rollout", "status", "deployment/app", "--timeout=120s")
	return name
}

func appManifest(ns string, replicas int, tag string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: %[1]s}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: app}}
  strategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 10
      enableServiceLinks: false
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 65532}
      containers:
      - name: app
        image: %[3]s:%[4]s
        args: [--listen=:8080, --http=:8081, --drain=3s]
        ports: [{name: grpc, containerPort: 8080}, {name: ready, containerPort: 8081}]
        readinessProbe: {httpGet: {path: /ready, port: 8081}, periodSeconds: 1, failureThreshold: 1}
        resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: %[1]s}
spec:
  selector: {app: app}
  ports: [{name: grpc, port: 80, targetPort: grpc, appProtocol: kubernetes.io/h2c}]
`, ns, replicas, appImage, tag)
}

// appTarget is the xds:/// name of the test application in ns.
func appTarget(ns string) string { return "app." + ns + ".svc.cluster.local:80" }

// podNames lists the Ready pods of the application in ns, sorted.
func podNames(ctx context.Context, t testing.TB, ns string) []string {
	t.Helper()
	pods, err := env.node.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=app"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				names = append(names, p.Name)
			}
		}
	}
	sort.Strings(names)
	return names
}

// clientApps starts, on this machine, one application per xDS client implementation calling
// target: grpc-go and C-core 1.85 straight to Holdfast over TLS (their tls channel credentials)
// unless allAgent, gRPC for Node, C-core 1.51 and grpc-java through the node's holdfast-agent on
// its Unix socket — each implementation's secure path here (docs/clients.md).
func clientApps(ctx context.Context, t testing.TB, d deployment, target string, allAgent bool) map[harness.Impl]*harness.App {
	t.Helper()
	apps := map[harness.Impl]*harness.App{}
	for _, impl := range harness.Impls {
		apps[impl] = startApp(ctx, t, d, target, impl, allAgent, 0)
	}
	return apps
}

// startApp starts one application of impl calling target every interval (0: the default).
func startApp(ctx context.Context, t testing.TB, d deployment, target string, impl harness.Impl, viaAgent bool, interval time.Duration) *harness.App {
	t.Helper()
	o := bootstrap.Options{NodeID: fmt.Sprintf("%s-%s", impl, t.Name()), Server: "unix://" + d.agentSock}
	switch impl {
	case harness.ImplGo, harness.ImplCoreNew: // tls channel credentials (gRFC A65)
		o.Client = bootstrap.ClientGRPCGo
		if !viaAgent {
			o.Server, o.CAFile = d.clusterIP+":18000", d.caFile
		}
	case harness.ImplNode:
		o.Client = bootstrap.ClientGRPCNode
	case harness.ImplCore: // through the agent (docs/clients.md)
		o.Client = bootstrap.ClientGRPCCore
	case harness.ImplJava: // through the agent: its tls channel credentials ignore their files
		o.Client = bootstrap.ClientGRPCJava
	}
	b, err := bootstrap.GRPC(o)
	if err != nil {
		t.Fatal(err)
	}
	a, err := harness.StartApp(ctx, env.tools, impl, harness.AppOptions{Bootstrap: b, Targets: []string{target}, Dir: env.dir, Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("%s application: %s", impl, a.Stderr(20))
		}
	})
	return a
}

// TestDeployOnNode: the with-agent overlay applied for real (through the test overlay above):
// Holdfast's pods become Ready through their probes and serve; the agent DaemonSet's pod runs
// on the node; a client of each implementation reaches the application's pods, whose
// EndpointSlice the real controller wrote from their readiness.
func TestDeployOnNode(t *testing.T) {
	ctx := testContext(t)
	d := holdfast(t)
	ns := appNamespace(ctx, t, "deploy-on-node", 2)
	pods := podNames(ctx, t, ns)
	if len(pods) != 2 {
		t.Fatalf("application pods ready: %v, want 2", pods)
	}
	apps := clientApps(ctx, t, d, appTarget(ns), false)
	for impl, a := range apps {
		if err := a.Routing(ctx, appTarget(ns), pods...); err != nil {
			t.Errorf("%s: %v", impl, err)
		}
	}
	ready := kubectl(ctx, t, "", "-n", "holdfast-system", "get", "pods", "-l", "app.kubernetes.io/name=holdfast", "-o",
		`jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}`)
	if strings.TrimSpace(ready) != "True True" {
		t.Errorf("Holdfast pods Ready: %q, want two", ready)
	}
}
