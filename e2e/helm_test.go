package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/holdfast/holdfast/e2e/harness"
)

// helm runs the pinned Helm (harness.Helm) and fails the test on an error.
func helm(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := harness.Helm(ctx, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// chart is the chart's directory in this checkout.
func chart(t *testing.T) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", "helm", "holdfast")
}

// helmTemplate renders the chart as release holdfast in holdfast-system with values set.
func helmTemplate(ctx context.Context, t *testing.T, set ...string) []byte {
	t.Helper()
	args := []string{"template", "holdfast", chart(t), "--namespace", "holdfast-system"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return []byte(helm(ctx, t, args...))
}

// helmOwnLabels are the labels Helm's chart adds that kustomize has no reason to.
var helmOwnLabels = []string{"app.kubernetes.io/managed-by", "helm.sh/chart"}

// byKey parses manifests into objects keyed kind/namespace/name, as generic maps, without
// Helm's own labels.
func byKey(t *testing.T, manifests []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objects(t, manifests) {
		var m map[string]any
		if err := yaml.Unmarshal(o.raw, &m); err != nil {
			t.Fatal(err)
		}
		if m == nil {
			continue
		}
		if md, ok := m["metadata"].(map[string]any); ok {
			if labels, ok := md["labels"].(map[string]any); ok {
				for _, l := range helmOwnLabels {
					delete(labels, l)
				}
			}
		}
		k := fmt.Sprintf("%s/%s/%s", o.Kind, o.Metadata.Namespace, o.Metadata.Name)
		if _, dup := out[k]; dup {
			t.Fatalf("%s rendered twice", k)
		}
		out[k] = m
	}
	return out
}

// TestHelmMatchesKustomize: the chart is not a second source of truth. With its defaults it
// renders exactly the control-plane overlay's objects; with the agent or the alert rules
// enabled, exactly the with-agent or with-prometheus-operator overlay's. The one difference is
// the release namespace, which the chart does not create (Helm creates its release record
// there first; the README applies deploy/base/namespace.yaml, with its labels, before).
func TestHelmMatchesKustomize(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	for _, tt := range []struct {
		overlay string
		set     []string
	}{
		{"overlays/control-plane", nil},
		{"overlays/with-agent", []string{"agent.enabled=true"}},
		{"overlays/with-prometheus-operator", []string{"prometheusRule.enabled=true"}},
		{"overlays/cluster-set", []string{"clusterSet.id=east"}},
	} {
		t.Run(tt.overlay, func(t *testing.T) {
			want := byKey(t, render(ctx, t, tt.overlay))
			if _, ok := want["Namespace//holdfast-system"]; !ok {
				t.Fatalf("the overlay no longer creates holdfast-system: %v", slices.Sorted(mapKeys(want)))
			}
			delete(want, "Namespace//holdfast-system")
			got := byKey(t, helmTemplate(ctx, t, tt.set...))
			for k, w := range want {
				g, ok := got[k]
				if !ok {
					t.Errorf("%s: rendered by kustomize, not by the chart", k)
					continue
				}
				if !reflect.DeepEqual(g, w) {
					gy, _ := yaml.Marshal(g)
					wy, _ := yaml.Marshal(w)
					t.Errorf("%s differs.\nchart:\n%s\nkustomize:\n%s", k, gy, wy)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("%s: rendered by the chart, not by kustomize", k)
				}
			}
		})
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestHelmLint: `helm lint --strict` is clean with the defaults and with every option on.
func TestHelmLint(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	for _, set := range [][]string{nil, {"agent.enabled=true", "prometheusRule.enabled=true", "tls.requireClientCerts=true", "extraArgs={--namespaces=shop}"}} {
		args := []string{"lint", "--strict", chart(t)}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out := helm(ctx, t, args...)
		if !strings.Contains(out, "0 chart(s) failed") || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
			t.Errorf("helm lint %v:\n%s", set, out)
		}
	}
}

// TestHelmDryRun: everything the chart can render (the agent, the alert rules, mTLS, extra
// arguments) is accepted by the real API server with server-side dry-run, without a warning,
// and each option does what it says.
func TestHelmDryRun(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	kubectl(ctx, t, []byte(prometheusRuleCRD), "apply", "--server-side", "--field-manager", "holdfast-e2e", "-f", "-")
	kubectl(ctx, t, nil, "wait", "--for", "condition=established", "--timeout", "30s", "crd/prometheusrules.monitoring.coreos.com")
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := os.ReadFile(filepath.Join(root, "deploy", "base", "namespace.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	kubectl(ctx, t, ns, "apply", "--server-side", "--field-manager", "holdfast-e2e", "-f", "-")
	manifests := helmTemplate(ctx, t, "agent.enabled=true", "prometheusRule.enabled=true", "tls.requireClientCerts=true", "extraArgs={--namespaces=shop}")
	objs := objects(t, manifests)
	dryRunApply(ctx, t, manifests, objs)
	for _, want := range []string{"--client-ca=/etc/holdfast/tls/ca.crt", "--namespaces=shop", "kind: DaemonSet", "kind: PrometheusRule", "HoldfastSourceStale"} {
		if !bytes.Contains(manifests, []byte(want)) {
			t.Errorf("the chart with every option on renders no %q", want)
		}
	}
}

// dryRunApply creates the namespaces among objs for real (a namespace created in the same
// dry-run does not exist for the rest, and Pod Security reads its labels), then applies
// manifests with server-side dry-run: every object must be applied, without a warning.
func dryRunApply(ctx context.Context, t *testing.T, manifests []byte, objs []object) {
	t.Helper()
	var namespaces [][]byte
	for _, o := range objs {
		if o.Kind == "Namespace" {
			namespaces = append(namespaces, o.raw)
		}
	}
	if len(namespaces) > 0 {
		kubectl(ctx, t, bytes.Join(namespaces, []byte("\n---\n")), "apply", "--server-side", "--field-manager", "holdfast-e2e", "-f", "-")
	}
	out, warnings := kubectl(ctx, t, manifests, "apply", "--server-side", "--dry-run=server", "--field-manager", "holdfast-e2e", "-f", "-")
	if strings.Contains(warnings, "Warning") {
		t.Errorf("warnings from the API server:\n%s", warnings)
	}
	for _, o := range objs {
		if !strings.Contains(out, strings.ToLower(o.Kind)) || !strings.Contains(out, o.Metadata.Name) {
			t.Errorf("%s %s not in kubectl's report:\n%s", o.Kind, o.Metadata.Name, out)
		}
	}
	if n := strings.Count(out, "serverside-applied (server dry run)"); n != len(objs) {
		t.Errorf("%d of %d objects applied in dry-run:\n%s", n, len(objs), out)
	}
}
