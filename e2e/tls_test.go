package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
	"github.com/holdfast/holdfast/internal/testpki"
	"github.com/holdfast/holdfast/xds/bootstrap"
)

// tlsFiles is a CA, Holdfast's certificate for 127.0.0.1 and a client certificate, on disk.
type tlsFiles struct {
	ca                  *testpki.CA
	dir                 string
	caFile, cert, key   string
	clientCert, clientK string
	server              testpki.Leaf
}

func newTLSFiles(t *testing.T) *tlsFiles {
	t.Helper()
	f := &tlsFiles{dir: t.TempDir()}
	var err error
	if f.ca, err = testpki.NewCA("holdfast e2e CA"); err != nil {
		t.Fatal(err)
	}
	f.caFile, f.cert, f.key = filepath.Join(f.dir, "ca.crt"), filepath.Join(f.dir, "tls.crt"), filepath.Join(f.dir, "tls.key")
	f.clientCert, f.clientK = filepath.Join(f.dir, "client.crt"), filepath.Join(f.dir, "client.key")
	f.write(f.caFile, f.ca.PEM())
	f.server = f.issue(t, "holdfast")
	f.write(f.cert, f.server.CertPEM)
	f.write(f.key, f.server.KeyPEM)
	client := f.issue(t, "app")
	f.write(f.clientCert, client.CertPEM)
	f.write(f.clientK, client.KeyPEM)
	return f
}

func (f *tlsFiles) issue(t *testing.T, cn string) testpki.Leaf {
	t.Helper()
	// env.net's host address too: Holdfast's xDS port is there when a scene has a sidecar Envoy
	// (withEnvoy), and a client checks the name it dialled.
	l, err := f.ca.Issue(cn, "127.0.0.1", "localhost", env.net.Host.String())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// write replaces a file as a Secret volume update does: written aside, renamed into place.
func (f *tlsFiles) write(path string, b []byte) {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		_ = os.Rename(tmp, path)
	}
}

// handshake connects to addr over TLS trusting the CA, with the client certificate if withCert,
// and returns the serial number of the certificate Holdfast presented.
func (f *tlsFiles) handshake(addr string, withCert bool) (*big.Int, error) {
	if withCert {
		return f.handshakeAs(addr, f.clientCert, f.clientK)
	}
	return f.handshakeAs(addr, "", "")
}

// handshakeAs is handshake presenting the certificate in certFile ("" for none).
func (f *tlsFiles) handshakeAs(addr, certFile, keyFile string) (*big.Int, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.ca.PEM())
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// With TLS 1.3 the server's verdict on the client certificate arrives after the client's
	// handshake: read until the server speaks (HTTP/2 settings) or refuses.
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// Holdfast serves xDS and its admin API over mTLS from files, and picks up a rotated
// certificate without a restart; clients without a valid certificate are refused.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newTLSFiles(t)
	ns := newNamespace(t)
	b := startBackends(t, grpcPort.target, "b1")
	createService(t, ns, "echo", grpcPort)
	writeSlice(t, ns, "echo-a", "echo", grpcPort, endpoint{b["b1"], true})
	h := startHoldfastOn(t, env.cluster, ns, "--tls-cert", f.cert, "--tls-key", f.key, "--client-ca", f.caFile)

	// A grpc-go xDS client with mTLS in its bootstrap (channel_creds "tls", gRFC A65).
	app, err := harness.DialXDSWith(bootstrap.Options{NodeID: "app-tls", Server: h.XDSAddr,
		CAFile: f.caFile, CertFile: f.clientCert, KeyFile: f.clientK}, target(ns, "echo", grpcPort.port))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	if err := app.WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}

	// Refused: no client certificate, or one from another CA, or plaintext.
	if _, err := f.handshake(h.XDSAddr, false); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("a client without a certificate: %v, want refused (certificate required)", err)
	}
	other := newTLSFiles(t) // another CA, and a client certificate it signed
	if _, err := f.handshakeAs(h.XDSAddr, other.clientCert, other.clientK); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client certificate from another CA: %v, want refused", err)
	}
	plain, err := harness.DialXDS(h.XDSAddr, "app-plain", target(ns, "echo", grpcPort.port))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := plain.Call(cctx); err == nil {
		t.Error("a plaintext xDS client resolved the service")
	}
	cancel()

	// Rotation: a new certificate on disk is used by new connections, with no restart.
	if got, err := f.handshake(h.XDSAddr, true); err != nil || got.Cmp(f.server.Serial) != 0 {
		t.Fatalf("before rotation: serial %v, %v; want %v", got, err, f.server.Serial)
	}
	next := f.issue(t, "holdfast-rotated")
	f.write(f.cert, next.CertPEM)
	f.write(f.key, next.KeyPEM)
	rotated := time.Now()
	for {
		got, err := f.handshake(h.XDSAddr, true)
		if err == nil && got.Cmp(next.Serial) == 0 {
			break
		}
		if time.Since(rotated) > timeout {
			t.Fatalf("the rotated certificate was never served; last: %v, %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("rotated certificate served %v after it was written", time.Since(rotated).Round(10*time.Millisecond))
	if got, err := f.handshake(h.AdminAddr, true); err != nil || got.Cmp(next.Serial) != 0 {
		t.Errorf("admin port after rotation: serial %v, %v; want %v", got, err, next.Serial)
	}
	// The application, its stream opened before the rotation, still routes; and a new one connects.
	if err := app.WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	app2, err := harness.DialXDSWith(bootstrap.Options{NodeID: "app-tls-2", Server: h.XDSAddr,
		CAFile: f.caFile, CertFile: f.clientCert, KeyFile: f.clientK}, target(ns, "echo", grpcPort.port))
	if err != nil {
		t.Fatal(err)
	}
	defer app2.Close()
	if err := app2.WaitForBackends(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if n, err := h.Metric(ctx, `holdfast_tls_reloads_total{result="ok",use="server"}`); err != nil || n < 1 {
		t.Errorf("holdfast_tls_reloads_total{result=ok} = %v, %v", n, err)
	}

	t.Run("the TLS alert rules use metrics Holdfast exports", func(t *testing.T) {
		checkRuleMetrics(ctx, t, h, "holdfast-tls", 2)
	})

	t.Run("holdfastctl over mTLS", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, env.bins.Holdfastctl, "--addr", h.AdminAddr, "--ca", f.caFile, "--cert", f.clientCert, "--key", f.clientK, "sources").CombinedOutput()
		if err != nil || !strings.Contains(string(out), ns) {
			t.Errorf("holdfastctl sources: %v\n%s", err, out)
		}
		out, err = exec.CommandContext(ctx, env.bins.Holdfastctl, "--addr", h.AdminAddr, "--ca", f.caFile, "sources").CombinedOutput()
		if err == nil {
			t.Errorf("holdfastctl without a client certificate was answered:\n%s", out)
		}
	})

	t.Run("holdfast-agent upstream over mTLS", func(t *testing.T) {
		a := startAgent(t, h.XDSAddr, "--node-id", "app-agent", "--kinds", "grpc", "--upstream-ca", f.caFile, "--upstream-cert", f.clientCert, "--upstream-key", f.clientK)
		ids := appRun(ctx, t, a.ListenAddr, target(ns, "echo", grpcPort.port))
		if len(ids) == 0 || ids[0] != "b1" {
			t.Errorf("an application behind the agent reached %v", ids)
		}
	})
}
