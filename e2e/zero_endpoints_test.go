package e2e

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/holdfast/holdfast/e2e/harness"
)

// failsFast checks that an RPC with a generous deadline fails with UNAVAILABLE long before the
// deadline: the client knows there is nothing to route to, it does not hang waiting.
func failsFast(ctx context.Context, t *testing.T, c *harness.GRPCClient, what string) {
	t.Helper()
	const deadline = 10 * time.Second
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, deadline)
		start := time.Now()
		_, err := c.Call(cctx)
		elapsed := time.Since(start)
		cancel()
		if status.Code(err) == codes.Unavailable && elapsed < deadline/2 {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("%s: RPCs never failed fast with UNAVAILABLE; last: %v after %v", what, last, elapsed)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestResilienceZeroEndpoints(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2", "b3", "other")
	createService(t, ns, "echo", grpcPort)
	createService(t, ns, "other", grpcPort)
	createService(t, ns, "empty", grpcPort) // no slices at all, ever
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true}, endpoint{b["b3"], true})
	writeSlice(t, ns, "other-a", "other", grpcPort, endpoint{b["other"], true})
	sidecar, args := withEnvoy(t)
	h := startHoldfastOn(t, env.cluster, ns, args...)
	ctx := testContext(t)
	// grpc-go, and an application behind a real Envoy sidecar: each sees every step.
	type via struct {
		name               harness.Impl
		echo, other, empty *harness.GRPCClient
	}
	e := via{name: harness.ImplEnvoy}
	var envoy *harness.Envoy
	e.echo, envoy = sidecarEnvoy(ctx, t, h, sidecar, target(ns, "echo", grpcPort.port), grpcPort.port)
	for _, c := range []struct {
		svc string
		to  **harness.GRPCClient
	}{{"other", &e.other}, {"empty", &e.empty}} {
		cc, err := harness.DialVia(net.JoinHostPort(sidecar.Addr.String(), strconv.Itoa(int(grpcPort.port))), target(ns, c.svc, grpcPort.port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		*c.to = cc
	}
	clients := []via{{name: harness.ImplGo, echo: dial(t, h, target(ns, "echo", grpcPort.port)),
		other: dial(t, h, target(ns, "other", grpcPort.port)), empty: dial(t, h, target(ns, "empty", grpcPort.port))}, e}

	for _, c := range clients {
		if err := c.echo.WaitForBackends(ctx, "b1", "b2", "b3"); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		failsFast(ctx, t, c.empty, string(c.name)+": a service created without endpoints")
	}

	steps := []struct {
		name  string
		write func()
		want  []string // nil: zero endpoints
	}{
		{"only not-ready endpoints", func() {
			writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], false}, endpoint{b["b2"], false})
		}, nil},
		{"scaled to one", func() { writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}) }, []string{"b1"}},
		{"an empty slice", func() { writeSlice(t, ns, "echo-a", "echo", grpcPort) }, nil},
		{"back to three", func() {
			writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true}, endpoint{b["b3"], true})
		}, []string{"b1", "b2", "b3"}},
		{"no slices at all", func() { deleteSlice(t, ns, "echo-a") }, nil},
		{"a new slice again", func() { writeSlice(t, ns, "echo-b", "echo", grpcPort, endpoint{b["b2"], true}) }, []string{"b2"}},
	}
	for _, s := range steps {
		s.write()
		for _, c := range clients {
			if s.want == nil {
				failsFast(ctx, t, c.echo, string(c.name)+": "+s.name)
			} else if err := c.echo.WaitForBackends(ctx, s.want...); err != nil {
				t.Fatalf("%s: %s: %v", c.name, s.name, err)
			}
			// The other service never notices.
			if hits, failures, err := c.other.Spread(ctx, 5); failures != 0 || hits["other"] != 5 {
				t.Fatalf("%s: %s: the other service was disturbed: %s, %d failures (%v)", c.name, s.name, harness.HitsString(hits), failures, err)
			}
		}
	}
	if v, err := envoy.Stat(ctx, "listener_manager.listener_removed"); err != nil || v != 0 {
		t.Errorf("Envoy removed %v listeners while a service had no endpoints (%v)", v, err)
	}
	for _, c := range clients {
		record("zero endpoints: created empty, only not ready, an empty slice, no slice, then back", string(c.name),
			"fails fast (UNAVAILABLE) with none, routes when they return; other services undisturbed")
	}
}
