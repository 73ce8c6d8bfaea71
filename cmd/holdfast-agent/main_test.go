package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestFlags(t *testing.T) {
	ok := []string{"--upstream", "holdfast:18000", "--node-id", "n"}
	tests := []struct {
		args    []string
		wantErr string
	}{
		{ok, ""},
		{append(ok, "--listen", "unix:///run/a.sock", "--kinds", "envoy"), ""},
		{[]string{"--node-id", "n"}, "--upstream"},
		{[]string{"--upstream", "holdfast:18000"}, "--node-id is required"},
		{append(ok, "--kinds", "grpc,istio"), "--kinds"},
		{append(ok, "--listen", "nowhere"), "--listen"},
		{append(ok, "--max-cache-age", "0s"), "must be positive"},
		{append(ok, "--log-level", "loud"), "--log-level"},
		{append(ok, "extra"), "unexpected arguments"},
		{append(ok, "--upstream-ca", "/ca.crt", "--upstream-cert", "/c.crt", "--upstream-key", "/c.key"), ""},
		{append(ok, "--upstream-cert", "/c.crt"), "--upstream-cert"},
		{append(ok, "--upstream-plaintext", "--upstream-ca", "/ca.crt"), "--upstream-plaintext excludes"},
	}
	for _, tt := range tests {
		_, err := parse(tt.args, io.Discard)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tt.args, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%v: %v, want an error about %s", tt.args, err, tt.wantErr)
		}
	}
	if code := realMain([]string{"--node-id", "n"}, io.Discard, io.Discard); code != 2 {
		t.Errorf("bad flags exit %d, want 2", code)
	}
}

// The agent containers in deploy/ run with flags the agent accepts.
func TestDeployExamplesUseRealFlags(t *testing.T) {
	for _, file := range []string{"../../deploy/overlays/sidecar-example/shop.yaml", "../../deploy/overlays/with-agent/agent-daemonset.yaml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			var obj struct {
				Spec struct {
					Template struct {
						Spec struct {
							Containers []struct {
								Name string
								Args []string
							}
						}
					}
				}
			}
			if err := yaml.Unmarshal(doc, &obj); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, c := range obj.Spec.Template.Spec.Containers {
				if c.Name != "holdfast-agent" {
					continue
				}
				found++
				args := make([]string, len(c.Args))
				for i, a := range c.Args {
					args[i] = strings.ReplaceAll(a, "$(NODE_NAME)", "node-1")
				}
				if _, err := parse(args, io.Discard); err != nil {
					t.Errorf("%s: %v", file, err)
				}
			}
		}
		if found != 1 {
			t.Errorf("%s: %d holdfast-agent containers, want 1", file, found)
		}
	}
}
