// Package tlsfiles serves and dials TLS with certificates read from files that are replaced on
// disk while the process runs (cert-manager, a Secret volume): every handshake uses the latest
// good files, without a restart. A replacement that does not load (a key that does not match its
// certificate mid-rotation, a truncated file) is logged and counted, and the previous material
// stays in use until a good one arrives.
package tlsfiles

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"

	"github.com/holdfast/holdfast/internal/promreg"
)

// Files names the PEM files. Cert and Key go together (this side's certificate); CA is the
// bundle the other side's certificate must chain to: client certificates for a server (mTLS
// when set), the server's certificate for a client (the system roots when empty).
type Files struct {
	Cert, Key, CA string
}

// Enabled says whether any file is set.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// CheckServer says what is wrong with f for a server (flag validation), without reading them.
func (f Files) CheckServer() error { return f.check(true) }

// CheckClient says what is wrong with f for a client.
func (f Files) CheckClient() error { return f.check(false) }

func (f Files) check(server bool) error {
	if (f.Cert == "") != (f.Key == "") {
		return errors.New("a certificate and its key go together: set both or neither")
	}
	if server && f.Cert == "" && f.CA != "" {
		return errors.New("a client CA needs the server's own certificate and key")
	}
	return nil
}

// material is one loaded set of files.
type material struct {
	cert     *tls.Certificate // nil: none
	pool     *x509.CertPool   // nil: none
	sum      [32]byte
	notAfter time.Time
}

// Reloader holds the current material and reloads it when the files change.
type Reloader struct {
	// set at construction, read-only
	files   Files
	server  bool
	log     *slog.Logger
	reloads *prometheus.CounterVec
	expiry  prometheus.Gauge

	cur atomic.Pointer[material]
}

// Options configure a Reloader.
type Options struct {
	// Component names the user in logs and metric labels ("xds", "upstream", ...).
	Component string
	Logger    *slog.Logger
	Registry  prometheus.Registerer
}

// NewServer loads the files for a TLS server. The first load must succeed.
func NewServer(f Files, o Options) (*Reloader, error) { return newReloader(f, true, o) }

// NewClient loads the files for a TLS client. The first load must succeed.
func NewClient(f Files, o Options) (*Reloader, error) { return newReloader(f, false, o) }

func newReloader(f Files, server bool, o Options) (*Reloader, error) {
	if err := f.check(server); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	labels := prometheus.Labels{"use": o.Component}
	r := &Reloader{
		files: f, server: server, log: o.Logger.With("component", "tls", "use", o.Component),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_tls_reloads_total", Help: "Changed certificate files loaded (result=ok) or refused, the previous ones kept (result=error).",
			ConstLabels: labels}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_tls_certificate_expiry_timestamp_seconds", Help: "Unix time when the certificate in use expires.", ConstLabels: labels}),
	}
	if err := promreg.Register(o.Registry, "tls "+o.Component, r.reloads, r.expiry); err != nil {
		return nil, err
	}
	m, err := load(f)
	if err != nil {
		return nil, err
	}
	r.set(m)
	return r, nil
}

func (r *Reloader) set(m *material) {
	r.cur.Store(m)
	if !m.notAfter.IsZero() {
		r.expiry.Set(float64(m.notAfter.Unix()))
	}
}

// contents are the files' bytes as read at one moment, and their checksum.
type contents struct {
	cert, key, ca []byte
	sum           [32]byte
}

// read reads the files once.
func read(f Files) (contents, error) {
	var c contents
	var all []byte
	for _, x := range []struct {
		path string
		into *[]byte
	}{{f.Cert, &c.cert}, {f.Key, &c.key}, {f.CA, &c.ca}} {
		if x.path == "" {
			continue
		}
		b, err := os.ReadFile(x.path) //nolint:gosec // the operator names these files (flags)
		if err != nil {
			return contents{}, err
		}
		*x.into = b
		all = append(append(all, b...), 0)
	}
	c.sum = sha256.Sum256(all)
	return c, nil
}

// load reads and parses the files.
func load(f Files) (*material, error) {
	c, err := read(f)
	if err != nil {
		return nil, err
	}
	return parse(f, c)
}

// parse turns what was read into the material handshakes use.
func parse(f Files, c contents) (*material, error) {
	m := &material{sum: c.sum}
	if f.Cert != "" {
		pair, err := tls.X509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("%s and %s: %w", f.Cert, f.Key, err)
		}
		m.cert, m.notAfter = &pair, pair.Leaf.NotAfter
	}
	if f.CA != "" {
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(c.ca) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", f.CA)
		}
	}
	return m, nil
}

// Run checks the files every interval until ctx is done, and loads them when they changed.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var refused [32]byte // the last content refused: reported once
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, err := read(r.files)
		if err != nil || c.sum == r.cur.Load().sum || c.sum == refused {
			continue // unchanged, refused already, or unreadable now (mid-replacement)
		}
		m, err := parse(r.files, c)
		if err != nil {
			refused = c.sum
			r.reloads.WithLabelValues("error").Inc()
			r.log.Error("new certificate files refused; still using the previous ones", "decision", "tls_reload_refused", "err", err)
			continue
		}
		r.set(m)
		r.reloads.WithLabelValues("ok").Inc()
		r.log.Info("certificate files reloaded", "decision", "tls_reloaded", "not_after", m.notAfter)
	}
}

// ServerConfig is a server's TLS configuration: each handshake takes the current certificate,
// and, with a CA, requires a client certificate that chains to the current CA.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := r.cur.Load()
			c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
			if m.cert != nil {
				c.Certificates = []tls.Certificate{*m.cert}
			}
			if m.pool != nil {
				c.ClientCAs, c.ClientAuth = m.pool, tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// ServerCredentials are gRPC server credentials over ServerConfig.
func (r *Reloader) ServerCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(r.ServerConfig())
}

// ClientCredentials are gRPC client credentials that take the current files at each
// handshake: the server's certificate must chain to the current CA (the system roots without
// one) and name serverName (empty: the host dialled); the client presents its current
// certificate, if any.
func (r *Reloader) ClientCredentials(serverName string) credentials.TransportCredentials {
	return &clientCreds{r: r, info: credentials.NewTLS(&tls.Config{}).Info(), serverName: serverName}
}

type clientCreds struct {
	r          *Reloader
	info       credentials.ProtocolInfo
	serverName string
}

func (c *clientCreds) current() credentials.TransportCredentials {
	m := c.r.cur.Load()
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.pool}
	if m.cert != nil {
		cfg.Certificates = []tls.Certificate{*m.cert}
	}
	return credentials.NewTLS(cfg)
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.serverName != "" {
		authority = c.serverName // grpc's TLS credentials check the authority's host
	}
	return c.current().ClientHandshake(ctx, authority, conn)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsfiles: client credentials used by a server")
}

func (c *clientCreds) Info() credentials.ProtocolInfo { return c.info }

func (c *clientCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName sets the name the server's certificate must carry (grpc's interface).
func (c *clientCreds) OverrideServerName(name string) error { //nolint:staticcheck // part of credentials.TransportCredentials
	c.serverName = name
	return nil
}
