// Package harness runs Holdfast's real programs for end-to-end tests and the demo: it builds
// the binaries, starts Holdfast as its own process, starts gRPC backends inside a network
// namespace, and dials services through grpc-go's own xDS client.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Binaries are the programs built from this checkout.
type Binaries struct {
	Holdfast    string
	Holdfastctl string
	Agent       string
	XDSClient   string
	XDSApp      string // grpc-go as an application: see e2e/cmd/xdsapp
	Backend     string
}

// ModuleRoot is the directory holding Holdfast's go.mod.
func ModuleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("harness: cannot locate the module")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

// Build compiles holdfast, holdfastctl and the test backend into dir.
func Build(dir string) (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/holdfast", "./cmd/holdfastctl", "./cmd/holdfast-agent", "./e2e/cmd/xdsclient", "./e2e/cmd/xdsapp", "./e2e/cmd/backend")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("harness: go build: %w\n%s", err, out)
	}
	return Binaries{Holdfast: filepath.Join(dir, "holdfast"), Holdfastctl: filepath.Join(dir, "holdfastctl"),
		Agent: filepath.Join(dir, "holdfast-agent"), XDSClient: filepath.Join(dir, "xdsclient"), XDSApp: filepath.Join(dir, "xdsapp"), Backend: filepath.Join(dir, "backend")}, nil
}

// Eventually polls cond every 50 ms until it holds, or returns ctx's error once ctx is done.
// The one waiting helper of the end-to-end tests: a bound is a context deadline.
func Eventually(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Helm runs the pinned Helm that make tools builds ($HELM) with args, against the API server of
// kubeconfig ("" for none), its caches in a temporary directory: nothing is read from or
// written to the user's Helm configuration. It returns stdout.
func Helm(ctx context.Context, kubeconfig string, args ...string) (string, error) {
	bin := os.Getenv("HELM")
	if bin == "" {
		return "", errors.New("HELM is not set: run the tests through make (make tools builds Helm)")
	}
	home, err := os.MkdirTemp("", "holdfast-helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(home)
	if kubeconfig != "" {
		args = append([]string{"--kubeconfig", kubeconfig}, args...)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_DATA_HOME="+filepath.Join(home, "data"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String(), nil
}
