package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/faultproxy"
	"github.com/holdfast/holdfast/e2e/harness"
)

// holdfastBehindProxy starts a fault proxy in front of the shared API server and a Holdfast for
// ns that reaches the API server only through it.
func holdfastBehindProxy(t *testing.T, ns string, extra ...string) (*faultproxy.Proxy, *harness.Holdfast) {
	t.Helper()
	p, err := faultproxy.Start(env.cluster.Server, env.cluster.CAFile, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.cluster.WriteKubeconfig(kubeconfig, p.URL, p.CAFile); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, kubeconfig, append([]string{"--namespaces", ns}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Terminate(15 * time.Second); err != nil {
			t.Errorf("holdfast did not exit cleanly: %v", err)
		}
		if t.Failed() {
			t.Logf("holdfast log: %s", h.LogTail(80))
		}
	})
	return p, h
}

// TestResilienceSilentWatch: the API server answers every request, but no watch event arrives
// (the failure of kubernetes/kubernetes#47131 behind the Monzo outage). Probes pass; only the
// watch's silence gives it away, and Holdfast must catch it, list afresh, and pick up the change
// it missed.
func TestResilienceSilentWatch(t *testing.T) {
	t.Parallel()
	const idle = 90 * time.Second // the floor of --watch-idle-timeout
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	p, h := holdfastBehindProxy(t, ns, "--watch-idle-timeout", idle.String())
	ctx, cancel := context.WithTimeout(context.Background(), idle+3*timeout)
	defer cancel()
	c := dial(t, h, target(ns, "echo", grpcPort.port))
	if err := c.WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}

	p.SetMode(faultproxy.StallWatches)
	silentFrom := time.Now()
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	if err := c.WaitForBackends(ctx, "b1", "b2"); err != nil {
		t.Fatalf("the change missed by the silent watch never arrived: %v", err)
	}
	caught := time.Since(silentFrom)
	t.Logf("change missed by a silent watch arrived after %v (idle bound %v)", caught.Round(100*time.Millisecond), idle)
	if caught < idle/2 {
		t.Errorf("the change arrived after %v, before the idle bound could have caught anything: the proxy did not silence the watch", caught)
	}
	if v, err := h.Metric(ctx, `holdfast_source_watch_restarts_total{source="`+ns+`"}`); err != nil || v < 1 {
		t.Errorf("watch restarts = %v (%v), want at least 1", v, err)
	}
	if v, err := h.Metric(ctx, `holdfast_source_probe_failures_total{source="`+ns+`"}`); err == nil && v > 0 {
		t.Errorf("%v probe failures: the API server answered throughout, only the watch was silent", v)
	}
}
