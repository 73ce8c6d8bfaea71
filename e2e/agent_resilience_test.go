package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/internal/testproc"
	"github.com/holdfast/holdfast/xds/bootstrap"
)

// freeAddr is a loopback address nothing listens on yet, for a process started later (or
// twice) at the same address.
func freeAddr(t *testing.T) string { return freeAddrOn(t, "127.0.0.1") }

// freeAddrOn is host with a port free on this machine.
func freeAddrOn(t *testing.T, host string) string {
	t.Helper()
	ports, err := testproc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(host, strconv.Itoa(ports[0]))
}

// agentStatus is what the agent's /readyz says.
type agentStatus struct {
	Ready    bool     `json:"ready"`
	NotReady []string `json:"not_ready"`
	Upstream map[string]struct {
		Connected bool      `json:"connected"`
		Since     time.Time `json:"since"`
		Complete  bool      `json:"complete"`
	} `json:"upstream"`
}

func readyz(ctx context.Context, t *testing.T, a *harness.Agent) (int, agentStatus) {
	t.Helper()
	code, st, err := tryReadyz(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return code, st
}

// tryReadyz is readyz for an agent that may not listen yet.
func tryReadyz(ctx context.Context, a *harness.Agent) (int, agentStatus, error) {
	code, body, err := a.Get(ctx, "/readyz")
	var st agentStatus
	if err == nil {
		err = json.Unmarshal([]byte(body), &st)
	}
	if err != nil {
		return code, st, fmt.Errorf("agent /readyz: %d %q: %w", code, body, err)
	}
	return code, st, nil
}

// TestAgentColdStartKeepsClients: clients route through an agent; Holdfast dies; the agent is
// replaced by one that starts with nothing (its cache corrupt, or no cache at all) while
// Holdfast is still down. The clients keep routing on what they hold, and when Holdfast
// returns the new agent serves them only once it has a complete view: not one RPC fails, of
// any gRPC implementation or through a real Envoy sidecar, and Envoy never removes a listener.
// (Before, the agent served each type as it arrived, clusters first, and told every local
// client its listeners were gone: grpc-go, grpc-js and C-core all failed every RPC from then on.)
func TestAgentColdStartKeepsClients(t *testing.T) {
	t.Parallel()
	for _, start := range []string{"corrupt cache", "no cache"} {
		t.Run(start, func(t *testing.T) {
			ctx := testContext(t)
			ns := newNamespace(t)
			b := startBackends(t, echoPort.target, "b1", "b2")
			createService(t, ns, "echo", echoPort)
			writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
			sidecar := newSidecar(t)
			envoyListen := []string{"--envoy-listen-address", sidecar.Addr.String()}
			h := startHoldfastAt(t, ns, "", envoyListen...)
			// The agent listens where the sidecar Envoy reaches it, as a node agent does.
			listen, cacheDir := hostAddr(t), t.TempDir()
			agentArgs := []string{"--node-id", "node-" + strings.ReplaceAll(start, " ", "-"), "--listen", listen}
			first := startAgent(t, h.XDSAddr, append(agentArgs, "--cache-dir", cacheDir)...)
			if _, err := first.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			echo := target(ns, "echo", echoPort.port)
			apps := startApps(t, listen, harness.AppOptions{Targets: []string{echo}, Interval: appPeriod, Sidecar: sidecar}, nil)
			envoy := apps[harness.ImplEnvoy].Envoy()
			marks := map[harness.Impl]int{}
			eachApp(t, "routing", apps, func(t *testing.T, a *harness.App) {
				if err := a.Routing(ctx, echo, "b1"); err != nil {
					t.Fatal(err)
				}
				marks[a.Impl] = a.Mark()
			})
			const xdsConns = "cluster.holdfast.upstream_cx_total" // Envoy's connections to its xDS server
			conns, err := envoy.Stat(ctx, xdsConns)
			if err != nil {
				t.Fatal(err)
			}

			// Holdfast dies, then the agent; a new agent starts with nothing to serve.
			h.Kill()
			first.Kill()
			args := agentArgs
			if start == "corrupt cache" {
				if err := os.WriteFile(filepath.Join(cacheDir, "holdfast-agent-cache"), []byte("holdfast-agent-cache 1 3 00\n{}x"), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--cache-dir", cacheDir)
			}
			second := startAgent(t, h.XDSAddr, args...)
			// Envoy connected again: a connection made since the kill (connection attempts to
			// an agent not listening yet count too) that is open, and the agent answering.
			if err := harness.Eventually(ctx, func() bool {
				st, err := envoy.Stats(ctx, "^cluster\\.holdfast\\.upstream_cx_(total|active)$")
				if err != nil || st[xdsConns] <= conns || st["cluster.holdfast.upstream_cx_active"] != 1 {
					return false
				}
				_, _, err = tryReadyz(ctx, second)
				return err == nil
			}); err != nil {
				t.Fatal("Envoy never reconnected to the new agent")
			}
			if code, st := readyz(ctx, t, second); code != 503 || st.Ready || len(st.NotReady) != 2 {
				t.Errorf("the new agent with nothing to serve: %d %+v, want 503 saying why for both kinds", code, st)
			}
			// The clients, connected to an agent with nothing to serve, keep routing: an agent
			// that answered them with nothing would break them within quietWindow.
			time.Sleep(quietWindow)

			// Holdfast returns; a change is made once the agent serves again.
			startHoldfastAt(t, ns, h.XDSAddr, envoyListen...)
			if _, err := second.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]), readyEP(b["b2"]))
			eachApp(t, "after Holdfast returned", apps, func(t *testing.T, a *harness.App) {
				if err := a.Routing(ctx, echo, "b1", "b2"); err != nil {
					t.Fatal(err)
				}
				n, last := a.Failures(marks[a.Impl], echo)
				cell := fmt.Sprintf("%d/%d RPCs failed", n, len(a.Since(marks[a.Impl], echo)))
				if a.Impl == harness.ImplEnvoy {
					removed, err := envoy.Stat(ctx, "listener_manager.listener_removed")
					if err != nil {
						t.Fatal(err)
					}
					cell += fmt.Sprintf("; %v listeners removed", removed)
					if removed != 0 {
						t.Errorf("Envoy removed %v listeners across the agent's cold start", removed)
					}
				}
				record("agent restarted empty while Holdfast was down ("+start+"), then Holdfast back", string(a.Impl), cell)
				if n != 0 {
					t.Errorf("%d RPCs failed across Holdfast's outage and the agent's cold start (last: %s)", n, last)
				}
			})
			envoyAccepted(ctx, t, apps[harness.ImplEnvoy])
		})
	}
}

