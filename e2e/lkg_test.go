package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
	"github.com/holdfast/holdfast/resolver"
)

// runHoldfast starts Holdfast on k for ns with a state dir; the caller decides how it ends.
func runHoldfast(t *testing.T, k *kube.Cluster, ns, stateDir string) *harness.Holdfast {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, k.Kubeconfig, "--namespaces", ns, "--state-dir", stateDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("holdfast log: %s", h.LogTail(30))
		}
	})
	return h
}

func waitMetric(ctx context.Context, t *testing.T, h *harness.Holdfast, series string, ok func(float64) bool) {
	t.Helper()
	if err := harness.Eventually(ctx, func() bool { v, err := h.Metric(ctx, series); return err == nil && ok(v) }); err != nil {
		v, merr := h.Metric(ctx, series)
		t.Fatalf("%s never as wanted (last %v, %v)", series, v, merr)
	}
}

// positive is true for a counter that has counted something.
func positive(v float64) bool { return v >= 1 }

// checkStateProvenance waits until the state file records service svc with the
// resourceVersions the API server has for it and its slice, and when it was observed (the file
// is written at most once a second, so it may lag the API server by a moment).
func checkStateProvenance(ctx context.Context, t *testing.T, k *kube.Cluster, path, ns, svc, slice string) {
	t.Helper()
	var last error
	if harness.Eventually(ctx, func() bool { last = stateProvenance(ctx, t, k, path, ns, svc, slice); return last == nil }) != nil {
		t.Fatal(last)
	}
}

func stateProvenance(ctx context.Context, t *testing.T, k *kube.Cluster, path, ns, svc, slice string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	_, payload, ok := bytes.Cut(data, []byte("\n"))
	if !ok {
		return errors.New("state file has no header line")
	}
	var state struct{ Services []resolver.Service }
	if err := json.Unmarshal(payload, &state); err != nil {
		return err
	}
	apiSvc, err := k.Client.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		return err
	}
	apiSlice, err := k.Client.DiscoveryV1().EndpointSlices(ns).Get(ctx, slice, metav1.GetOptions{})
	if err != nil {
		return err
	}
	want := []resolver.ObjectVersion{{Name: slice, ResourceVersion: apiSlice.ResourceVersion}}
	for _, s := range state.Services {
		if s.Namespace != ns || s.Name != svc {
			continue
		}
		o := s.Origin
		if o.ServiceVersion != apiSvc.ResourceVersion || !reflect.DeepEqual(o.Slices, want) || o.ObservedAt.IsZero() {
			return fmt.Errorf("state file provenance of %s/%s = %+v; the API server has service %s, slices %+v", ns, svc, o, apiSvc.ResourceVersion, want)
		}
		t.Logf("provenance in the state file: service rv %s, slices %+v, observed %v", o.ServiceVersion, o.Slices, o.ObservedAt)
		return nil
	}
	return fmt.Errorf("%s/%s is not in the state file", ns, svc)
}

func TestLKGCorruptStateFile(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	stateDir := t.TempDir()
	path := filepath.Join(stateDir, "state")
	ctx := testContext(t)

	h := runHoldfast(t, env.cluster, ns, stateDir)
	waitMetric(ctx, t, h, "holdfast_state_writes_total", positive)
	if err := h.Terminate(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte{}, good...)
	flipped[len(flipped)/2] ^= 0x10
	for _, tt := range []struct {
		name, reason string
		data         []byte
	}{
		{"truncated", "truncated", good[:len(good)*2/3]},
		{"bit flip", "checksum", flipped},
	} {
		if err := os.WriteFile(path, tt.data, 0o600); err != nil {
			t.Fatal(err)
		}
		h := runHoldfast(t, env.cluster, ns, stateDir) // ready means synced from the API server
		waitMetric(ctx, t, h, `holdfast_state_load_errors_total{reason="`+tt.reason+`"}`, func(v float64) bool { return v == 1 })
		if !strings.Contains(h.LogTail(200), "state file ignored") {
			t.Errorf("%s: no log line about the bad state file", tt.name)
		}
		c := dial(t, h, target(ns, "echo", grpcPort.port))
		if err := c.WaitForBackends(ctx, "b1"); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		_ = c.Close()
		if err := h.Terminate(15 * time.Second); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
	}
	// The last clean shutdown wrote a good file again.
	if data, _ := os.ReadFile(path); !strings.HasPrefix(string(data), "holdfast-state 1 ") {
		t.Errorf("no good state file after a clean shutdown: %q", data[:min(len(data), 40)])
	}
}

// TestReadinessReflectsStuckStateStore: a Holdfast that cannot persist its state is alive and
// keeps serving, but says it is not ready, and why; once the disk works again, it is ready again.
func TestReadinessReflectsStuckStateStore(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	stateDir := filepath.Join(t.TempDir(), "state")
	ctx := testContext(t)
	sctx, cancel := context.WithTimeout(ctx, timeout)
	h, err := harness.StartHoldfast(sctx, env.bins.Holdfast, env.dir, env.cluster.Kubeconfig, "--namespaces", ns, "--state-dir", stateDir, "--stuck-after", "2s")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Terminate(15 * time.Second) })
	waitMetric(ctx, t, h, "holdfast_state_writes_total", positive)

	// The state directory becomes a file: every write fails, even for root.
	if err := os.RemoveAll(stateDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stateDir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	c := dial(t, h, target(ns, "echo", grpcPort.port))
	if err := c.WaitForBackends(ctx, "b1", "b2"); err != nil {
		t.Fatalf("serving must go on while the disk fails: %v", err)
	}
	if err := harness.Eventually(ctx, func() bool {
		code, body, err := h.Get(ctx, "/readyz")
		return err == nil && code == 503 && strings.Contains(body, "state file not written")
	}); err != nil {
		_, body, _ := h.Get(ctx, "/readyz")
		t.Fatalf("/readyz never reported the stuck state store: %s", body)
	}
	waitMetric(ctx, t, h, "holdfast_state_write_errors_total", positive)

	if err := os.Remove(stateDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(stateDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(ctx); err != nil {
		t.Fatalf("not ready again once the disk works: %v", err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "state")); err != nil {
		t.Errorf("no state file after recovery: %v", err)
	}
}
