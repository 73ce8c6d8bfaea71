package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/faultproxy"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/xds/admin"
)

// adminScene is a Holdfast (behind a fault proxy) with everything an operator must be able to
// see at once: a change held by the guard, a degraded service, a NACKing client, a grpc-go
// client, and — last — a stale source.
type adminScene struct {
	ns      string
	h       *harness.Holdfast
	proxy   *faultproxy.Proxy
	admin   admin.AdminClient
	csds    statusv3.ClientStatusDiscoveryServiceClient
	echo    string // the echo service's listener name
	echoUp  string // what its listener points to: its route, cluster and assignment
	picky   *adsclient.Client
	grpcApp string // the grpc-go client's node ID
}

func newAdminScene(t *testing.T) *adminScene {
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2", "flaky")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	createService(t, ns, "flaky", grpcPort)
	writeSlice(t, ns, "flaky-a", "flaky", grpcPort, endpoint{b["flaky"], true})
	api := env.cluster.Client.DiscoveryV1().EndpointSlices(ns)
	ctx := testContext(t)
	// 10 services × 5 endpoints nobody dials: the fleet the guard protects.
	guardedFleet(ctx, t, ns, func(int, int) string { return "" })
	// A longer debounce gathers the 8 deletions below into one change, so that none of them is
	// applied alone before the guard sees the whole withdrawal.
	p, h := holdfastBehindProxy(t, ns, "--guard-min-fleet-endpoints", "10", "--guard-min-withdrawn-endpoints", "10",
		"--guard-hold-period", "10m", "--debounce", "1s", "--debounce-max", "3s")
	conn, err := grpc.NewClient(h.AdminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	sc := &adminScene{ns: ns, h: h, proxy: p, admin: admin.NewAdminClient(conn), csds: statusv3.NewClientStatusDiscoveryServiceClient(conn),
		echo: target(ns, "echo", grpcPort.port), echoUp: upstream(t, ns, "echo", grpcPort.port), grpcApp: "test-" + t.Name()}

	// A grpc-go client that takes everything, and an Envoy-like one that rejects echo's
	// assignment once it has two endpoints.
	app := dial(t, h, sc.echo)
	if err := app.WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	sc.picky, err = adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "picky", Delta: true, Reject: rejectTwoEndpoints(sc.echo)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.picky.Close() })
	if err := sc.picky.WaitFor(ctx, func(s adsclient.State) bool { return len(addresses(s, sc.echo)) == 1 }); err != nil {
		t.Fatal(err)
	}
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	if err := app.WaitForBackends(ctx, "b1", "b2"); err != nil {
		t.Fatal(err)
	}
	if err := harness.Eventually(ctx, func() bool { return sc.picky.Stats().NACKs[resourcev3.EndpointType] >= 1 }); err != nil {
		t.Fatal("the picky client never rejected echo's assignment")
	}
	// flaky's only slice loses its port: nothing usable, so it keeps its last good state.
	if _, err := api.Update(ctx, func() *discoveryv1.EndpointSlice {
		s, err := api.Get(ctx, "flaky-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Ports[0].Port = nil
		return s
	}(), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitMetric(ctx, t, h, "holdfast_services_degraded", func(v float64) bool { return v == 1 })
	// 8 of the 10 guarded services lose every endpoint at once: held.
	for i := range 8 {
		if err := api.Delete(ctx, fmt.Sprintf("s%d-a", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(ctx, t, h, "holdfast_guard_held", func(v float64) bool { return v == 1 })
	// Last, the API server stops answering: the source goes stale.
	p.SetMode(faultproxy.Stall)
	t.Cleanup(func() { p.SetMode(faultproxy.Pass) })
	waitStale(ctx, t, h, ns, 1)
	if err := harness.Eventually(ctx, func() bool {
		r, err := sc.admin.GetService(ctx, &admin.GetServiceRequest{Namespace: ns, Name: "echo"})
		return err == nil && r.GetSummary().GetState() == "stale"
	}); err != nil {
		t.Fatal("echo never reported stale")
	}
	return sc
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	sc := newAdminScene(t)
	ctx := testContext(t)

	t.Run("ListServices", func(t *testing.T) {
		r, err := sc.admin.ListServices(ctx, &admin.ListServicesRequest{Namespace: sc.ns})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*admin.ServiceSummary{}
		for _, s := range r.GetServices() {
			got[s.GetName()] = s
		}
		if len(got) != 12 {
			t.Errorf("%d services listed, want 12", len(got))
		}
		for name, want := range map[string]struct{ state, reason string }{
			"flaky": {"degraded", "no usable"},
			"s0":    {"held", "hold 1"},
			"s7":    {"held", "hold 1"},
			"echo":  {"stale", "stale"},
			"s9":    {"stale", "stale"},
		} {
			s := got[name]
			if s.GetState() != want.state || !strings.Contains(strings.ToLower(s.GetReason()), want.reason) {
				t.Errorf("%s: state %q reason %q, want %s (reason with %q)", name, s.GetState(), s.GetReason(), want.state, want.reason)
			}
		}
		if s := got["s0"]; s.GetHoldId() == "" || s.GetEndpoints() != 5 {
			t.Errorf("held s0 = %v: want its hold ID and its 5 endpoints still served", s)
		}
		if s := got["echo"]; s.GetEndpoints() != 2 || s.GetReadyEndpoints() != 2 || s.GetAge() == nil {
			t.Errorf("echo = %v", s)
		}
	})

	t.Run("GetService", func(t *testing.T) {
		r, err := sc.admin.GetService(ctx, &admin.GetServiceRequest{Namespace: sc.ns, Name: "echo"})
		if err != nil {
			t.Fatal(err)
		}
		var eps int
		for _, p := range r.GetPorts() {
			for _, z := range p.GetZones() {
				for _, e := range z.GetEndpoints() {
					if e.GetHealth() == "HEALTHY" && e.GetReady() {
						eps++
					}
				}
			}
		}
		kinds := map[string]int{}
		for _, res := range r.GetResources() {
			if res.GetVersion() == "" {
				t.Errorf("resource without a version: %v", res)
			}
			kinds[res.GetClientKind()]++
		}
		if eps != 2 || kinds["grpc"] != 4 || kinds["envoy"] != 4 || r.GetServiceResourceVersion() == "" || len(r.GetSlices()) != 1 || r.GetObservedAt() == nil {
			t.Errorf("echo in full = %v", r)
		}
		if _, err := sc.admin.GetService(ctx, &admin.GetServiceRequest{Namespace: sc.ns, Name: "nope"}); err == nil || !strings.Contains(err.Error(), "no service") {
			t.Errorf("unknown service: %v", err)
		}
	})

	t.Run("ListClients and GetClient", func(t *testing.T) {
		r, err := sc.admin.ListClients(ctx, &admin.ListClientsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		byNode := map[string]*admin.ClientSummary{}
		for _, c := range r.GetClients() {
			byNode[c.GetNodeId()] = c
		}
		picky, app := byNode["picky"], byNode[sc.grpcApp]
		if picky.GetKind() != "envoy" || picky.GetFlavour() != "delta" || picky.GetNacks() < 1 ||
			app.GetKind() != "grpc" || app.GetFlavour() != "sotw" || len(app.GetTypes()) != 4 {
			t.Fatalf("clients = %v", r)
		}
		var nacked *admin.Nack
		for _, ty := range picky.GetTypes() {
			if ty.GetType() == resourcev3.EndpointType {
				nacked = ty.GetNacked()
			}
		}
		if !strings.Contains(nacked.GetDetail(), "refusing an assignment with two endpoints") || nacked.GetResources()[sc.echoUp] == "" {
			t.Errorf("picky's EDS NACK = %v", nacked)
		}
		d, err := sc.admin.GetClient(ctx, &admin.GetClientRequest{NodeId: "picky"})
		if err != nil {
			t.Fatal(err)
		}
		status := ""
		for _, ty := range d.GetSummary().GetTypes() {
			for _, res := range ty.GetResources() {
				if ty.GetType() == resourcev3.EndpointType && res.GetName() == sc.echoUp {
					status = res.GetStatus()
				}
			}
		}
		if status != "NACKED" || len(d.GetNacks()) == 0 {
			t.Errorf("picky's echo assignment status %q, NACKs %v", status, d.GetNacks())
		}
	})

	t.Run("ListSources", func(t *testing.T) {
		r, err := sc.admin.ListSources(ctx, &admin.ListSourcesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetSources()) != 1 {
			t.Fatalf("sources = %v", r)
		}
		s := r.GetSources()[0]
		if s.GetName() != sc.ns || s.GetState() != "stale" || s.GetReason() == "" || s.GetStaleSince() == nil || s.GetLastEvent() == nil || s.GetLastProbeError() == "" {
			t.Errorf("source = %v", s)
		}
	})

	t.Run("DecisionLog", func(t *testing.T) {
		r, err := sc.admin.DecisionLog(ctx, &admin.DecisionLogRequest{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]*admin.Decision{}
		for i, d := range r.GetDecisions() {
			if i > 0 && d.GetAt().AsTime().After(r.GetDecisions()[i-1].GetAt().AsTime()) {
				t.Errorf("not newest first at %d", i)
			}
			if _, ok := seen[d.GetKind()]; !ok {
				seen[d.GetKind()] = d
			}
		}
		for kind, subject := range map[string]string{"guard_hold": "hold 1", "service_degraded": sc.ns + "/flaky", "client_nack": "picky", "source_stale": sc.ns} {
			if d := seen[kind]; d.GetSubject() != subject || d.GetMessage() == "" {
				t.Errorf("decision %s = %v, want subject %q", kind, d, subject)
			}
		}
		only, err := sc.admin.DecisionLog(ctx, &admin.DecisionLogRequest{Kind: "client_nack", Limit: 1})
		if err != nil || len(only.GetDecisions()) != 1 || only.GetDecisions()[0].GetKind() != "client_nack" {
			t.Errorf("filtered log = %v, %v", only, err)
		}
	})

	t.Run("grpcurl", func(t *testing.T) {
		grpcurl := os.Getenv("GRPCURL")
		if grpcurl == "" {
			t.Fatal("GRPCURL is not set: run the tests through make (make tools installs grpcurl)")
		}
		out, err := exec.CommandContext(ctx, grpcurl, "-plaintext", sc.h.AdminAddr, "list").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "holdfast.admin.v1.Admin") || !strings.Contains(string(out), "envoy.service.status.v3.ClientStatusDiscoveryService") {
			t.Fatalf("grpcurl list: %v\n%s", err, out)
		}
		out, err = exec.CommandContext(ctx, grpcurl, "-plaintext", "-d", `{"kind":"guard_hold"}`, sc.h.AdminAddr, "holdfast.admin.v1.Admin/DecisionLog").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"subject": "hold 1"`) {
			t.Errorf("grpcurl DecisionLog: %v\n%s", err, out)
		}
	})

	// The shipped alert rules load and pass their own unit tests in Prometheus' promtool, and
	// every Holdfast metric they use is one this Holdfast exports.
	t.Run("alert rules", func(t *testing.T) {
		root, err := harness.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(root, "deploy", "prometheus")
		for _, args := range [][]string{{"check", "rules", "holdfast-alerts.yaml"}, {"test", "rules", "holdfast-alerts.test.yaml"}} {
			cmd := exec.CommandContext(ctx, "promtool", args...)
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("promtool %v: %v\n%s", args, err, out)
			}
		}
		checkRuleMetrics(ctx, t, sc.h, "holdfast", 8)
	})

	// The grpc-go client took echo's change from one to two endpoints: the push latency from
	// the EndpointSlice event to its ACK is measured.
	t.Run("push latency", func(t *testing.T) {
		v, err := sc.h.Metric(ctx, `holdfast_xds_push_latency_seconds_count{type="`+resourcev3.EndpointType+`"}`)
		if err != nil || v < 1 {
			t.Errorf("no push latency measured for assignments: %v, %v", v, err)
		}
	})

	// Last: releasing the hold applies it, and says so.
	t.Run("ReleaseHold", func(t *testing.T) {
		holds, err := sc.admin.ListHolds(ctx, &admin.ListHoldsRequest{})
		if err != nil || len(holds.GetHolds()) != 1 {
			t.Fatalf("holds = %v, %v", holds, err)
		}
		h := holds.GetHolds()[0]
		if h.GetWithdrawn() != 40 || len(h.GetServices()) != 8 || h.GetReason() == "" {
			t.Errorf("hold = %v", h)
		}
		if _, err := sc.admin.ReleaseHold(ctx, &admin.ReleaseHoldRequest{Id: "99"}); err == nil {
			t.Error("released a hold that does not exist")
		}
		if _, err := sc.admin.ReleaseHold(ctx, &admin.ReleaseHoldRequest{Id: h.GetId()}); err != nil {
			t.Fatal(err)
		}
		if after, err := sc.admin.ListHolds(ctx, &admin.ListHoldsRequest{}); err != nil || len(after.GetHolds()) != 0 {
			t.Errorf("after release: %v, %v", after, err)
		}
		log, err := sc.admin.DecisionLog(ctx, &admin.DecisionLogRequest{Kind: "operator_release"})
		if err != nil || len(log.GetDecisions()) != 1 {
			t.Errorf("no operator_release decision: %v, %v", log, err)
		}
		if s, err := sc.admin.GetService(ctx, &admin.GetServiceRequest{Namespace: sc.ns, Name: "s0"}); err != nil || s.GetSummary().GetEndpoints() != 0 {
			t.Errorf("s0 after the release: %v, %v", s, err)
		}
	})
}

// TestCSDSMatchesClients: CSDS shows every connected client with the status of each resource:
// the grpc-go client's four resources ACKed, the Envoy-like client's rejected assignment
// NACKED with the error it sent, and both agree with the admin API's view.
func TestCSDSMatchesClients(t *testing.T) {
	t.Parallel()
	sc := newAdminScene(t)
	ctx := testContext(t)
	r, err := sc.csds.FetchClientStatus(ctx, &statusv3.ClientStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]*statusv3.ClientConfig_GenericXdsConfig{} // node → type+name → config
	for _, cfg := range r.GetConfig() {
		m := map[string]*statusv3.ClientConfig_GenericXdsConfig{}
		for _, g := range cfg.GetGenericXdsConfigs() {
			m[g.GetTypeUrl()+" "+g.GetName()] = g
		}
		got[cfg.GetNode().GetId()] = m
	}
	eds := resourcev3.EndpointType + " " + sc.echoUp
	if g := got["picky"][eds]; g.GetClientStatus() != adminv3.ClientResourceStatus_NACKED || g.GetConfigStatus() != statusv3.ConfigStatus_ERROR ||
		!strings.Contains(g.GetErrorState().GetDetails(), "two endpoints") {
		t.Errorf("picky's echo assignment in CSDS = %v", g)
	}
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
		name := sc.echoUp
		if typ == resourcev3.ListenerType {
			name = sc.echo
		}
		if g := got[sc.grpcApp][typ+" "+name]; g.GetClientStatus() != adminv3.ClientResourceStatus_ACKED || g.GetXdsConfig() == nil {
			t.Errorf("grpc-go client's %s in CSDS = %v", typ, g)
		}
	}
	// Every resource status the admin API reports for a client is the one CSDS reports.
	clients, err := sc.admin.ListClients(ctx, &admin.ListClientsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(clients.GetClients()) || len(got) != 2 {
		t.Errorf("CSDS has %d clients, the admin API %d; want 2", len(got), len(clients.GetClients()))
	}
	for _, c := range clients.GetClients() {
		d, err := sc.admin.GetClient(ctx, &admin.GetClientRequest{NodeId: c.GetNodeId()})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ty := range d.GetSummary().GetTypes() {
			for _, res := range ty.GetResources() {
				n++
				g := got[c.GetNodeId()][ty.GetType()+" "+res.GetName()]
				if g.GetClientStatus().String() != res.GetStatus() || g.GetVersionInfo() != res.GetVersion() {
					t.Errorf("%s %s: CSDS %v %q, admin API %s %q", c.GetNodeId(), res.GetName(), g.GetClientStatus(), g.GetVersionInfo(), res.GetStatus(), res.GetVersion())
				}
			}
		}
		if n != len(got[c.GetNodeId()]) {
			t.Errorf("%s: %d resources in the admin API, %d in CSDS", c.GetNodeId(), n, len(got[c.GetNodeId()]))
		}
	}
}

// TestHoldfastctl runs the built CLI against a real Holdfast: its tables say what the API
// says, its JSON is the API's answer, and it fails clearly when Holdfast is not there.
func TestHoldfastctl(t *testing.T) {
	t.Parallel()
	sc := newAdminScene(t)
	ctx := testContext(t)
	ctl := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, append([]string{"--addr", sc.h.AdminAddr}, args...)...).CombinedOutput()
		return string(out), err
	}
	out, err := ctl("services", sc.ns)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"NAMESPACE", "flaky", "degraded", "held", "stale"} {
		if !strings.Contains(out, want) {
			t.Errorf("services table lacks %q:\n%s", want, out)
		}
	}
	out, err = ctl("-o", "json", "clients")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var clients struct {
		Clients []struct {
			NodeID string `json:"nodeId"`
			Kind   string `json:"kind"`
			Nacks  int    `json:"nacks"`
		} `json:"clients"`
	}
	api, err := sc.admin.ListClients(ctx, &admin.ListClientsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &clients); err != nil || len(clients.Clients) != len(api.GetClients()) {
		t.Fatalf("clients JSON (%v) does not match the API's %d clients:\n%s", err, len(api.GetClients()), out)
	}
	for i, c := range clients.Clients {
		if c.NodeID != api.GetClients()[i].GetNodeId() || c.Kind != api.GetClients()[i].GetKind() || c.Nacks != int(api.GetClients()[i].GetNacks()) {
			t.Errorf("client %d: JSON %+v, API %v", i, c, api.GetClients()[i])
		}
	}
	for _, args := range [][]string{{"-o", "yaml", "sources"}, {"holds"}, {"log", "5"}, {"csds", "picky"}, {"client", "picky"}, {"service", sc.ns + "/echo"}} {
		if out, err := ctl(args...); err != nil || len(strings.TrimSpace(out)) == 0 {
			t.Errorf("holdfastctl %v: %v\n%s", args, err, out)
		}
	}
	if out, _ := ctl("-o", "yaml", "sources"); !strings.Contains(out, "state: stale") {
		t.Errorf("sources YAML:\n%s", out)
	}
	// Capacity against the store's own count and the default limits.
	services, err := sc.admin.ListServices(ctx, &admin.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantServices := regexp.MustCompile(fmt.Sprintf(`(?m)^services\s+%d\s+20000\s`, len(services.GetServices())))
	if out, err := ctl("capacity"); err != nil || !wantServices.MatchString(out) || !regexp.MustCompile(`(?m)^clients\s+[1-9]\d*\s+10000\s`).MatchString(out) {
		t.Errorf("holdfastctl capacity (%v), want %d services of 20000 and the open clients of 10000:\n%s", err, len(services.GetServices()), out)
	}
	// The operator's release: the hold listed, released by ID, gone, and a wrong ID refused.
	if out, _ := ctl("holds"); !strings.Contains(out, "would withdraw 40 of") {
		t.Errorf("holds table:\n%s", out)
	}
	if out, err := ctl("release", "7"); err == nil || !strings.Contains(out, "no hold 7") {
		t.Errorf("releasing a hold that does not exist: %v\n%s", err, out)
	}
	if out, err := ctl("release", "1"); err != nil || !strings.Contains(out, "released hold 1: 40 of") {
		t.Errorf("holdfastctl release 1: %v\n%s", err, out)
	}
	if holds, err := sc.admin.ListHolds(ctx, &admin.ListHoldsRequest{}); err != nil || len(holds.GetHolds()) != 0 {
		t.Errorf("after holdfastctl release: %v, %v", holds, err)
	}
	// Unreachable: a clear error and exit 1.
	cmd := exec.CommandContext(ctx, env.bins.Holdfastctl, "--addr", "127.0.0.1:1", "--timeout", "2s", "services")
	out2, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out2), "not reachable at 127.0.0.1:1") {
		t.Errorf("holdfastctl against nothing: exit %d (%v): %s", code, err, out2)
	}
}

// checkRuleMetrics checks that every metric the alert rules of group use is one h exports, and
// that the group uses at least least of them.
func checkRuleMetrics(ctx context.Context, t *testing.T, h *harness.Holdfast, group string, least int) {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "holdfast-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, metrics, err := h.Get(ctx, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string
			Rules []struct{ Expr string }
		}
	}
	if err := yaml.Unmarshal(rules, &file); err != nil {
		t.Fatal(err)
	}
	var exprs strings.Builder
	for _, g := range file.Groups {
		if g.Name != group {
			continue
		}
		for _, r := range g.Rules {
			exprs.WriteString(r.Expr + "\n")
		}
	}
	names := regexp.MustCompile(`holdfast_[a-z_]+`).FindAllString(exprs.String(), -1)
	if len(names) < least {
		t.Fatalf("only %d metric names found in the rules of group %s", len(names), group)
	}
	for _, n := range names {
		if !strings.Contains(metrics, "# TYPE "+n+" ") {
			t.Errorf("the rules use %s, which Holdfast does not export", n)
		}
	}
}