// TestAgentReadiness: /readyz says 503, and why, for every configured kind the agent cannot
// serve completely; 200 once every kind can; holdfast_agent_ready agrees.
func TestAgentReadiness(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
	upstream := freeAddr(t) // nothing there yet
	a := startAgent(t, upstream, "--node-id", "ready-check")
	if err := harness.Eventually(ctx, func() bool {
		code, st, err := tryReadyz(ctx, a)
		return err == nil && code == 503 && len(st.NotReady) == 2 && strings.Contains(st.NotReady[0], "upstream unreachable")
	}); err != nil {
		code, st := readyz(ctx, t, a)
		t.Fatalf("/readyz with nothing to serve = %d %+v: want 503 and, for both kinds, upstream unreachable", code, st)
	}
	if v, err := metricOf(ctx, a.Get, "holdfast_agent_ready"); err != nil || v != 0 {
		t.Errorf("holdfast_agent_ready = %v (%v), want 0 like /readyz", v, err)
	}
	startHoldfastAt(t, ns, upstream)
	if _, err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	code, st := readyz(ctx, t, a)
	if code != 200 || len(st.NotReady) != 0 || !st.Upstream["grpc"].Complete || !st.Upstream["envoy"].Complete {
		t.Errorf("/readyz = %d %+v, want 200 with both kinds complete", code, st)
	}
	if v, err := metricOf(ctx, a.Get, "holdfast_agent_ready"); err != nil || v != 1 {
		t.Errorf("holdfast_agent_ready = %v (%v), want 1 like /readyz", v, err)
	}
}

