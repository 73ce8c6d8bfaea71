package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/adsclient"
	"github.com/holdfast/holdfast/e2e/faultproxy"
	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/xds/admin"
)

// TestWhy: `holdfastctl why CLIENT SERVICE` in the admin scene (a held change, a degraded
// service, a NACKing client, a grpc-go client, a stale source), one question per cause. Each
// answer names its cause as a field a tool can check (-o json), in a sentence (the default
// output), and quotes the decisions behind it.
func TestWhy(t *testing.T) {
	t.Parallel()
	sc := newAdminScene(t)
	ctx := testContext(t)
	ask := func(node, service string) *admin.WhyResponse {
		t.Helper()
		r, err := sc.admin.Why(ctx, &admin.WhyRequest{NodeId: node, Service: service})
		if err != nil {
			t.Fatalf("why %s %s: %v", node, service, err)
		}
		return r
	}
	reason := func(r *admin.WhyResponse, cause string) *admin.WhyReason {
		for _, why := range r.GetReasons() {
			if why.GetCause() == cause {
				return why
			}
		}
		return nil
	}
	causes := func(r *admin.WhyResponse) []string {
		var out []string
		for _, why := range r.GetReasons() {
			out = append(out, why.GetCause())
		}
		return out
	}
	decided := func(why *admin.WhyReason, kind, subject string) bool {
		return slices.ContainsFunc(why.GetDecisions(), func(d *admin.Decision) bool { return d.GetKind() == kind && d.GetSubject() == subject })
	}
	echo, flaky, held := sc.ns+"/echo", sc.ns+"/flaky", sc.ns+"/s0"

	for _, tt := range []struct {
		name, node, service, cause string
		detail                     string // in the sentence
		decision                   [2]string
	}{
		{"a NACK", "picky", echo, "nack", "rejected", [2]string{"client_nack", "picky"}},
		{"a stale source", "picky", echo, "source_stale", "last state it saw", [2]string{"source_stale", sc.ns}},
		{"a guard hold", "picky", held, "guard_hold", "hold 1", [2]string{"guard_hold", "hold 1"}},
		{"a degraded service", "picky", flaky, "degraded", "unusable", [2]string{"service_degraded", flaky}},
		{"a service the client does not dial", sc.grpcApp, flaky, "not_subscribed", "has not subscribed", [2]string{}},
		{"a client not connected here", "nobody", echo, "not_connected", "no stream", [2]string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := ask(tt.node, tt.service)
			why := reason(r, tt.cause)
			if why == nil {
				t.Fatalf("why %s %s: causes %v, want %s", tt.node, tt.service, causes(r), tt.cause)
			}
			if !strings.Contains(why.GetDetail(), tt.detail) {
				t.Errorf("%s: %q does not say %q", tt.cause, why.GetDetail(), tt.detail)
			}
			if tt.decision[0] != "" && !decided(why, tt.decision[0], tt.decision[1]) {
				t.Errorf("%s: decisions %v lack %s %s", tt.cause, why.GetDecisions(), tt.decision[0], tt.decision[1])
			}
			if !strings.Contains(r.GetScope(), "other replica") {
				t.Errorf("scope %q does not say what it cannot see", r.GetScope())
			}
		})
	}

	// What the client holds beside what it would be sent: picky rejected echo's two-endpoint
	// assignment, so it holds another version than Holdfast would send.
	t.Run("holds and would send", func(t *testing.T) {
		r := ask("picky", echo)
		if len(r.GetStreams()) != 1 {
			t.Fatalf("streams = %d, want picky's one", len(r.GetStreams()))
		}
		var eds *admin.WhyResource
		for _, res := range r.GetStreams()[0].GetResources() {
			if res.GetType() == "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment" {
				eds = res
			}
		}
		if eds == nil || eds.GetStatus() != "NACKED" || eds.GetCurrentVersion() == "" {
			t.Fatalf("echo's assignment for picky = %v", eds)
		}
		ports := r.GetStreams()[0].GetPorts()
		if len(ports) != 1 || len(ports[0].GetPriorities()) == 0 || len(ports[0].GetPriorities()[0].GetEndpoints()) != 2 {
			t.Errorf("echo's endpoints as picky would be sent them: %v", ports)
		}
		g := ask(sc.grpcApp, echo)
		if reason(g, "nack") != nil || reason(g, "not_subscribed") != nil {
			t.Errorf("the grpc-go client holds echo as sent: causes %v", causes(g))
		}
	})

	// The CLI: sentences by default, the cause as a field with -o json.
	ctl := func(args ...string) string {
		out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, append([]string{"--addr", sc.h.AdminAddr}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfastctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	text := ctl("why", "picky", echo+":"+fmt.Sprint(grpcPort.port))
	for _, want := range []string{"Client picky", "[nack]", "client_nack", "HOLDFAST WOULD SEND NOW", "other replica"} {
		if !strings.Contains(text, want) {
			t.Errorf("holdfastctl why lacks %q:\n%s", want, text)
		}
	}
	var js struct {
		Reasons []struct {
			Cause string `json:"cause"`
		} `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(ctl("-o", "json", "why", "picky", held)), &js); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(js.Reasons, func(r struct {
		Cause string `json:"cause"`
	}) bool {
		return r.Cause == "guard_hold"
	}) {
		t.Errorf("holdfastctl -o json why: reasons %+v lack guard_hold", js.Reasons)
	}
	out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, "--addr", sc.h.AdminAddr, "why", "picky", "no-slash").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "namespace/name") {
		t.Errorf("holdfastctl why with a bad service: %v\n%s", err, out)
	}
	t.Logf("holdfastctl why picky %s:\n%s", echo, text)
}

// TestWhyMoreCauses: the causes the admin scene does not stage, each from the real state that
// gives it — a client's zone and locality priorities, a response in flight, a capacity
// refusal, a tombstone, a state restored from disk with the API server unreachable.
func TestWhyMoreCauses(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	expect := func(t *testing.T, c admin.AdminClient, node, service, cause, detail string) {
		t.Helper()
		var last *admin.WhyResponse
		err := harness.Eventually(ctx, func() bool {
			r, err := c.Why(ctx, &admin.WhyRequest{NodeId: node, Service: service})
			if err != nil {
				return false
			}
			last = r
			return slices.ContainsFunc(r.GetReasons(), func(w *admin.WhyReason) bool {
				return w.GetCause() == cause && strings.Contains(w.GetDetail(), detail)
			})
		})
		if err != nil {
			t.Errorf("why %s %s: no %s saying %q; got %v", node, service, cause, detail, last.GetReasons())
		}
	}

	t.Run("locality", func(t *testing.T) {
		sc := newZoneScene(t)
		envoy, err := adsclient.Dial(sc.h.XDSAddr, adsclient.Options{NodeID: "envoy-a", Zone: "zone-a", Region: testRegion})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = envoy.Close() })
		svc := sc.ns + "/" + strings.Split(sc.target, ".")[0]
		expect(t, adminOf(t, sc.h), "envoy-a", svc, "locality", `zone "zone-a"`)
	})

	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "w1")
	for _, name := range []string{"kept", "gone"} {
		createService(t, ns, name, grpcPort)
		writeSlice(t, ns, name+"-a", name, grpcPort, endpoint{b["w1"], true})
	}
	state := t.TempDir()
	h := startHoldfastOn(t, env.cluster, ns, "--max-services", "2", "--state-dir", state, "--tombstone-grace", "10m")
	c := adminOf(t, h)

	t.Run("in flight", func(t *testing.T) {
		stuck, err := adsclient.Dial(h.XDSAddr, adsclient.Options{NodeID: "stuck", NeverRead: true})
		if err != nil {
			t.Fatal(err)
		}
		defer stuck.Close()
		expect(t, c, "stuck", ns+"/kept", "in_flight", "not answered yet")
	})
	t.Run("refused", func(t *testing.T) {
		createService(t, ns, "extra", grpcPort)
		writeSlice(t, ns, "extra-a", "extra", grpcPort, endpoint{b["w1"], true})
		expect(t, c, "anyone", ns+"/extra", "refused", "capacity limit")
	})
	t.Run("tombstone", func(t *testing.T) {
		if err := env.cluster.Client.CoreV1().Services(ns).Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		expect(t, c, "anyone", ns+"/gone", "tombstone", "tombstone grace")
	})
	t.Run("restored", func(t *testing.T) {
		// The state file the first Holdfast wrote, read by a second whose API server does not answer.
		if err := harness.Eventually(ctx, func() bool { _, err := os.Stat(filepath.Join(state, "state")); return err == nil }); err != nil {
			t.Fatal("no state file written")
		}
		p, err := faultproxy.Start(env.cluster.Server, env.cluster.CAFile, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		p.SetMode(faultproxy.Stall)
		kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		if err := env.cluster.WriteKubeconfig(kubeconfig, p.URL, p.CAFile); err != nil {
			t.Fatal(err)
		}
		restoredDir := t.TempDir()
		data, err := os.ReadFile(filepath.Join(state, "state"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(restoredDir, "state"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, kubeconfig, "--namespaces", ns, "--state-dir", restoredDir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Kill)
		expect(t, adminOf(t, r), "anyone", ns+"/kept", "restored", "state file")
	})
}
