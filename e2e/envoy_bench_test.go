package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/internal/testproc"
)

// BenchmarkEnvoyPropagation measures, through the real API server, the time from an
// EndpointSlice write to the traffic of a fleet of 10 real Envoy sidecars (1.40, Delta and
// SotW) landing on the new endpoint: each iteration moves the service from one backend to the
// other, and each Envoy's time is that of its application's first RPC answered by the new one.
// Run it with -benchtime 20x; BenchmarkEndToEndPropagation is the same figure for grpc-go.
//
// Each Envoy is a pod of its own: a network namespace with its two backends in it, at the same
// two addresses in every pod (the EndpointSlice's), so that one change moves all ten.
func BenchmarkEnvoyPropagation(b *testing.B) {
	for _, flavour := range []string{"delta", "sotw"} {
		b.Run(flavour, func(b *testing.B) { benchEnvoyFleet(b, flavour == "delta", 10) })
	}
}

func benchEnvoyFleet(b *testing.B, delta bool, envoys int) {
	ctx := testContext(b)
	ns := newNamespace(b)
	ports, err := testproc.FreePorts(1)
	if err != nil {
		b.Fatal(err)
	}
	createService(b, ns, "echo", grpcPort)
	// The pods' backends: the same two addresses in every pod, on its loopback device.
	addrs := map[string]netip.Addr{"b1": netip.MustParseAddr("10.250.0.10"), "b2": netip.MustParseAddr("10.250.0.11")}
	slice := func(id string) {
		writeSlice(b, ns, "echo-a", "echo", grpcPort, endpoint{&harness.Backend{ID: id, Addr: addrs[id]}, true})
	}
	slice("b1")
	h := startHoldfastOn(b, env.cluster, ns, "--xds-listen", "0.0.0.0:"+strconv.Itoa(ports[0]), "--envoy-listen-address", "0.0.0.0")
	echo := target(ns, "echo", grpcPort.port)
	apps := make([]*harness.App, envoys)
	for i := range envoys {
		pod := ownNetwork(ctx, b, "hf-bench")
		for _, id := range []string{"b1", "b2"} {
			if out, err := exec.CommandContext(ctx, "ip", "-n", pod.Name, "addr", "add", addrs[id].String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
				b.Fatalf("ip addr add: %v %s", err, out)
			}
			be, err := harness.StartBackendAt(ctx, pod, env.bins.Backend, id, addrs[id], grpcPort.target)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(be.Kill)
		}
		addr, err := pod.NewAddress(ctx)
		if err != nil {
			b.Fatal(err)
		}
		args := []string{"bootstrap", "--envoy", "--node-id", fmt.Sprintf("bench-envoy-%d", i),
			"--server", net.JoinHostPort(pod.Host.String(), strconv.Itoa(ports[0]))}
		if delta {
			args = append(args, "--delta")
		}
		bs, err := exec.CommandContext(ctx, env.bins.Holdfast, args...).Output()
		if err != nil {
			b.Fatalf("holdfast bootstrap --envoy: %v", err)
		}
		a, err := harness.StartApp(ctx, tools(b), harness.ImplEnvoy, harness.AppOptions{Bootstrap: bs, Targets: []string{echo},
			Interval: 10 * time.Millisecond, Dir: env.dir, Sidecar: &harness.Sidecar{Network: pod, Addr: addr}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(a.Stop)
		apps[i] = a
	}
	for _, a := range apps {
		if err := a.Routing(ctx, echo, "b1"); err != nil {
			b.Fatal(err)
		}
	}
	var took []time.Duration
	next := "b2"
	for b.Loop() {
		marks := make([]int, len(apps))
		for i, a := range apps {
			marks[i] = a.Mark()
		}
		start := time.Now()
		slice(next)
		for i, a := range apps {
			for {
				rs := a.Since(marks[i], echo)
				if j := slices.IndexFunc(rs, func(r harness.Result) bool { return r.OK && r.Backend == next }); j >= 0 {
					took = append(took, rs[j].At.Sub(start))
					break
				}
				select {
				case <-ctx.Done():
					b.Fatalf("Envoy %d never sent to %s", i, next)
				case <-time.After(time.Millisecond):
				}
			}
		}
		next = map[string]string{"b1": "b2", "b2": "b1"}[next]
	}
	b.StopTimer()
	noNacks(context.Background(), b, h)
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
	b.ReportMetric(ms(took[len(took)*99/100]), "p99-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
}
