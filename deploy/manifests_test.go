// Package deploy holds Holdfast's Kubernetes manifests; its tests check what can be checked
// without an API server (e2e/deploy_test.go applies them to a real one).
package deploy

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The PrometheusRule carries exactly the rules of the plain file that promtool tests.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	var plain map[string]any
	readYAML(t, "prometheus/holdfast-alerts.yaml", &plain)
	var rule struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Spec       map[string]any `json:"spec"`
	}
	readYAML(t, "prometheus/prometheusrule.yaml", &rule)
	if rule.APIVersion != "monitoring.coreos.com/v1" || rule.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml is a %s %s", rule.APIVersion, rule.Kind)
	}
	if !reflect.DeepEqual(rule.Spec, plain) {
		a, _ := json.Marshal(rule.Spec)
		b, _ := json.Marshal(plain)
		t.Errorf("prometheusrule.yaml differs from holdfast-alerts.yaml: run make prometheusrule\n%s\n%s", a, b)
	}
}

// TestHelmAlertsAreCurrent: the chart's copy of the alert rules is the promtool-tested file,
// byte for byte (make prometheusrule writes it).
func TestHelmAlertsAreCurrent(t *testing.T) {
	want, err := os.ReadFile("prometheus/holdfast-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("helm/holdfast/files/holdfast-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Error("deploy/helm/holdfast/files/holdfast-alerts.yaml differs from deploy/prometheus/holdfast-alerts.yaml: run make prometheusrule")
	}
}
