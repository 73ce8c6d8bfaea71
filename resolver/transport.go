package resolver

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
)

// ErrTransportNotTuned is returned by TuneTransport for configs whose credentials need
// client-go's own transport (exec and auth-provider plugins).
var ErrTransportNotTuned = errors.New("kubeconfig uses a credential plugin; HTTP/2 health checks left at client-go's defaults")

// TuneTransport returns a copy of cfg whose connections to the API server are health-checked:
// an HTTP/2 connection that reads nothing for readIdle is pinged, and closed when the ping is not
// answered within pingTimeout. A stopped API server then breaks open watches within
// readIdle+pingTimeout instead of client-go's default 30s+15s, and without users having to set
// HTTP2_READ_IDLE_TIMEOUT_SECONDS.
func TuneTransport(cfg *rest.Config, readIdle, pingTimeout time.Duration) (*rest.Config, error) {
	if cfg.ExecProvider != nil || cfg.AuthProvider != nil {
		return cfg, ErrTransportNotTuned
	}
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("api server TLS config: %w", err)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	if cfg.Proxy != nil {
		t.Proxy = cfg.Proxy
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	t.Protocols.SetHTTP2(true)
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: readIdle, PingTimeout: pingTimeout}
	out := rest.CopyConfig(cfg)
	out.Transport = t
	// The transport carries the TLS settings now; client-go refuses both.
	out.TLSClientConfig = rest.TLSClientConfig{}
	out.Proxy = nil
	return out, nil
}
