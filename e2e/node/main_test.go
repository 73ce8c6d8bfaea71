// Package node runs Holdfast on a real single-node Kubernetes cluster — the kubelet on
// containerd, the controller manager, the scheduler, kube-proxy and CoreDNS, started by
// e2e/kube — from the image `make image` builds, deployed with the repository's own overlays,
// against applications whose EndpointSlices the real controller writes from real pod
// readiness. The node changes the host (iptables chains, ip_forward, a bridge, hostPath
// directories): its tests share one node, run in this package only, and are never run beside
// another package's (make test runs the e2e packages one at a time).
package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
)

// env is shared by every test of the package: one node, the images, the host-side programs.
var env struct {
	dir      string
	node     *kube.Node
	bins     harness.Binaries
	tools    harness.ClientTools
	version  string // the Holdfast image's tag; versionB is the same image under another tag
	root     string // the module's
	imageTar string // what make image built
}

// Images, as the node knows them.
const (
	holdfastImage = "localhost/holdfast"
	appImage      = "localhost/holdfast-e2e-app"
)

// versionB is a second tag of the Holdfast image, for a rolling update to a new tag.
func versionB() string { return env.version + "-b" }

// timeout bounds each wait for something to become true: a correctness deadline.
const timeout = 90 * time.Second

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e/node: runs a kubelet and containerd: run as root")
		return 1
	}
	var err error
	if env.dir, err = os.MkdirTemp("", "holdfast-e2e-node-"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/node:", err)
		return 1
	}
	defer os.RemoveAll(env.dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if env.bins, err = harness.Build(env.dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/node:", err)
		return 1
	}
	if env.tools, err = harness.InstallClients(env.bins.XDSApp); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/node:", err)
		return 1
	}
	images, err := buildImages(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/node:", err)
		return 1
	}
	start := time.Now()
	if env.node, err = kube.StartNode(ctx, env.dir, kube.NodeOptions{Images: images}); err != nil {
		fmt.Fprintln(os.Stderr, "e2e/node:", err)
		return 1
	}
	defer env.node.Close()
	defer cleanHostPaths()
	fmt.Fprintf(os.Stderr, "e2e/node: node %s Ready with cluster DNS in %v\n", kube.NodeName, time.Since(start).Round(100*time.Millisecond))
	for _, tag := range [][2]string{{holdfastImage + ":" + env.version, holdfastImage + ":" + versionB()}, {appImage + ":v1", appImage + ":v2"}} {
		if err := env.node.Tag(ctx, tag[0], tag[1]); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/node:", err)
			return 1
		}
	}
	return m.Run()
}

// buildImages builds Holdfast's image with `make image` (what a user runs), the test
// application's, Envoy's and the sidecar test's client's, and returns their tars.
func buildImages(ctx context.Context) ([]string, error) {
	root, err := harness.ModuleRoot()
	if err != nil {
		return nil, err
	}
	rev, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return nil, fmt.Errorf("git rev-parse: %w", err)
	}
	env.version = "e2e-" + strings.TrimSpace(string(rev))
	env.root = root
	tar := filepath.Join(env.dir, "holdfast-image.tar")
	env.imageTar = tar
	cmd := exec.CommandContext(ctx, "make", "-s", "image", "IMAGE="+holdfastImage, "VERSION="+env.version, "IMAGE_TAR="+tar)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("make image: %w\n%s", err, out)
	}
	app, err := kube.ImageOf(env.dir, "e2e/cmd/backend", appImage+":v1")
	if err != nil {
		return nil, err
	}
	// TestEnvoySidecarOnNode's: a real Envoy, and grpc-go's application calling through it.
	envoy, err := envoyImageTar(ctx, env.dir, env.tools.Envoy)
	if err != nil {
		return nil, err
	}
	client, err := kube.ImageOf(env.dir, "e2e/cmd/xdsapp", clientImage)
	if err != nil {
		return nil, err
	}
	return []string{tar, app, envoy, client}, nil
}

// The agent DaemonSet's hostPath directories are on this machine: gone when the tests are.
func cleanHostPaths() {
	for _, d := range []string{"/var/run/holdfast", "/var/cache/holdfast"} {
		_ = os.RemoveAll(d)
	}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*timeout)
	t.Cleanup(cancel)
	return ctx
}

// kubectl runs kubectl against the node, failing the test on an error.
func kubectl(ctx context.Context, t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := env.node.Kubectl(ctx, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
