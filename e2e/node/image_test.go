package node

import (
	"encoding/json"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// TestImageRuns: the tar `make image` builds is what a registry takes: skopeo (what one pushes
// it with: `skopeo copy oci-archive:… docker://…`) reads it as an OCI archive and as a docker
// archive, with the version and revision labels. The image runs as a pod — as a non-root user, with a
// read-only root filesystem, every capability dropped — and its three programs report the
// version the image was built as.
func TestImageRuns(t *testing.T) {
	ctx := testContext(t)
	rev, err := exec.CommandContext(ctx, "git", "-C", env.root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"oci-archive:", "docker-archive:"} {
		out, err := exec.CommandContext(ctx, "skopeo", "inspect", transport+env.imageTar).CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo inspect %s: %v\n%s", transport, err, out)
		}
		var img struct {
			Labels       map[string]string
			Architecture string
			Os           string
		}
		if err := json.Unmarshal(out, &img); err != nil {
			t.Fatal(err)
		}
		if img.Labels["org.opencontainers.image.version"] != env.version || img.Labels["org.opencontainers.image.revision"] != strings.TrimSpace(string(rev)) ||
			img.Os != "linux" || img.Architecture != runtime.GOARCH {
			t.Errorf("skopeo inspect %s: %s", transport, out)
		}
	}
	ns := "image-runs"
	kubectl(ctx, t, "", "create", "namespace", ns)
	t.Cleanup(func() { _, _ = env.node.Kubectl(ctx, "", "delete", "namespace", ns, "--wait=false") })
	for _, prog := range []string{"holdfast", "holdfast-agent", "holdfastctl"} {
		pod := `apiVersion: v1
kind: Pod
metadata: {name: ` + prog + `, namespace: ` + ns + `}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: main
    image: ` + holdfastImage + ":" + env.version + `
    command: ["/` + prog + `", "--version"]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
`
		kubectl(ctx, t, pod, "apply", "-f", "-")
		kubectl(ctx, t, "", "-n", ns, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/"+prog, "--timeout=60s")
		out := kubectl(ctx, t, "", "-n", ns, "logs", prog)
		if got, want := strings.TrimSpace(out), prog+" "+env.version; got != want {
			t.Errorf("%s --version in the image: %q, want %q", prog, got, want)
		}
		uid := kubectl(ctx, t, "", "-n", ns, "get", "pod", prog, "-o", "jsonpath={.status.containerStatuses[0].user.linux.uid}")
		if uid != "" && uid != "65532" {
			t.Errorf("%s ran as uid %s, want the image's 65532", prog, uid)
		}
	}
}
