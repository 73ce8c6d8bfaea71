package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	xdsgrpc "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/holdfast/holdfast/internal/testpki"
)

func TestBadFlagsExit2(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"unknown flag", []string{"--no-such-flag"}, "flag provided but not defined"},
		{"bad listen address", []string{"--xds-listen", "nonsense"}, "--xds-listen"},
		{"bad namespace", []string{"--namespaces", "ok,Not_A_Namespace"}, "--namespaces"},
		{"bad cluster domain", []string{"--cluster-domain", "under_score"}, "--cluster-domain"},
		{"bad envoy address", []string{"--envoy-listen-address", "localhost"}, "--envoy-listen-address"},
		{"bad log format", []string{"--log-format", "xml"}, "--log-format"},
		{"bad locality default", []string{"--locality-default", "nearest"}, "--locality-default"},
		{"certificate without key", []string{"--tls-cert", "/x.crt"}, "--tls-cert"},
		{"client CA without a certificate", []string{"--client-ca", "/ca.crt"}, "--client-ca"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
		{"negative grace", []string{"--shutdown-grace", "-1s"}, "--shutdown-grace"},
		{"probe timeout not below interval", []string{"--probe-interval", "2s", "--probe-timeout", "2s"}, "--probe-timeout"},
		{"ack timeout too short", []string{"--xds-ack-timeout", "10ms"}, "--xds-ack-timeout"},
		{"debounce max below debounce", []string{"--debounce", "1s", "--debounce-max", "10ms"}, "--debounce"},
		{"watch idle bound below bookmarks", []string{"--watch-idle-timeout", "30s"}, "--watch-idle-timeout"},
		{"guard fraction out of range", []string{"--guard-max-withdraw-fraction", "1.5"}, "--guard-max-withdraw-fraction"},
		{"guard hold period zero", []string{"--guard-hold-period", "0s"}, "--guard-hold-period"},
		{"stuck-after too short", []string{"--stuck-after", "10ms"}, "--stuck-after"},
		{"no endpoints allowed", []string{"--max-endpoints-per-service", "0"}, "--max-endpoints-per-service"},
		{"stray argument", []string{"serve"}, "unexpected argument"},
		{"remote cluster without cluster id", []string{"--remote-cluster", "b=/dev/null"}, "need --cluster-id"},
		{"clusters dir without cluster id", []string{"--clusters-dir", "/tmp"}, "need --cluster-id"},
		{"cluster id not a DNS label", []string{"--cluster-id", "East_1"}, "--cluster-id"},
		{"remote cluster without a kubeconfig", []string{"--cluster-id", "a", "--remote-cluster", "b"}, "ID=KUBECONFIG"},
		{"remote cluster is the home cluster", []string{"--cluster-id", "a", "--remote-cluster", "a=/dev/null"}, "that is --cluster-id"},
		{"remote cluster given twice", []string{"--cluster-id", "a", "--remote-cluster", "b=/dev/null", "--remote-cluster", "b=/dev/null"}, "given twice"},
		{"remote cluster's kubeconfig missing", []string{"--cluster-id", "a", "--remote-cluster", "b=/no/such/file"}, "--remote-cluster b=/no/such/file"},
		{"clusters dir not a directory", []string{"--cluster-id", "a", "--clusters-dir", "/dev/null"}, "not a directory"},
		{"cluster domain is the cluster set's", []string{"--cluster-id", "a", "--cluster-domain", "clusterset.local"}, "collide"},
		{"cluster sync timeout zero", []string{"--cluster-id", "a", "--cluster-sync-timeout", "0s"}, "--cluster-sync-timeout"},
		{"bootstrap without kind", []string{"bootstrap", "--node-id", "n", "--server", "h:1"}, "--grpc, --envoy and --client"},
		{"bootstrap with both kinds", []string{"bootstrap", "--grpc", "--envoy", "--node-id", "n", "--server", "h:1"}, "--grpc, --envoy and --client"},
		{"bootstrap without node id", []string{"bootstrap", "--grpc", "--server", "h:1"}, "node id"},
		{"bootstrap with a bad server", []string{"bootstrap", "--envoy", "--node-id", "n", "--server", "h:99999"}, "port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := realMain(tt.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tt.wantErr)
			}
		})
	}
}

