package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
)

var grpcPort = servicePort{name: "grpc", port: 80, target: 9090}

func TestSkeletonRoutesToAllReadyEndpoints(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2", "b3", "b4")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	writeSlice(t, ns, "echo-b", "echo", grpcPort, endpoint{b["b3"], true}, endpoint{b["b4"], false})
	h := startHoldfast(t, ns)

	ctx := testContext(t)
	code, body, err := h.Get(ctx, "/readyz")
	var ready struct{ Ready, Published bool }
	if err != nil || code != http.StatusOK || json.Unmarshal([]byte(body), &ready) != nil || !ready.Ready || !ready.Published {
		t.Fatalf("/readyz = %d %q (%v), want 200 and ready", code, body, err)
	}

	c := dial(t, h, target(ns, "echo", grpcPort.port))
	if err := c.WaitForBackends(ctx, "b1", "b2", "b3"); err != nil {
		t.Fatal(err)
	}
	// Once converged, every RPC succeeds and round robin spreads them over exactly the 3.
	hits, failures, err := c.Spread(ctx, 90)
	if failures != 0 {
		t.Fatalf("%d of 90 RPCs failed after convergence: %v", failures, err)
	}
	if len(hits) != 3 || hits["b4"] != 0 {
		t.Fatalf("RPCs reached %s, want b1, b2 and b3 only", harness.HitsString(hits))
	}
	for _, id := range []string{"b1", "b2", "b3"} {
		if hits[id] < 20 {
			t.Errorf("backend %s got %d of 90 RPCs, want about 30 (round robin): %s", id, hits[id], harness.HitsString(hits))
		}
	}
}

func TestSkeletonFollowsEndpointChanges(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	altPort := servicePort{name: "alt", port: 81, target: 9091}
	b := startBackends(t, grpcPort.target, "b1", "b2", "b3", "b4")
	alt := startBackends(t, altPort.target, "alt1")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfast(t, ns)
	ctx := testContext(t)
	c := dial(t, h, target(ns, "echo", grpcPort.port))

	steps := []struct {
		name  string
		write func()
		want  []string
	}{
		{"initial", func() {}, []string{"b1"}},
		{"add an endpoint", func() {
			writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
		}, []string{"b1", "b2"}},
		{"remove an endpoint", func() {
			writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b2"], true})
		}, []string{"b2"}},
		{"flip readiness off, add another", func() {
			writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b2"], false}, endpoint{b["b3"], true})
		}, []string{"b3"}},
		{"flip readiness back on", func() {
			writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b2"], true}, endpoint{b["b3"], true})
		}, []string{"b2", "b3"}},
		{"add a second slice", func() {
			writeSlice(t, ns, "echo-b", "echo", grpcPort, endpoint{b["b4"], true})
		}, []string{"b2", "b3", "b4"}},
		{"delete the second slice", func() { deleteSlice(t, ns, "echo-b") }, []string{"b2", "b3"}},
	}
	for _, s := range steps {
		s.write()
		if err := c.WaitForBackends(ctx, s.want...); err != nil {
			t.Fatalf("after %q: %v", s.name, err)
		}
	}

	// A second port: a new Listener, Route, Cluster and assignment, without disturbing the first.
	createService(t, ns, "echo", grpcPort, altPort)
	writeSlice(t, ns, "echo-alt", "echo", altPort, endpoint{alt["alt1"], true})
	altClient := dial(t, h, target(ns, "echo", altPort.port))
	if err := altClient.WaitForBackends(ctx, "alt1"); err != nil {
		t.Fatalf("second port: %v", err)
	}
	if err := c.WaitForBackends(ctx, "b2", "b3"); err != nil {
		t.Fatalf("first port after adding the second: %v", err)
	}
}

func TestSkeletonNotReadyUntilSynced(t *testing.T) {
	t.Parallel()
	// Holdfast pointed at an address where no API server answers is alive, but never ready: it
	// has nothing worth serving.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.cluster.WriteKubeconfig(kubeconfig, "https://127.0.0.1:1", env.cluster.CAFile); err != nil {
		t.Fatal(err)
	}
	h, err := harness.RunHoldfast(env.bins.Holdfast, env.dir, kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	ctx := testContext(t)
	for {
		if code, _, err := h.Get(ctx, "/healthz"); err == nil && code == http.StatusOK {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/healthz never answered: %s", h.LogTail(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
	for range 20 {
		code, body, err := h.Get(ctx, "/readyz")
		if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, `"published":false`) {
			t.Fatalf("/readyz = %d %q (%v), want 503 and not published", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := h.Terminate(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM before the first sync: %v\n%s", err, h.LogTail(20))
	}
}