// TestAgentReconnectBackoff: after Holdfast was away for a minute, the agent is back upstream
// within its documented maximum backoff (15 s) plus slack. (Before, gRPC's own connection
// backoff, growing to 2 minutes, was left in place: 12.5–24.6 s after 30–40 s outages.)
func TestAgentReconnectBackoff(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	createService(t, ns, "echo", echoPort)
	h := startHoldfastAt(t, ns, "")
	a := startAgent(t, h.XDSAddr, "--node-id", "backoff-check")
	if _, err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	h.Kill()
	// Long enough for the agent's backoff (1 s doubling, jittered) to reach its 15 s maximum
	// and retry at it more than once: the state the test is about.
	const outage = 60 * time.Second
	time.Sleep(outage)
	back := time.Now()
	startHoldfastAt(t, ns, h.XDSAddr)
	const maxBackoff, slack = 15 * time.Second, 5 * time.Second
	wctx, cancel := context.WithTimeout(context.Background(), maxBackoff+slack)
	defer cancel()
	if err := harness.Eventually(wctx, func() bool {
		_, st := readyz(ctx, t, a)
		return st.Upstream["grpc"].Connected && st.Upstream["envoy"].Connected
	}); err != nil {
		t.Fatalf("the agent was not back upstream %v after Holdfast returned from a %v outage:\n%s", maxBackoff+slack, outage, a.LogTail(20))
	}
	t.Logf("back upstream %v after Holdfast returned from a %v outage", time.Since(back).Round(100*time.Millisecond), outage)
}

// TestAgentStuckClientIsolated: one local client stopped (SIGSTOP) never delays the others: a
// change every second reaches a healthy client on the same agent within 2.5 s each. (Before,
// the agent waited its 5 s settle timeout on the stopped client for every change, and the
// next change waited for that.)
func TestAgentStuckClientIsolated(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	ns := newNamespace(t)
	b := startBackends(t, echoPort.target, "b1", "b2")
	createService(t, ns, "echo", echoPort)
	writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b["b1"]))
	h := startHoldfastAt(t, ns, "")
	a := startAgent(t, h.XDSAddr, "--node-id", "shared-node", "--kinds", "grpc")
	if _, err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	echo := target(ns, "echo", echoPort.port)
	start := func(node string) *harness.App {
		bs, err := bootstrap.GRPC(bootstrap.Options{NodeID: node, Server: a.ListenAddr})
		if err != nil {
			t.Fatal(err)
		}
		app, err := harness.StartApp(ctx, tools(t), harness.ImplGo, harness.AppOptions{Bootstrap: bs, Targets: []string{echo}, Interval: appPeriod, Dir: env.dir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(app.Kill)
		if err := app.Routing(ctx, echo, "b1"); err != nil {
			t.Fatal(err)
		}
		return app
	}
	stuck, healthy := start("stuck"), start("healthy")
	if err := stuck.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stuck.Signal(syscall.SIGCONT) })
	var took []time.Duration
	for i := range 6 {
		want := []string{"b1", "b2"}[(i+1)%2]
		written := time.Now()
		writeSliceConditions(t, ns, "echo-a", "echo", echoPort, readyEP(b[want]))
		wctx, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
		err := healthy.Routing(wctx, echo, want)
		cancel()
		took = append(took, time.Since(written).Round(10*time.Millisecond))
		if err != nil {
			t.Fatalf("change %d reached the healthy client only after %v (a stopped client on the same agent): %v", i, took[i], err)
		}
		time.Sleep(max(0, time.Second-time.Since(written)))
	}
	t.Logf("each change reached the healthy client after %v, with another client stopped", took)
	if slices.Max(took) > 2500*time.Millisecond {
		t.Errorf("changes took %v", took)
	}
}
