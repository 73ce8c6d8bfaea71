package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/e2e/kube"
)

// overlays are every kustomization an operator may apply.
// The base is applied only through an overlay (which names the image).
var overlays = []string{"overlays/control-plane", "overlays/with-agent", "overlays/sidecar-example", "overlays/with-prometheus-operator", "overlays/cluster-set"}

// kubectl runs the kubectl built with the API server against the package's cluster.
func kubectl(ctx context.Context, t *testing.T, stdin []byte, args ...string) (stdout, stderr string) {
	t.Helper()
	return kubectlOn(ctx, t, env.cluster, stdin, args...)
}

// kubectlOn runs kubectl against k's API server.
func kubectlOn(ctx context.Context, t *testing.T, k *kube.Cluster, stdin []byte, args ...string) (stdout, stderr string) {
	t.Helper()
	bins, err := kube.Build()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bins.Kubectl, append([]string{"--kubeconfig", k.Kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String()
}

// render runs kubectl kustomize on deploy/<dir>.
func render(ctx context.Context, t *testing.T, dir string) []byte {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := kubectl(ctx, t, nil, "kustomize", filepath.Join(root, "deploy", dir))
	return []byte(out)
}

// object is the part of a manifest the tests look at.
type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	raw []byte
}

func objects(t *testing.T, manifests []byte) []object {
	t.Helper()
	var out []object
	for _, doc := range strings.Split(string(manifests), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered manifest: %v\n%s", err, doc)
		}
		o.raw = []byte(doc)
		out = append(out, o)
	}
	return out
}

// prometheusRuleCRD stands in for the Prometheus operator's CRD: the same group, version and
// names, and a schema of the fields Holdfast's rules use (the operator's own CRD cannot be
// fetched here).
const prometheusRuleCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [groups]
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name, rules]
                    properties:
                      name: {type: string}
                      interval: {type: string}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          properties:
                            alert: {type: string}
                            record: {type: string}
                            expr: {type: string}
                            for: {type: string}
                            labels: {type: object, additionalProperties: {type: string}}
                            annotations: {type: object, additionalProperties: {type: string}}
