package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/internal/testproc"
)

// TestResilienceMalformedObjects writes, beside good services, every kind of bad object the API
// server accepts: good services keep routing, bad elements are counted by reason, and a service
// whose input turns bad entirely keeps its last good state.
func TestResilienceMalformedObjects(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1", "b2", "flaky", "other")
	createService(t, ns, "echo", grpcPort)
	createService(t, ns, "other", grpcPort)
	createService(t, ns, "flaky", grpcPort)
	createService(t, ns, "big", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true}, endpoint{b["b2"], true})
	writeSlice(t, ns, "other-a", "other", grpcPort, endpoint{b["other"], true})
	writeSlice(t, ns, "flaky-a", "flaky", grpcPort, endpoint{b["flaky"], true})
	h := startHoldfast(t, ns)
	ctx := testContext(t)
	echo := dial(t, h, target(ns, "echo", grpcPort.port))
	other := dial(t, h, target(ns, "other", grpcPort.port))
	flaky := dial(t, h, target(ns, "flaky", grpcPort.port))
	if err := flaky.WaitForBackends(ctx, "flaky"); err != nil {
		t.Fatal(err)
	}

	api := env.cluster.Client.DiscoveryV1().EndpointSlices(ns)
	mk := func(name, svc string, at discoveryv1.AddressType, port *int32, addrs ...string) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
			AddressType: at,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr(grpcPort.name), Port: port, Protocol: ptr(corev1.ProtocolTCP)}},
		}
		if svc != "" {
			s.Labels[discoveryv1.LabelServiceName] = svc
		}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
		}
		return s
	}
	huge := mk("big-huge", "big", discoveryv1.AddressTypeIPv4, ptr(grpcPort.target))
	for i := range 1000 { // the API's limit per slice
		huge.Endpoints = append(huge.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.250.%d.%d", i/250, i%250+1)}})
	}
	bad := []struct {
		slice  *discoveryv1.EndpointSlice
		reason string // what Holdfast must count for it
	}{
		{mk("echo-fqdn", "echo", discoveryv1.AddressTypeFQDN, ptr(grpcPort.target), "db.example.com"), "unsupported_address_type"},
		{mk("echo-dup", "echo", discoveryv1.AddressTypeIPv4, ptr(grpcPort.target), b["b1"].Addr.String()), "duplicate_endpoint"},
		{mk("ghost-a", "ghost", discoveryv1.AddressTypeIPv4, ptr(grpcPort.target), "10.251.0.1"), "service_not_found"},
		{mk("nobody", "", discoveryv1.AddressTypeIPv4, ptr(grpcPort.target), "10.251.0.2"), "missing_service_label"},
		{mk("echo-noport", "echo", discoveryv1.AddressTypeIPv4, nil, "10.251.0.3"), "port_invalid"},
		{huge, ""},
	}
	for _, s := range bad {
		if _, err := api.Create(ctx, s.slice, metav1.CreateOptions{}); err != nil {
			t.Fatalf("the API server refused %s: %v", s.slice.Name, err)
		}
	}
	// An IPv4 address in an IPv6 slice: the API server refuses it, so Holdfast's own check (unit
	// tested) is a second line of defence. Should a future API server accept it, it must count.
	mixed := mk("echo-mixed", "echo", discoveryv1.AddressTypeIPv6, ptr(grpcPort.target), "10.251.0.4")
	if _, err := api.Create(ctx, mixed, metav1.CreateOptions{}); err == nil {
		bad = append(bad, struct {
			slice  *discoveryv1.EndpointSlice
			reason string
		}{mixed, "address_family_mismatch"})
	} else if !apierrors.IsInvalid(err) {
		t.Fatalf("creating a mixed-family slice: %v", err)
	} else {
		t.Logf("the API server refuses mixed address families: %v", err)
	}
	// flaky's only slice now has nothing usable: no port number. It keeps its last good state.
	if _, err := api.Update(ctx, func() *discoveryv1.EndpointSlice {
		s := mk("flaky-a", "flaky", discoveryv1.AddressTypeIPv4, nil, b["flaky"].Addr.String())
		cur, err := api.Get(ctx, "flaky-a", metav1.GetOptions{})
		if err == nil {
			s.ResourceVersion = cur.ResourceVersion
		}
		return s
	}(), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, s := range bad {
		if s.reason == "" {
			continue
		}
		series := `holdfast_objects_rejected_total{reason="` + s.reason + `"}`
		if err := harness.Eventually(ctx, func() bool { v, err := h.Metric(ctx, series); return err == nil && v >= 1 }); err != nil {
			t.Errorf("%s (for %s) never counted", series, s.slice.Name)
		}
	}
	if err := harness.Eventually(ctx, func() bool { v, err := h.Metric(ctx, "holdfast_services_degraded"); return err == nil && v == 1 }); err != nil {
		t.Error("holdfast_services_degraded never read 1 for flaky")
	}
	if err := harness.Eventually(ctx, func() bool { v, err := h.Metric(ctx, "holdfast_resolver_endpoints"); return err == nil && v >= 1000 }); err != nil {
		t.Error("the 1000-endpoint slice never reached the resolver's view")
	}
	for name, c := range map[string]interface {
		WaitForBackends(context.Context, ...string) error
	}{"echo": echo, "other": other, "flaky": flaky} {
		want := map[string][]string{"echo": {"b1", "b2"}, "other": {"other"}, "flaky": {"flaky"}}[name]
		if err := c.WaitForBackends(ctx, want...); err != nil {
			t.Errorf("%s after the bad objects: %v", name, err)
		}
	}
	// Holdfast is still healthy.
	if code, body, err := h.Get(ctx, "/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz = %d %s %v", code, body, err)
	}
}

