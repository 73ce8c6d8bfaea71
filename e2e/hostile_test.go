package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/holdfast/holdfast/e2e/harness"
)

// heapBytes reads Holdfast's live heap from its metrics, after a garbage collection (asked for
// through /debug/pprof/heap?gc=1: Holdfast runs with --debug-pprof).
func heapBytes(ctx context.Context, t *testing.T, h *harness.Holdfast) float64 {
	t.Helper()
	if code, _, err := h.Get(ctx, "/debug/pprof/heap?gc=1"); err != nil || code != 200 {
		t.Fatalf("heap profile: %d %v", code, err)
	}
	v, err := h.Metric(ctx, "go_memstats_heap_alloc_bytes")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestGarbageTypeURLsBounded: one unauthenticated client sending 300,000 distinct type URLs that
// are no xDS type (SotW and Delta), and one subscribing to 300,000 names Holdfast has no
// resource of. The first has its stream ended at its first request (InvalidArgument, counted
// as unknown_type); the second keeps its stream and has every name over the budget refused.
// Holdfast's heap stays within a small bound and another client routes throughout.
func TestGarbageTypeURLsBounded(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfastOn(t, env.cluster, ns, "--debug-pprof")
	app := dial(t, h, target(ns, "echo", grpcPort.port))
	if err := app.WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	load := startLoad(20*time.Millisecond, app)
	heapBefore := heapBytes(ctx, t, h)

	conn, err := grpc.NewClient(h.XDSAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	const garbage = 300000
	node := &corev3.Node{Id: "hostile", UserAgentName: "envoy"}

	// sendUntilEnd sends requests until the stream ends, and returns how many requests went out
	// first and how it ended.
	sendUntilEnd := func(send func(i int) error, recv func() error) (int, error) {
		ended := make(chan error, 1)
		go func() {
			for {
				if err := recv(); err != nil {
					ended <- err
					return
				}
			}
		}()
		for i := range garbage {
			if err := send(i); err != nil {
				return i, <-ended
			}
			select {
			case err := <-ended:
				return i + 1, err
			default:
			}
		}
		select {
		case err := <-ended:
			return garbage, err
		case <-time.After(timeout):
			return garbage, errors.New("the stream never ended")
		}
	}
	for _, flavour := range []string{"sotw", "delta"} {
		sctx, cancel := context.WithCancel(ctx)
		var end error
		var sent int
		if flavour == "sotw" {
			st, err := ads.StreamAggregatedResources(sctx)
			if err != nil {
				t.Fatal(err)
			}
			sent, end = sendUntilEnd(func(i int) error {
				return st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: fmt.Sprintf("type.googleapis.com/garbage.DoesNotExist%d", i)})
			}, func() error { _, err := st.Recv(); return err })
		} else {
			st, err := ads.DeltaAggregatedResources(sctx)
			if err != nil {
				t.Fatal(err)
			}
			sent, end = sendUntilEnd(func(i int) error {
				return st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: fmt.Sprintf("not-a-type-url-%d", i)})
			}, func() error { _, err := st.Recv(); return err })
		}
		cancel()
		t.Logf("%s: %d garbage type URLs sent before the stream ended with %v", flavour, sent, end)
		if status.Code(end) != codes.InvalidArgument {
			t.Errorf("%s: the stream ended with %v, want InvalidArgument", flavour, end)
		}
	}
	if n, err := h.Metric(ctx, `holdfast_xds_bad_requests_total{reason="unknown_type"}`); err != nil || n != 2 {
		t.Errorf(`holdfast_xds_bad_requests_total{reason="unknown_type"} = %v (%v), want 2: one per stream`, n, err)
	}

	// 300,000 names nobody serves, in Delta subscriptions of 10,000: the stream stays, the names
	// over the budget are refused.
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	for i := 0; i < garbage; i += 10000 {
		names := make([]string, 10000)
		for j := range names {
			names[j] = fmt.Sprintf("no-such-service-%d.%s.svc.cluster.local:80", i+j, ns)
		}
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: names}
		if i == 0 {
			req.Node = &corev3.Node{Id: "hoarder", UserAgentName: "envoy"}
		}
		if err := st.Send(req); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("the hoarder's stream ended: %v", err)
		}
	}
	waitMetric(ctx, t, h, "holdfast_xds_refused_names_total", func(v float64) bool { return v == garbage-10000 })
	heapAfter := heapBytes(ctx, t, h)
	t.Logf("heap %.1f MiB before, %.1f MiB after 600,000 garbage type URLs and 300,000 unknown names", heapBefore/(1<<20), heapAfter/(1<<20))
	if heapAfter > heapBefore+16<<20 {
		t.Errorf("heap grew from %.1f to %.1f MiB", heapBefore/(1<<20), heapAfter/(1<<20))
	}
	if ok, failed, lastErr := load.finish(); failed != 0 || ok == 0 {
		t.Errorf("the other client: %d RPCs failed, %d succeeded (last error %v)", failed, ok, lastErr)
	}
}
