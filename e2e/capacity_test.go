package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/internal/leakcheck"
)

// TestCapacityLimitAndGC: at the service limit the next service is refused with a clear error
// while existing routes are untouched; a deleted service is kept as a tombstone for its grace
// period, then collected; over the client limit new streams are refused. The churn half of the
// issue's proof is TestCapacityChurnCollectsTombstones.
func TestCapacityLimitAndGC(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b0", "b5")
	for i := range 5 {
		createService(t, ns, fmt.Sprintf("s%d", i), grpcPort)
	}
	writeSlice(t, ns, "s0-a", "s0", grpcPort, endpoint{b["b0"], true})
	h := startHoldfastOn(t, env.cluster, ns, "--max-services", "5", "--max-clients", "2", "--tombstone-grace", "3s")
	ctx := testContext(t)
	s0 := dial(t, h, target(ns, "s0", grpcPort.port))
	if err := s0.WaitForBackends(ctx, "b0"); err != nil {
		t.Fatal(err)
	}
	waitMetric(ctx, t, h, `holdfast_capacity_used_ratio{kind="services"}`, func(v float64) bool { return v == 1 })

	envoy, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "capacity"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = envoy.Close() })
	cluster := func(i int) string { return target(ns, fmt.Sprintf("s%d", i), grpcPort.port) }
	hasClusters := func(in []int, out []int) func(adsclient.State) bool {
		return func(s adsclient.State) bool {
			for _, i := range in {
				if _, ok := s.Upstream(resourcev3.ClusterType, cluster(i)); !ok {
					return false
				}
			}
			for _, i := range out {
				if _, ok := s.Upstream(resourcev3.ClusterType, cluster(i)); ok {
					return false
				}
			}
			return true
		}
	}
	if err := envoy.WaitFor(ctx, hasClusters([]int{0, 1, 2, 3, 4}, nil)); err != nil {
		t.Fatal(err)
	}

	// The sixth service is refused; the first five keep routing.
	createService(t, ns, "s5", grpcPort)
	writeSlice(t, ns, "s5-a", "s5", grpcPort, endpoint{b["b5"], true})
	waitMetric(ctx, t, h, `holdfast_capacity_refused_total{kind="services"}`, positive)
	if !strings.Contains(h.LogTail(50), "services refused: a capacity limit is reached") {
		t.Error("no log line for the refusal")
	}
	if s := envoy.State(); !hasClusters([]int{0, 1, 2, 3, 4}, []int{5})(s) {
		t.Errorf("clusters after the refusal: %s", describe(s))
	}
	if hits, failures, err := s0.Spread(ctx, 5); failures != 0 || hits["b0"] != 5 {
		t.Errorf("s0 disturbed by the refusal: %v %d %v", hits, failures, err)
	}

	// Deleting s4 frees its slot: s5 gets in; s4 stays as a tombstone (no endpoints) for its
	// grace period, then goes.
	if err := env.cluster.Client.CoreV1().Services(ns).Delete(ctx, "s4", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := envoy.WaitFor(ctx, hasClusters([]int{0, 1, 2, 3, 4, 5}, nil)); err != nil {
		t.Fatalf("s5 never admitted, or s4 dropped without a tombstone: %v", err)
	}
	waitMetric(ctx, t, h, "holdfast_tombstones", func(v float64) bool { return v == 1 })
	deleted := time.Now()
	if err := envoy.WaitFor(ctx, hasClusters([]int{0, 1, 2, 3, 5}, []int{4})); err != nil {
		t.Fatalf("the tombstone was never collected: %v", err)
	}
	if kept := time.Since(deleted); kept > 20*time.Second {
		t.Errorf("tombstone collected after %v; grace is 3s", kept)
	}
	waitMetric(ctx, t, h, "holdfast_tombstones", func(v float64) bool { return v == 0 })

	// Two streams are open (s0's grpc client and the Envoy-like client): a third is refused.
	third, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "one-too-many"})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	werr := third.WaitFor(ctx, func(adsclient.State) bool { return false })
	if werr == nil || !strings.Contains(werr.Error(), "ResourceExhausted") {
		t.Errorf("a stream over --max-clients: %v, want ResourceExhausted", werr)
	}
	waitMetric(ctx, t, h, `holdfast_capacity_used_ratio{kind="clients"}`, func(v float64) bool { return v == 1 })

}

