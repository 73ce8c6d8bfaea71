// Package faultproxy is a TLS reverse proxy for the Kubernetes API that tests put between
// Holdfast and the API server, and switch at run time between passing traffic through and
// failing it in the ways real networks and servers do: stalling, corrupting watch streams,
// answering 500 or 429, and resetting streams.
package faultproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Mode is what the proxy does to traffic.
type Mode string

const (
	// Pass forwards everything.
	Pass Mode = "pass"
	// Stall holds every request and every open stream: nothing is forwarded either way.
	Stall Mode = "stall"
	// StallWatches holds every watch stream, open or new, and passes everything else: the API
	// server looks healthy to probes and HTTP/2 pings, but no watch event arrives.
	StallWatches Mode = "stall-watches"
	// Corrupt answers new requests with truncated JSON and injects garbage into open streams.
	Corrupt Mode = "corrupt"
	// Fail500 answers new requests with 500 and ends open streams.
	Fail500 Mode = "fail-500"
	// Fail429 answers new requests with 429 (Retry-After: 1) and ends open streams.
	Fail429 Mode = "fail-429"
	// Reset resets new requests and open streams.
	Reset Mode = "reset"
)

// Proxy is a running fault proxy.
type Proxy struct {
	// set by Start, read-only
	URL    string // https://127.0.0.1:<port>
	CAFile string // PEM of the proxy's certificate, for clients to trust
	srv    *http.Server

	// guarded by mu
	mu      sync.Mutex
	mode    Mode
	changed chan struct{} // closed and replaced on every mode change
}

// Start runs a proxy to upstream (an https URL whose certificate upstreamCA signs), writing its
// own certificate under dir.
func Start(upstream, upstreamCA, dir string) (*Proxy, error) {
	target, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(upstreamCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("faultproxy: no certificate in " + upstreamCA)
	}
	cert, certPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	p := &Proxy{mode: Pass, changed: make(chan struct{}), CAFile: filepath.Join(dir, "faultproxy-ca.crt")}
	if err := os.WriteFile(p.CAFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	rp.FlushInterval = -1 // stream watch events as they come
	rp.ModifyResponse = func(r *http.Response) error {
		q := r.Request.URL.Query().Get("watch")
		r.Body = &faultBody{ReadCloser: r.Body, p: p, ctx: r.Request.Context(), watch: q == "true" || q == "1"}
		return nil
	}
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		if errors.Is(err, errReset) {
			panic(http.ErrAbortHandler) // resets the stream
		}
		w.WriteHeader(http.StatusBadGateway)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.URL = "https://" + l.Addr().String()
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serve(rp, w, r) }),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = p.srv.ServeTLS(l, "", "") }()
	return p, nil
}

// SetMode switches what the proxy does, for new requests and open streams alike.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) current() (Mode, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.changed
}

// Close stops the proxy and every stream through it.
func (p *Proxy) Close() error {
	p.SetMode(Pass) // release anything stalled
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		return p.srv.Close()
	}
	return nil
}

func (p *Proxy) serve(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) {
	for {
		mode, changed := p.current()
		switch mode {
		case Pass, StallWatches:
			rp.ServeHTTP(w, r)
			return
		case Stall:
			select {
			case <-changed:
				continue
			case <-r.Context().Done():
				return
			}
		case Corrupt:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":`)
			return
		case Fail500:
			http.Error(w, `{"kind":"Status","status":"Failure","code":500}`, http.StatusInternalServerError)
			return
		case Fail429:
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"kind":"Status","status":"Failure","code":429}`, http.StatusTooManyRequests)
			return
		case Reset:
			panic(http.ErrAbortHandler)
		}
	}
}

var errReset = errors.New("faultproxy: reset")

// faultBody applies the mode to a response already streaming, such as a watch. Data read from
// upstream is checked against the mode after the read returns too: a read that began while
// passing may return after the mode changed, and must not leak through a fault.
type faultBody struct {
	io.ReadCloser
	p     *Proxy
	ctx   context.Context
	watch bool

	// owned by the reader
	pending    []byte
	pendingErr error
	corrupted  bool
}

func (b *faultBody) Read(buf []byte) (int, error) {
	for {
		mode, changed := b.p.current()
		if mode == StallWatches {
			mode = Pass
			if b.watch {
				mode = Stall
			}
		}
		switch mode {
		case Pass:
			if len(b.pending) == 0 && b.pendingErr == nil {
				tmp := make([]byte, len(buf))
				n, err := b.ReadCloser.Read(tmp)
				b.pending, b.pendingErr = tmp[:n], err
				continue // check the mode again before handing anything on
			}
			n := copy(buf, b.pending)
			b.pending = b.pending[n:]
			if len(b.pending) > 0 {
				return n, nil
			}
			err := b.pendingErr
			b.pendingErr = nil
			return n, err
		case Stall:
			select {
			case <-changed:
				continue
			case <-b.ctx.Done():
				return 0, b.ctx.Err()
			}
		case Corrupt:
			b.pending, b.pendingErr = nil, nil
			if !b.corrupted {
				b.corrupted = true
				return copy(buf, "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Endpoint\x00\xff garbage"), nil
			}
			return 0, io.ErrUnexpectedEOF
		case Fail500, Fail429:
			return 0, io.EOF
		default: // Reset
			return 0, errReset
		}
	}
}

// selfSigned makes a certificate for 127.0.0.1.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "holdfast-faultproxy"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM, nil
}
