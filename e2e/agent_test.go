package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/internal/testproc"
	"github.com/holdfast/holdfast/xds/admin"
)

// startHoldfastAt runs Holdfast for ns with its xDS server on xdsAddr ("" = any free port); the
// test may kill it.
func startHoldfastAt(t *testing.T, ns, xdsAddr string, extra ...string) *harness.Holdfast {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"--namespaces", ns}, extra...)
	if xdsAddr != "" {
		args = append(args, "--xds-listen", xdsAddr) // the last --xds-listen wins
	}
	h, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, env.cluster.Kubeconfig, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("holdfast log: %s", h.LogTail(40))
		}
		h.Kill()
	})
	return h
}

func startAgent(t *testing.T, upstream string, extra ...string) *harness.Agent {
	t.Helper()
	a, err := harness.RunAgent(env.bins.Agent, env.dir, upstream, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log: %s", a.LogTail(40))
		}
		a.Kill()
	})
	return a
}

// appRun runs the gRPC application as its own process against the agent: every one of its 10
// RPCs must succeed; it returns the backends that answered.
func appRun(ctx context.Context, t *testing.T, agentAddr, target string) []string {
	t.Helper()
	out, err := exec.CommandContext(ctx, env.bins.XDSClient, "-xds", agentAddr, "-node", "app-"+t.Name(), "-target", target,
		"-calls", "10", "-timeout", "20s").CombinedOutput()
	if err != nil {
		t.Fatalf("the application failed: %v\n%s", err, out)
	}
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if id, ok := strings.CutPrefix(l, "ok "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// onlyB1 says every RPC reached backend b1.
func onlyB1(ids []string) bool {
	for _, id := range ids {
		if id != "b1" {
			return false
		}
	}
	return len(ids) > 0
}

// TestAgentServesWhileControlPlaneDown: app → agent → Holdfast; Holdfast is killed; the
// application restarts as a new process and its RPCs succeed from the agent's memory.
func TestAgentServesWhileControlPlaneDown(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfastAt(t, ns, "")
	// Local clients reach this agent on a Unix socket, as in a pod sharing a volume.
	sock := "unix://" + filepath.Join(t.TempDir(), "agent.sock")
	a := startAgent(t, h.XDSAddr, "--node-id", "app-1", "--kinds", "grpc", "--listen", sock)
	ctx := testContext(t)
	if _, err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	echo := target(ns, "echo", grpcPort.port)
	if ids := appRun(ctx, t, sock, echo); !onlyB1(ids) {
		t.Fatalf("before: %v", ids)
	}
	h.Kill()
	if ids := appRun(ctx, t, sock, echo); !onlyB1(ids) || len(ids) != 10 {
		t.Errorf("the restarted application, with Holdfast down: %v", ids)
	}
	code, body, err := a.Get(ctx, "/readyz")
	if err != nil || code != 200 || !strings.Contains(body, `"connected":false`) {
		t.Errorf("agent /readyz with Holdfast down = %d %s (%v): want ready, upstream not connected", code, body, err)
	}
}

// TestAgentRestartFromDisk: Holdfast and the agent both die; the agent restarts and serves the
// application from its disk cache; Holdfast comes back and a change reaches the application.
func TestAgentRestartFromDisk(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfastAt(t, ns, "")
	cacheDir := t.TempDir()
	a := startAgent(t, h.XDSAddr, "--node-id", "app-1", "--kinds", "grpc", "--cache-dir", cacheDir)
	ctx := testContext(t)
	if _, err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	echo := target(ns, "echo", grpcPort.port)
	if ids := appRun(ctx, t, a.ListenAddr, echo); !onlyB1(ids) {
		t.Fatalf("before: %v", ids)
	}
	// Wait until the cache on disk holds the four resources: a write lags changes by at most
	// 500 ms, and a SIGKILL loses what was not written.
	if err := harness.Eventually(ctx, func() bool {
		_, body, err := a.Get(ctx, "/readyz")
		return err == nil && strings.Contains(body, `"written_resources":4`)
	}); err != nil {
		t.Fatal("the agent never wrote its cache")
	}
	h.Kill()
	a.Kill()

	started := time.Now()
	a2 := startAgent(t, h.XDSAddr, "--node-id", "app-1", "--kinds", "grpc", "--cache-dir", cacheDir)
	body, err := a2.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent ready from disk %v after start", time.Since(started).Round(time.Millisecond))
	var st struct {
		Cache struct {
			ServingRestored bool `json:"serving_restored"`
		} `json:"cache"`
	}
	if json.Unmarshal([]byte(body), &st) != nil || !st.Cache.ServingRestored {
		t.Errorf("/readyz from disk = %s: want serving_restored", body)
	}
	if ids := appRun(ctx, t, a2.ListenAddr, echo); !onlyB1(ids) || len(ids) != 10 {
		t.Fatalf("the application from the agent's disk cache: %v", ids)
	}

	// Holdfast returns on the same address; the agent reconnects; a change reaches the app.
	app, err := harness.DialXDS(a2.ListenAddr, "app-long", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if err := app.WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	startHoldfastAt(t, ns, h.XDSAddr)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b2"], true})
	if err := app.WaitForBackends(ctx, "b2"); err != nil {
		t.Errorf("the change after Holdfast came back: %v", err)
	}
	if err := harness.Eventually(ctx, func() bool {
		_, body, err := a2.Get(ctx, "/readyz")
		return err == nil && strings.Contains(body, `"serving_restored":false`)
	}); err != nil {
		t.Error("the agent never said it serves live data again")
	}
}

// TestAgentCorruptCache: a corrupt cache file is reported and ignored; the agent runs, is not
// ready (it has nothing to serve), and serves once upstream answers.
func TestAgentCorruptCache(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	cacheDir := t.TempDir()
	payload := `{"written_at":"2026-01-01T00:00:00Z","kinds":{}}`
	if err := os.WriteFile(filepath.Join(cacheDir, "holdfast-agent-cache"),
		[]byte("holdfast-agent-cache 1 "+strconv.Itoa(len(payload))+" 00ff\n"+payload), 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := testproc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	upstream := "127.0.0.1:" + strconv.Itoa(ports[0]) // nothing there yet
	a := startAgent(t, upstream, "--node-id", "app-1", "--kinds", "grpc", "--cache-dir", cacheDir)
	ctx := testContext(t)
	if err := harness.Eventually(ctx, func() bool {
		v, err := metricOf(ctx, a.Get, `holdfast_agent_cache_load_errors_total{reason="checksum"}`)
		return err == nil && v == 1
	}); err != nil {
		t.Fatalf("the corrupt cache was not counted:\n%s", a.LogTail(20))
	}
	if !strings.Contains(a.LogTail(20), "cache file ignored") {
		t.Errorf("the agent did not say it ignored the cache:\n%s", a.LogTail(20))
	}
	if code, body, err := a.Get(ctx, "/readyz"); err != nil || code != 503 {
		t.Errorf("/readyz with nothing to serve = %d %s %v, want 503", code, body, err)
	}
	startHoldfastAt(t, ns, upstream)
	if _, err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if ids := appRun(ctx, t, a.ListenAddr, target(ns, "echo", grpcPort.port)); !onlyB1(ids) {
		t.Errorf("after upstream answered: %v", ids)
	}
}

// TestAgentForwardsNacks: a local Envoy rejects an assignment; Holdfast's record of the agent's
// stream shows the NACK with the local client's detail, and the version is not sent again.
func TestAgentForwardsNacks(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfastAt(t, ns, "")
	a := startAgent(t, h.XDSAddr, "--node-id", "sidecar-1", "--kinds", "envoy")
	ctx := testContext(t)
	if _, err := a.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	echo := target(ns, "echo", grpcPort.port)
	envoy, err := adsclient.Dial(a.ListenAddr, adsclient.Options{NodeID: "sidecar-1", Delta: true, Reject: rejectTwoEndpoints(echo)})
	if err != nil {
		t.Fatal(err)
	}
	defer envoy.Close()
	if err := envoy.WaitFor(ctx, func(s adsclient.State) bool { return len(addresses(s, echo)) == 1 }); err != nil {
		t.Fatal(err)
	}
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	if err := harness.Eventually(ctx, func() bool { return envoy.Stats().NACKs[resourcev3.EndpointType] >= 1 }); err != nil {
		t.Fatal("the local Envoy never rejected the assignment")
	}
	conn, err := grpc.NewClient(h.AdminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var detail string
	if err := harness.Eventually(ctx, func() bool {
		c, err := admin.NewAdminClient(conn).GetClient(ctx, &admin.GetClientRequest{NodeId: "sidecar-1"})
		if err != nil || len(c.GetNacks()) == 0 {
			return false
		}
		detail = c.GetNacks()[0].GetDetail()
		return c.GetSummary().GetUserAgent() == "holdfast-agent"
	}); err != nil {
		t.Fatal("Holdfast never recorded a NACK from the agent's stream")
	}
	if !strings.Contains(detail, "local client sidecar-1 rejected "+echo) || !strings.Contains(detail, "refusing an assignment with two endpoints") {
		t.Errorf("forwarded NACK detail = %q", detail)
	}
	if v, err := metricOf(ctx, a.Get, `holdfast_agent_nacks_forwarded_total{type="`+resourcev3.EndpointType+`"}`); err != nil || v < 1 {
		t.Errorf("holdfast_agent_nacks_forwarded_total = %v, %v", v, err)
	}
}

// metricOf reads one sample from a /metrics endpoint.
func metricOf(ctx context.Context, get func(context.Context, string) (int, string, error), series string) (float64, error) {
	_, body, err := get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, os.ErrNotExist
}