// TestCapacityChurnCollectsTombstones: 10,000 create/delete cycles through the real API server
// leave no tombstones behind once their grace period is over, and the live heap does not grow
// with the cycles: measured after a forced GC with no tombstone left, after 2,000 cycles (maps
// have grown to their size by then; Go maps never shrink), 6,000 and 10,000, it must grow by
// less than 512 bytes a cycle (leakcheck.HeapPerCycle: a leak of 1 KiB a cycle fails it).
func TestCapacityChurnCollectsTombstones(t *testing.T) {
	t.Parallel()
	const cycles, workers = 10000, 16
	ns := newNamespace(t)
	createService(t, ns, "steady", grpcPort)
	h := startHoldfastOn(t, env.cluster, ns, "--tombstone-grace", "2s", "--debug-pprof")
	// 10,000 cycles take about 40 s here, bound by the API server; allow five times that.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Second)
	defer cancel()
	waitMetric(ctx, t, h, "holdfast_resolver_services", positive)

	cfg := rest.CopyConfig(env.cluster.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit: the API server is the bottleneck
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svcs := client.CoreV1().Services(ns)
	start := time.Now()
	var peak atomic.Int64 // the most tombstones seen during the churn
	sampled := make(chan struct{})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	go func() {
		defer close(sampled)
		for sampleCtx.Err() == nil {
			if v, err := h.Metric(sampleCtx, "holdfast_tombstones"); err == nil && int64(v) > peak.Load() {
				peak.Store(int64(v))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	// quietHeap waits until every tombstone is collected, then reads the live heap after a GC.
	quietHeap := func(done int) leakcheck.Sample {
		t.Helper()
		waitMetric(ctx, t, h, "holdfast_tombstones", func(v float64) bool { return v == 0 })
		if code, _, err := h.Get(ctx, "/debug/pprof/heap?gc=1"); err != nil || code != 200 {
			t.Fatalf("forcing a GC: %d %v", code, err)
		}
		v, err := h.Metric(ctx, "go_gc_heap_live_bytes")
		if err != nil {
			t.Fatal(err)
		}
		return leakcheck.Sample{At: float64(done), Value: v}
	}
	churn := func(from, to int) {
		t.Helper()
		g, gctx := errgroup.WithContext(ctx)
		for w := range workers {
			g.Go(func() error {
				for i := from + w; i < to; i += workers {
					svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%d", i)},
						Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: grpcPort.name, Port: grpcPort.port}}}}
					if _, err := svcs.Create(gctx, svc, metav1.CreateOptions{}); err != nil {
						return err
					}
					time.Sleep(50 * time.Millisecond) // long enough for Holdfast to see it, mostly
					if err := svcs.Delete(gctx, svc.Name, metav1.DeleteOptions{}); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	var heap []leakcheck.Sample
	done := 0
	for _, upTo := range []int{2000, 6000, cycles} {
		churn(done, upTo)
		done = upTo
		heap = append(heap, quietHeap(done))
	}
	t.Logf("%d create/delete cycles in %v", cycles, time.Since(start).Round(time.Millisecond))
	stopSampling()
	<-sampled
	if peak.Load() == 0 {
		t.Fatal("no tombstone was ever seen: the churned services never reached the store")
	}
	t.Logf("tombstones peaked at %d; live heap after cycles (forced GC): %s", peak.Load(), leakcheck.Format(heap))
	if err := leakcheck.HeapPerCycle.Check(heap); err != nil {
		t.Errorf("the heap grows with create/delete cycles: %v", err)
	}
}
