package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/holdfast/holdfast/internal/testkit"
	"github.com/holdfast/holdfast/internal/testpki"
)

// pki is a CA and the files of a server certificate it issued, in a temporary directory.
type pki struct {
	t          *testing.T
	ca         *testpki.CA
	dir        string
	cert, key  string
	caFile     string
	serverLeaf testpki.Leaf
	otherCA    *testpki.CA
	clientLeaf testpki.Leaf // from ca
	stranger   testpki.Leaf // from otherCA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{t: t, dir: t.TempDir()}
	var err error
	if p.ca, err = testpki.NewCA("holdfast test CA"); err != nil {
		t.Fatal(err)
	}
	if p.otherCA, err = testpki.NewCA("someone else"); err != nil {
		t.Fatal(err)
	}
	p.cert, p.key, p.caFile = filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key"), filepath.Join(p.dir, "ca.crt")
	p.serverLeaf = p.issue(p.ca, "server")
	p.write(p.serverLeaf)
	p.writeFile(p.caFile, p.ca.PEM())
	p.clientLeaf = p.issue(p.ca, "client")
	p.stranger = p.issue(p.otherCA, "stranger")
	return p
}

func (p *pki) issue(ca *testpki.CA, cn string) testpki.Leaf {
	p.t.Helper()
	l, err := ca.Issue(cn, "127.0.0.1", "localhost")
	if err != nil {
		p.t.Fatal(err)
	}
	return l
}

// writeFile replaces a file the way a Secret volume does: a new file renamed into place.
func (p *pki) writeFile(path string, b []byte) {
	p.t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pki) write(l testpki.Leaf) {
	p.writeFile(p.cert, l.CertPEM)
	p.writeFile(p.key, l.KeyPEM)
}

// serve runs a TLS listener with r's server configuration that completes handshakes.
func serve(t *testing.T, r *Reloader) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", r.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	return lis.Addr().String()
}

// servedSerial dials addr trusting p's CA, presenting cert (nil: none), and returns the serial
// number of the server's certificate.
func (p *pki) servedSerial(addr string, cert *testpki.Leaf) (*big.Int, error) {
	cfg := &tls.Config{RootCAs: poolOf(p.t, p.ca.PEM()), ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		c, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// TLS 1.3 reports a refused client certificate on the first read.
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil && !isEOF(err) {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func isEOF(err error) bool { return err != nil && strings.Contains(err.Error(), "EOF") }

func poolOf(t *testing.T, pemBytes []byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in the CA's PEM")
	}
	return pool
}

func TestServerReloadsRotatedCertificate(t *testing.T) {
	p := newPKI(t)
	reg := prometheus.NewRegistry()
	r, err := NewServer(Files{Cert: p.cert, Key: p.key}, Options{Component: "xds", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, 10*time.Millisecond)
	addr := serve(t, r)
	if got, err := p.servedSerial(addr, nil); err != nil || got.Cmp(p.serverLeaf.Serial) != 0 {
		t.Fatalf("before rotation: serial %v, %v; want %v", got, err, p.serverLeaf.Serial)
	}

	// A certificate whose key does not match (a rotation caught half-way) is refused and
	// counted; the previous one stays in use.
	next := p.issue(p.ca, "server-2")
	p.writeFile(p.cert, next.CertPEM)
	testkit.Eventually(t, "the mismatched pair counted as refused", func() bool {
		return testutil.ToFloat64(r.reloads.WithLabelValues("error")) == 1
	})
	if got, err := p.servedSerial(addr, nil); err != nil || got.Cmp(p.serverLeaf.Serial) != 0 {
		t.Fatalf("half-way: serial %v, %v; want the old %v", got, err, p.serverLeaf.Serial)
	}

	// The key arrives: new connections get the new certificate, no restart.
	p.writeFile(p.key, next.KeyPEM)
	testkit.Eventually(t, "new connections get the rotated certificate", func() bool {
		got, err := p.servedSerial(addr, nil)
		return err == nil && got.Cmp(next.Serial) == 0
	})
	if n := testutil.ToFloat64(r.reloads.WithLabelValues("ok")); n != 1 {
		t.Errorf("reloads ok = %v, want 1", n)
	}
	if testutil.ToFloat64(r.expiry) < float64(time.Now().Unix()) {
		t.Error("expiry gauge not set")
	}
}

func TestServerRequiresClientCertificateWithCA(t *testing.T) {
	p := newPKI(t)
	r, err := NewServer(Files{Cert: p.cert, Key: p.key, CA: p.caFile}, Options{Component: "xds"})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	for _, tt := range []struct {
		name   string
		client *testpki.Leaf
		ok     bool
	}{
		{"a certificate from the CA", &p.clientLeaf, true},
		{"no certificate", nil, false},
		{"a certificate from another CA", &p.stranger, false},
	} {
		_, err := p.servedSerial(addr, tt.client)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok = %v", tt.name, err, tt.ok)
		}
	}
}

// gRPC client credentials check the server against the current CA, and follow a CA rotation.
func TestClientCredentialsFollowCA(t *testing.T) {
	p := newPKI(t)
	srv, err := NewServer(Files{Cert: p.cert, Key: p.key}, Options{Component: "xds"})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(srv.ServerCredentials()))
	healthpb.RegisterHealthServer(g, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()

	// The client trusts another CA first: refused.
	caFile := filepath.Join(p.dir, "client-ca.crt")
	p.writeFile(caFile, p.otherCA.PEM())
	cli, err := NewClient(Files{CA: caFile}, Options{Component: "upstream"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go cli.Run(ctx, 10*time.Millisecond)
	check := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(cli.ClientCredentials("")); err == nil {
		t.Fatal("a server from an untrusted CA was accepted")
	}
	// The right CA is written: accepted.
	p.writeFile(caFile, p.ca.PEM())
	testkit.Eventually(t, "the client trusts the new CA", func() bool { return check(cli.ClientCredentials("")) == nil })
	// A name the certificate does not carry is refused.
	if err := check(cli.ClientCredentials("holdfast.example")); err == nil {
		t.Error("a server certificate for another name was accepted")
	}
}

func TestFilesChecked(t *testing.T) {
	p := newPKI(t)
	for _, tt := range []struct {
		name   string
		files  Files
		server bool
		want   string
	}{
		{"cert without key", Files{Cert: p.cert}, true, "set both"},
		{"client CA without a server certificate", Files{CA: p.caFile}, true, "client CA needs"},
		{"missing file", Files{Cert: p.cert, Key: filepath.Join(p.dir, "nope")}, true, "no such file"},
		{"not PEM", Files{CA: p.key}, false, "no PEM certificate"},
		{"key for another certificate", Files{Cert: p.cert, Key: p.cert}, true, "tls.crt"},
	} {
		_, err := newReloader(tt.files, tt.server, Options{Component: tt.name})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}