`

// Every overlay renders, and every object in it is accepted by the real API server with
// server-side dry-run, without a warning (a Pod Security violation in a workload's template is
// a warning, not an error).
func TestDeployManifestsServerSideDryRun(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	kubectl(ctx, t, []byte(prometheusRuleCRD), "apply", "--server-side", "--field-manager", "holdfast-e2e", "-f", "-")
	kubectl(ctx, t, nil, "wait", "--for", "condition=established", "--timeout", "30s", "crd/prometheusrules.monitoring.coreos.com")
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			manifests := render(ctx, t, dir)
			dryRunApply(ctx, t, manifests, objects(t, manifests))
		})
	}
}

// holdfastRules are the only things Holdfast's ServiceAccount may do beyond what every
// account may (discovery, reviewing itself): resource → verbs.
var holdfastRules = map[string][]string{
	"services":                        {"list", "watch"},
	"endpointslices.discovery.k8s.io": {"list", "watch"},
	"nodes":                           {"list", "watch"},
}

// Holdfast runs as its ServiceAccount with the base's RBAC and nothing else: it syncs and
// serves, its account can do exactly what the ClusterRole grants, and is refused what it must
// never do.
func TestDeployRBACIsEnough(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	kubectl(ctx, t, render(ctx, t, "base"), "apply", "--server-side", "--field-manager", "holdfast-e2e", "-f", "-")
	const sa = "system:serviceaccount:holdfast-system:holdfast"
	tr, err := env.cluster.Client.CoreV1().ServiceAccounts("holdfast-system").CreateToken(ctx, "holdfast",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.cluster.WriteKubeconfigWithToken(kubeconfig, tr.Status.Token); err != nil {
		t.Fatal(err)
	}

	// Holdfast as the ServiceAccount: synced (ready), serving, and never refused.
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h, err := harness.StartHoldfast(ctx, env.bins.Holdfast, env.dir, kubeconfig, "--namespaces", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Terminate(15 * time.Second) }()
	if err := dial(t, h, target(ns, "echo", grpcPort.port)).WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	for _, series := range []string{`holdfast_source_stale{source="` + ns + `"}`} {
		if v, err := h.Metric(ctx, series); err != nil || v != 0 {
			t.Errorf("%s = %v, %v", series, v, err)
		}
	}
	if log := h.LogTail(200); strings.Contains(log, "forbidden") {
		t.Errorf("Holdfast was refused something:\n%s", log)
	}

	// What the account may do, as the API server sees it (kubectl auth can-i --list).
	cfg := rest.CopyConfig(env.cluster.Config)
	cfg.BearerToken, cfg.BearerTokenFile = tr.Status.Token, ""
	cfg.Username, cfg.Password, cfg.CertFile, cfg.KeyFile, cfg.CertData, cfg.KeyData = "", "", "", "", nil, nil
	asSA, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review, err := asSA.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx,
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, r := range review.Status.ResourceRules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				name := res
				if g != "" {
					name += "." + g
				}
				if g == "authorization.k8s.io" || g == "authentication.k8s.io" {
					continue // every account may review itself
				}
				got[name] = append(got[name], r.Verbs...)
			}
		}
	}
	for name := range got {
		slices.Sort(got[name])
		got[name] = slices.Compact(got[name])
	}
	if fmt.Sprint(got) != fmt.Sprint(holdfastRules) {
		t.Errorf("the ServiceAccount may do %v, want exactly %v", got, holdfastRules)
	}

	// And what it must never do, asked of the API server's authorizer.
	for _, a := range []authorizationv1.ResourceAttributes{
		{Verb: "create", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: ns},
		{Verb: "update", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: ns},
		{Verb: "delete", Resource: "services", Namespace: ns},
		{Verb: "get", Resource: "secrets", Namespace: "holdfast-system"},
		{Verb: "list", Resource: "secrets"},
		{Verb: "create", Resource: "pods", Namespace: ns},
		{Verb: "patch", Resource: "nodes"},
	} {
		sar, err := env.cluster.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:holdfast-system", "system:authenticated"},
				ResourceAttributes: &a}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed {
			t.Errorf("the ServiceAccount may %s %s (group %q) in %q", a.Verb, a.Resource, a.Group, a.Namespace)
		}
	}
	_ = os.Remove(kubeconfig)
}

// Every overlay runs Holdfast's programs from the image its kustomize images: entry names, by a
// version tag that is not latest and without pulling a tag a node already has (IfNotPresent):
// pointing an overlay at a registry is one entry, and nothing runs an image nobody built.
func TestDeployImagesPinned(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const want = "registry.example.com/holdfast:v0.1.0"
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			var found int
			for _, o := range objects(t, render(ctx, t, dir)) {
				var w struct {
					Spec struct {
						Template struct {
							Spec struct {
								Containers []struct {
									Name            string   `json:"name"`
									Image           string   `json:"image"`
									ImagePullPolicy string   `json:"imagePullPolicy"`
									Command         []string `json:"command"`
								} `json:"containers"`
							} `json:"spec"`
						} `json:"template"`
					} `json:"spec"`
				}
				if err := yaml.Unmarshal(o.raw, &w); err != nil {
					t.Fatal(err)
				}
				for _, c := range w.Spec.Template.Spec.Containers {
					if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image[strings.LastIndex(c.Image, "/")+1:], ":") {
						t.Errorf("%s %s container %s: image %q has no version tag", o.Kind, o.Metadata.Name, c.Name, c.Image)
					}
					if len(c.Command) == 0 || !strings.HasPrefix(c.Command[0], "/holdfast") {
						continue
					}
					found++
					if c.Image != want || c.ImagePullPolicy != "IfNotPresent" {
						t.Errorf("%s %s container %s: image %q pull %q, want %q IfNotPresent (the overlay's images: entry)",
							o.Kind, o.Metadata.Name, c.Name, c.Image, c.ImagePullPolicy, want)
					}
				}
			}
			if found == 0 {
				t.Errorf("no Holdfast container in %s", dir)
			}
		})
	}
}