// TestPortNameMismatchReported: a Service port named grpc whose EndpointSlice names its port
// http, against the real API server. Nothing is silent: the slice's port is a rejected element
// (holdfast_objects_rejected_total{reason="port_name_mismatch"}, one log line for the slice's
// version), the service is served empty with the reason in holdfastctl services and service,
// and holdfast_service_ports_unmatched counts the port. Fixing the slice clears all of it.
func TestPortNameMismatchReported(t *testing.T) {
	t.Parallel()
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1")
	createService(t, ns, "echo", grpcPort) // its port is named grpc
	httpNamed := servicePort{name: "http", port: grpcPort.port, target: grpcPort.target}
	writeSlice(t, ns, "echo-a", "echo", httpNamed, endpoint{b["b1"], true})
	h := startHoldfast(t, ns)
	ctx := testContext(t)
	waitMetric(ctx, t, h, `holdfast_objects_rejected_total{reason="port_name_mismatch"}`, func(v float64) bool { return v == 1 })
	waitMetric(ctx, t, h, "holdfast_service_ports_unmatched", func(v float64) bool { return v == 1 })
	ctl := func(args ...string) string {
		out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, append([]string{"--addr", h.AdminAddr}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("holdfastctl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	const why = `no EndpointSlice has a port named "grpc" (they have: "http")`
	if out := ctl("services", ns); !strings.Contains(out, why) {
		t.Errorf("holdfastctl services does not say why echo is empty:\n%s", out)
	}
	if out := ctl("service", ns+"/echo"); !strings.Contains(out, why) {
		t.Errorf("holdfastctl service does not say why port grpc is empty:\n%s", out)
	}
	log := testproc.Tail(h.LogPath, 200)
	if n := strings.Count(log, "reason=port_name_mismatch"); n != 1 {
		t.Errorf("%d log lines for the mismatch, want 1 (once per object version):\n%s", n, log)
	}
	// Fixed: routed, and nothing reported any more.
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	if err := dial(t, h, target(ns, "echo", grpcPort.port)).WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	waitMetric(ctx, t, h, "holdfast_service_ports_unmatched", func(v float64) bool { return v == 0 })
	if out := ctl("services", ns); strings.Contains(out, "served empty") {
		t.Errorf("holdfastctl services still reports the fixed port:\n%s", out)
	}
}