func TestNoAPIServerIsARuntimeError(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	var stdout, stderr bytes.Buffer
	if code := realMain([]string{"--xds-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, &stdout, &stderr); code != 1 {
		t.Fatalf("exit code %d, want 1; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "no API server") {
		t.Errorf("stderr %q does not say what is missing", stderr.String())
	}
}

func runBootstrap(t *testing.T, args ...string) []byte {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := realMain(append([]string{"bootstrap"}, args...), &stdout, &stderr); code != 0 {
		t.Fatalf("bootstrap %v: exit %d: %s", args, code, stderr.String())
	}
	return stdout.Bytes()
}

func TestGRPCBootstrapIsAcceptedByGRPC(t *testing.T) {
	out := runBootstrap(t, "--grpc", "--node-id", "client-1", "--server", "127.0.0.1:18000", "--zone", "z1", "--cluster-id", "east")
	// grpc-go's own bootstrap parser.
	if _, err := xdsgrpc.NewXDSResolverWithConfigForTesting(out); err != nil {
		t.Fatalf("grpc-go rejects the bootstrap: %v\n%s", err, out)
	}
	var b struct {
		Node struct {
			ID       string            `json:"id"`
			Metadata map[string]string `json:"metadata"`
			Locality struct{ Zone string }
		}
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	if b.Node.ID != "client-1" || b.Node.Metadata["holdfast.io/client"] != "grpc" || b.Node.Locality.Zone != "z1" || b.Node.Metadata["holdfast.io/cluster"] != "east" {
		t.Errorf("node = %+v", b.Node)
	}
}

// TestBootstrapFallbackFlag: --fallback-server, repeated, lists further servers after
// --server in order; a bad one or one for Envoy is a configuration error (exit 2).
func TestBootstrapFallbackFlag(t *testing.T) {
	out := runBootstrap(t, "--client", "grpc-go", "--node-id", "n", "--server", "10.0.0.1:18000",
		"--fallback-server", "10.1.0.1:18000", "--fallback-server", "10.2.0.1:18000")
	var b struct {
		Servers []struct {
			URI string `json:"server_uri"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, s := range b.Servers {
		uris = append(uris, s.URI)
	}
	if got, want := strings.Join(uris, " "), "10.0.0.1:18000 10.1.0.1:18000 10.2.0.1:18000"; got != want {
		t.Errorf("xds_servers = %s, want %s", got, want)
	}
	for _, args := range [][]string{
		{"--envoy", "--node-id", "n", "--server", "10.0.0.1:18000", "--fallback-server", "10.1.0.1:18000"},
		{"--grpc", "--node-id", "n", "--server", "10.0.0.1:18000", "--fallback-server", "10.1.0.1"},
	} {
		var stdout, stderr bytes.Buffer
		if code := realMain(append([]string{"bootstrap"}, args...), &stdout, &stderr); code != 2 || stdout.Len() != 0 || stderr.Len() == 0 {
			t.Errorf("bootstrap %v: exit %d, stdout %q, stderr %q; want exit 2 with the reason and nothing written", args, code, stdout.String(), stderr.String())
		}
	}
}

func parseEnvoyBootstrap(t *testing.T, y []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(j, &b); err != nil {
		t.Fatalf("not an Envoy bootstrap: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("Envoy would reject the bootstrap: %v", err)
	}
	return &b
}

func TestEnvoyBootstrap(t *testing.T) {
	for _, tt := range []struct {
		server, wantType string
		delta            bool
	}{
		{"127.0.0.1:18000", "STATIC", false},
		{"holdfast.holdfast-system.svc:18000", "STRICT_DNS", true},
		{"unix:///var/run/holdfast/agent.sock", "STATIC", true}, // a local holdfast-agent
	} {
		args := []string{"--envoy", "--node-id", "sidecar-1", "--server", tt.server}
		if tt.delta {
			args = append(args, "--delta")
		}
		b := parseEnvoyBootstrap(t, runBootstrap(t, args...))
		ads := b.GetDynamicResources().GetAdsConfig()
		if want := map[bool]string{false: "GRPC", true: "DELTA_GRPC"}[tt.delta]; ads.GetApiType().String() != want {
			t.Errorf("%s: ADS api type %v, want %s", tt.server, ads.GetApiType(), want)
		}
		if b.GetDynamicResources().GetLdsConfig().GetAds() == nil || b.GetDynamicResources().GetCdsConfig().GetAds() == nil {
			t.Errorf("%s: LDS and CDS must come over ADS", tt.server)
		}
		if got := b.GetStaticResources().GetClusters()[0].GetType().String(); got != tt.wantType {
			t.Errorf("%s: xDS cluster type %s, want %s", tt.server, got, tt.wantType)
		}
		addr := b.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
		if path, ok := strings.CutPrefix(tt.server, "unix://"); ok && addr.GetPipe().GetPath() != path {
			t.Errorf("%s: xDS address %v, want the pipe %s", tt.server, addr, path)
		}
		if b.GetNode().GetMetadata().GetFields()["holdfast.io/client"].GetStringValue() != "envoy" {
			t.Errorf("%s: node metadata does not say envoy", tt.server)
		}
	}
}

// The examples in deploy/ are what `make bootstraps` generates; they must stay current and valid.
func TestDeployBootstrapsAreCurrent(t *testing.T) {
	common := []string{"--server", "holdfast.holdfast-system.svc:18000", "--zone", "zone-a", "--region", "region-1", "--ca-file", "/etc/holdfast/ca/ca.crt"}
	for file, args := range map[string][]string{
		"../../deploy/grpc-bootstrap.json":                           append([]string{"--grpc", "--node-id", "example-grpc-client"}, common...),
		"../../deploy/envoy-bootstrap.yaml":                          append([]string{"--envoy", "--node-id", "example-sidecar"}, common...),
		"../../deploy/overlays/sidecar-example/envoy-bootstrap.yaml": {"--envoy", "--delta", "--node-id", "shop", "--server", "unix:///var/run/holdfast/agent.sock"},
	} {
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, runBootstrap(t, args...)) {
			t.Errorf("%s is stale: run make bootstraps", file)
		}
	}
	parseEnvoyBootstrap(t, mustRead(t, "../../deploy/envoy-bootstrap.yaml"))
	parseEnvoyBootstrap(t, mustRead(t, "../../deploy/overlays/sidecar-example/envoy-bootstrap.yaml"))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// With --ca-file the bootstraps speak TLS to Holdfast: grpc-go's "tls" channel credentials
// (gRFC A65, files it watches), Envoy's TLS transport socket checking Holdfast's name.
func TestBootstrapTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	pk, err := testpki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pk.Issue("client", "client")
	if err != nil {
		t.Fatal(err)
	}
	for path, b := range map[string][]byte{ca: pk.PEM(), cert: leaf.CertPEM, key: leaf.KeyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := runBootstrap(t, "--grpc", "--node-id", "c", "--server", "holdfast.example:18000", "--ca-file", ca, "--cert-file", cert, "--key-file", key)
	if _, err := xdsgrpc.NewXDSResolverWithConfigForTesting(out); err != nil {
		t.Fatalf("grpc-go rejects the TLS bootstrap: %v\n%s", err, out)
	}
	var g struct {
		XDSServers []struct {
			ChannelCreds []struct {
				Type   string            `json:"type"`
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(out, &g); err != nil {
		t.Fatal(err)
	}
	if cc := g.XDSServers[0].ChannelCreds[0]; cc.Type != "tls" || cc.Config["ca_certificate_file"] != ca || cc.Config["certificate_file"] != cert || cc.Config["private_key_file"] != key {
		t.Errorf("gRPC channel creds %+v", cc)
	}

	b := parseEnvoyBootstrap(t, runBootstrap(t, "--envoy", "--node-id", "e", "--server", "holdfast.example:18000", "--ca-file", ca))
	ts := b.GetStaticResources().GetClusters()[0].GetTransportSocket()
	var utc tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&utc); err != nil {
		t.Fatalf("Envoy xDS cluster transport socket %v: %v", ts, err)
	}
	vc := utc.GetCommonTlsContext().GetValidationContext()
	if utc.GetSni() != "holdfast.example" || vc.GetTrustedCa().GetFilename() != ca ||
		vc.GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact() != "holdfast.example" {
		t.Errorf("Envoy upstream TLS %v", &utc)
	}

	for _, args := range [][]string{
		{"--grpc", "--node-id", "c", "--server", "h:1", "--ca-file", ca, "--cert-file", cert},
		{"--grpc", "--node-id", "c", "--server", "h:1", "--cert-file", cert, "--key-file", key},
		{"--envoy", "--node-id", "c", "--server", "unix:///run/a.sock", "--ca-file", ca},
	} {
		var stdout, stderr bytes.Buffer
		if code := realMain(append([]string{"bootstrap"}, args...), &stdout, &stderr); code != 2 {
			t.Errorf("bootstrap %v: exit %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}

// TestBootstrapPerClient: every gRPC bootstrap has a node with a locality (grpc-js-xds refuses
// one without), --client names the implementation, and TLS is written only for one that has
// "tls" channel credentials that work; for grpc-java, grpc-node and grpc-core the error says how to get a secure
// path (holdfast-agent on a Unix socket), and no bootstrap ever lists "insecure" after "tls".
func TestBootstrapPerClient(t *testing.T) {
	type parsed struct {
		Node struct {
			Locality *struct {
				Zone   string `json:"zone"`
				Region string `json:"region"`
			} `json:"locality"`
		} `json:"node"`
		XDSServers []struct {
			ServerURI    string `json:"server_uri"`
			ChannelCreds []struct {
				Type string `json:"type"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
	}
	for _, tt := range []struct {
		args      []string
		wantCreds []string // empty: refused with exit 2
		wantErr   string
	}{
		{[]string{"--grpc"}, []string{"insecure"}, ""},
		{[]string{"--client", "grpc-go"}, []string{"insecure"}, ""},
		{[]string{"--client", "grpc-node"}, []string{"insecure"}, ""},
		{[]string{"--client", "grpc-core", "--server", "unix:///var/run/holdfast/agent.sock"}, []string{"insecure"}, ""},
		{[]string{"--client", "grpc-go", "--ca-file", "/ca.crt"}, []string{"tls"}, ""},
		{[]string{"--grpc", "--ca-file", "/ca.crt"}, []string{"tls"}, ""},
		{[]string{"--client", "grpc-node", "--ca-file", "/ca.crt"}, nil, "holdfast-agent"},
		{[]string{"--client", "grpc-core", "--ca-file", "/ca.crt"}, nil, "unix:///var/run/holdfast/agent.sock"},
		{[]string{"--client", "grpc-java", "--server", "unix:///var/run/holdfast/agent.sock"}, []string{"insecure"}, ""},
		{[]string{"--client", "grpc-java", "--ca-file", "/ca.crt"}, nil, "ignores their files"},
		{[]string{"--client", "grpc-rust"}, nil, "grpc-go, grpc-java, grpc-node, grpc-core, envoy"},
		{[]string{"--client", "grpc-node", "--envoy"}, nil, "contradicts"},
	} {
		args := append([]string{"--node-id", "n"}, tt.args...)
		if !slices.Contains(args, "--server") {
			args = append(args, "--server", "holdfast.example:18000")
		}
		var stdout, stderr bytes.Buffer
		code := realMain(append([]string{"bootstrap"}, args...), &stdout, &stderr)
		if tt.wantCreds == nil {
			if code != 2 || !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("bootstrap %v: exit %d, stderr %q; want 2 and %q", tt.args, code, stderr.String(), tt.wantErr)
			}
			continue
		}
		if code != 0 {
			t.Errorf("bootstrap %v: exit %d: %s", tt.args, code, stderr.String())
			continue
		}
		var b parsed
		if err := json.Unmarshal(stdout.Bytes(), &b); err != nil {
			t.Fatal(err)
		}
		if b.Node.Locality == nil {
			t.Errorf("bootstrap %v: node without a locality:\n%s", tt.args, stdout.String())
		}
		var creds []string
		for _, c := range b.XDSServers[0].ChannelCreds {
			creds = append(creds, c.Type)
		}
		if !slices.Equal(creds, tt.wantCreds) {
			t.Errorf("bootstrap %v: channel creds %v, want %v", tt.args, creds, tt.wantCreds)
		}
		if _, err := xdsgrpc.NewXDSResolverWithConfigForTesting(stdout.Bytes()); err != nil && !slices.Contains(tt.args, "--ca-file") {
			t.Errorf("bootstrap %v: grpc-go rejects it: %v", tt.args, err)
		}
	}
	// The locality carries what it is given.
	var b parsed
	if err := json.Unmarshal(runBootstrap(t, "--client", "grpc-node", "--node-id", "n", "--server", "h:1", "--zone", "z", "--region", "r"), &b); err != nil {
		t.Fatal(err)
	}
	if l := b.Node.Locality; l == nil || l.Zone != "z" || l.Region != "r" {
		t.Errorf("locality %+v", l)
	}
}

// The control plane in deploy/base runs with flags Holdfast accepts.
func TestDeployArgsAreAccepted(t *testing.T) {
	var d struct {
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
	if err := yaml.Unmarshal(mustRead(t, "../../deploy/base/deployment.yaml"), &d); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "holdfast" {
			continue
		}
		found = true
		if _, err := parseConfig(c.Args, io.Discard); err != nil {
			t.Errorf("deploy/base/deployment.yaml: %v", err)
		}
	}
	if !found {
		t.Error("no holdfast container in deploy/base/deployment.yaml")
	}
}

// TestStartupErrorsExitTwo: a configuration Holdfast cannot use exits 2 with a message naming
// what is wrong, before anything starts (nothing is bound, nothing is read, no DNS lookup);
// what the machine refuses at run time (a port in use, an address not on it) exits 1 with one
// clear line.
func TestStartupErrorsExitTwo(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifoDir := filepath.Join(dir, "fifo")
	if err := os.Mkdir(fifoDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(fifoDir, "state"), 0o600); err != nil {
		t.Fatal(err)
	}
	dirAsState := filepath.Join(dir, "dir-as-state")
	if err := os.MkdirAll(filepath.Join(dirAsState, "state"), 0o750); err != nil {
		t.Fatal(err)
	}
	readOnly := readOnlyDir(t)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: t}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := func() []string { // listen flags on free ports, for the cases about something else
		return []string{"--kubeconfig", kubeconfig, "--xds-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0"}
	}
	tests := []struct {
		name    string
		args    []string
		env     string // KUBECONFIG
		code    int
		wantErr string
	}{
		{"listen address not an IP", []string{"--xds-listen", "256.1.1.1:28000"}, "", 2, `host "256.1.1.1": want an IP address`},
		{"listen address a name", []string{"--http-listen", "holdfast.example:18080"}, "", 2, "names are not looked up"},
		{"listen port out of range", []string{"--admin-listen", "127.0.0.1:99999"}, "", 2, `port "99999": want a number from 0 to 65535`},
		{"status page on a name", []string{"--status-listen", "status.example:18002"}, "", 2, "--status-listen"},
		{"status page port in use", append(free(), "--status-listen", busy.Addr().String()), "", 1, "--status-listen"},
		{"state dir is a file", append(free(), "--state-dir", file), "", 2, "--state-dir " + file + ": not a directory"},
		{"state dir not writable", append(free(), "--state-dir", readOnly), "", 2, "not writable"},
		{"state file is a FIFO", append(free(), "--state-dir", fifoDir), "", 2, "is not a regular file"},
		{"state file is a directory", append(free(), "--state-dir", dirAsState), "", 2, "is not a regular file"},
		{"no grace for tombstones", append(free(), "--tombstone-grace", "0s"), "", 2, "--tombstone-grace 0s: want at least 1s"},
		{"kubeconfig missing", []string{"--kubeconfig", filepath.Join(dir, "nope")}, "", 2, "--kubeconfig: stat"},
		{"$KUBECONFIG missing", []string{"--xds-listen", "127.0.0.1:0"}, filepath.Join(dir, "nope"), 2, "$KUBECONFIG=" + filepath.Join(dir, "nope") + ": no such file"},
		{"port in use", append(free(), "--xds-listen", busy.Addr().String()), "", 1, "address already in use"},
		{"address not on this machine", append(free(), "--http-listen", "192.0.2.77:0"), "", 1, "cannot assign requested address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tt.env)
			var stdout, stderr bytes.Buffer
			done := make(chan int, 1)
			go func() { done <- realMain(tt.args, &stdout, &stderr) }()
			var code int
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("holdfast did not exit: it must refuse this before starting\n%s", stderr.String())
			}
			if code != tt.code || !strings.Contains(stderr.String(), tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.wantErr)
			}
			if tt.code == 2 && strings.Contains(stderr.String(), "holdfast starting") {
				t.Errorf("a configuration error after starting:\n%s", stderr.String())
			}
			if tt.code == 1 {
				if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n") + 1; lines != 1 {
					t.Errorf("%d lines on stderr, want one clear line:\n%s", lines, stderr.String())
				}
			}
		})
	}
}

// readOnlyDir returns a directory nobody can write to, not even root: a read-only tmpfs when the
// test runs as root (which ignores permission bits), a directory without write permission
// otherwise.
func readOnlyDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if os.Geteuid() != 0 {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(d, 0o755) })
		return d
	}
	if err := syscall.Mount("tmpfs", d, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
		t.Fatalf("mount a read-only tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(d, 0) })
	return d
}
