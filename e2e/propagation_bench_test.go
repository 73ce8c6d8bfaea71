package e2e

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkEndToEndPropagation measures, through the real API server, the time from an
// EndpointSlice write to a grpc-go xDS client's RPCs landing on the new endpoint. Each
// iteration moves the service from one backend to the other; run it with -benchtime 100x.
func BenchmarkEndToEndPropagation(b *testing.B) {
	ns := newNamespace(b)
	be := startBackends(b, grpcPort.target, "b1", "b2")
	createService(b, ns, "echo", grpcPort)
	writeSlice(b, ns, "echo-a", "echo", grpcPort, endpoint{be["b1"], true})
	h := startHoldfast(b, ns)
	ctx := testContext(b)
	c := dial(b, h, target(ns, "echo", grpcPort.port))
	if err := c.WaitForBackends(ctx, "b1"); err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	next := "b2"
	for b.Loop() {
		start := time.Now()
		writeSlice(b, ns, "echo-a", "echo", grpcPort, endpoint{be[next], true})
		for {
			id, err := c.Call(ctx)
			if err == nil && id == next {
				break
			}
			if ctx.Err() != nil {
				b.Fatalf("RPCs never reached %s", next)
			}
		}
		took = append(took, time.Since(start))
		next = map[string]string{"b1": "b2", "b2": "b1"}[next]
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)*99/100]), "p99-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
}
