package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
)

// waitStale waits until holdfast_source_stale for ns reads want, and returns how long it took.
func waitStale(ctx context.Context, t *testing.T, h *harness.Holdfast, ns string, want float64) time.Duration {
	t.Helper()
	start := time.Now()
	series := `holdfast_source_stale{source="` + ns + `"}`
	for {
		v, err := h.Metric(ctx, series)
		if err == nil && v == want {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never became %v (last %v, %v)", series, want, v, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readyWhileStale checks that /readyz says ready, and stale, with the source named.
func readyWhileStale(ctx context.Context, t *testing.T, h *harness.Holdfast, ns string) {
	t.Helper()
	code, body, err := h.Get(ctx, "/readyz")
	var r struct {
		Ready, Stale bool
		Sources      []struct{ Name, State string }
	}
	if err != nil || json.Unmarshal([]byte(body), &r) != nil {
		t.Fatalf("/readyz: %v %q", err, body)
	}
	if code != http.StatusOK || !r.Ready || !r.Stale || len(r.Sources) != 1 || r.Sources[0].Name != ns || r.Sources[0].State != "stale" {
		t.Errorf("/readyz while stale = %d %s; want 200, ready, stale, source %s stale", code, body, ns)
	}
}

// faultScenario runs the shape both API-server faults share: routes keep working through the
// fault, the stall is detected, and a change made right after recovery reaches clients.
func faultScenario(t *testing.T, hold time.Duration, inject func(*kube.Cluster) error, recoverFrom func(context.Context, *kube.Cluster) error) {
	k := ownCluster(t)
	ns := newNamespaceOn(t, k)
	b := startBackends(t, grpcPort.target, "b1", "b2", "b3")
	createServiceOn(t, k, ns, "echo", grpcPort)
	writeSliceOn(t, k, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	h := startHoldfastOn(t, k, ns)
	ctx, cancel := context.WithTimeout(context.Background(), hold+3*timeout)
	defer cancel()
	c := dial(t, h, target(ns, "echo", grpcPort.port))
	if err := c.WaitForBackends(ctx, "b1", "b2"); err != nil {
		t.Fatal(err)
	}

	calls := startLoad(20*time.Millisecond, c)
	faultAt := time.Now()
	if err := inject(k); err != nil {
		t.Fatal(err)
	}
	detected := waitStale(ctx, t, h, ns, 1)
	t.Logf("stale detected %v after the fault", detected.Round(10*time.Millisecond))
	if detected > 45*time.Second { // default probe bound is 8s; this is a correctness deadline
		t.Errorf("stale detected only after %v", detected)
	}
	readyWhileStale(ctx, t, h, ns)
	time.Sleep(time.Until(faultAt.Add(hold)))

	if err := recoverFrom(ctx, k); err != nil {
		t.Fatal(err)
	}
	// A change made right after recovery reaches the client.
	writeSliceOn(t, k, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true}, endpoint{b["b3"], true})
	written := time.Now()
	if err := c.WaitForBackends(ctx, "b1", "b2", "b3"); err != nil {
		t.Fatalf("change after recovery: %v", err)
	}
	t.Logf("change after recovery reached the client in %v", time.Since(written).Round(10*time.Millisecond))
	ok, fail, lastErr := calls.finish()
	if fail != 0 {
		t.Errorf("%d of %d RPCs failed across the fault (last: %v)", fail, ok+fail, lastErr)
	}
	t.Logf("%d RPCs across the fault, none failed", ok)
	waitStale(ctx, t, h, ns, 0)
}

func TestResilienceApiserverStopped(t *testing.T) {
	faultScenario(t, 60*time.Second,
		func(k *kube.Cluster) error { return k.APIServer.Pause() },
		func(_ context.Context, k *kube.Cluster) error { return k.APIServer.Resume() })
}

func TestResilienceEtcdKilled(t *testing.T) {
	faultScenario(t, 30*time.Second,
		func(k *kube.Cluster) error { k.Etcd.Kill(); return nil },
		func(ctx context.Context, k *kube.Cluster) error {
			if err := k.Etcd.Start(); err != nil {
				return err
			}
			return k.WaitReady(ctx)
		})
}
