// Command holdfast-agent runs next to Envoy or gRPC applications (a sidecar, or one per node)
// and serves them Holdfast's xDS from a local cache: from memory while Holdfast is unreachable,
// and from disk after the agent itself restarted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/holdfast/holdfast/internal/agent"
	"github.com/holdfast/holdfast/internal/health"
	"github.com/holdfast/holdfast/internal/tlsfiles"
	"github.com/holdfast/holdfast/internal/version"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve"
)

type config struct {
	upstream, listen, httpListen  string
	nodeID, zone, region, kinds   string
	clusterID                     string
	cacheDir                      string
	maxResources                  int
	maxCacheBytes                 int64
	maxCacheAge, settle, shutdown time.Duration
	logFormat, logLevel           string
	upstreamTLS                   tlsfiles.Files
	upstreamServerName            string
	upstreamPlaintext             bool
}

func main() { os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr)) }

func realMain(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "--version" || a == "-version" {
			fmt.Fprintln(stdout, "holdfast-agent", version.String())
			return 0
		}
	}
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "holdfast-agent: %v\n", err)
		return 2
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(cfg.logLevel))) // validated by parse
	var h slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if cfg.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(h)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("holdfast-agent stopped", "err", err)
		return 1
	}
	log.Info("holdfast-agent stopped cleanly")
	return 0
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("holdfast-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Bool("version", false, "print the version and exit")
	fs.StringVar(&c.upstream, "upstream", "", "Holdfast's xDS address, host:port (required)")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:18010", "where local clients connect: host:port or unix:///path")
	fs.StringVar(&c.httpListen, "http-listen", "127.0.0.1:18090", "host:port for /healthz, /readyz and /metrics")
	fs.StringVar(&c.nodeID, "node-id", "", "node ID presented upstream: the local application's (required)")
	fs.StringVar(&c.zone, "zone", "", "the local application's zone, presented upstream")
	fs.StringVar(&c.region, "region", "", "the local application's region, presented upstream")
	fs.StringVar(&c.clusterID, "cluster-id", "", "the local application's Kubernetes cluster ID, presented upstream (cluster-set services order endpoints by it)")
	fs.StringVar(&c.kinds, "kinds", "grpc,envoy", "client kinds served locally: grpc, envoy, or both")
	fs.StringVar(&c.cacheDir, "cache-dir", "", "directory of the disk cache (none: memory only, nothing survives an agent restart)")
	fs.IntVar(&c.maxResources, "max-resources", 100000, "most resources cached; bigger upstream states are refused and the previous kept")
	fs.Int64Var(&c.maxCacheBytes, "max-cache-bytes", 256<<20, "most resource bytes cached")
	fs.DurationVar(&c.maxCacheAge, "max-cache-age", 24*time.Hour, "a disk cache older than this is still served, and reported loudly")
	fs.DurationVar(&c.settle, "settle-timeout", 5*time.Second, "how long an upstream response waits for local clients' ACK or NACK before it is acknowledged")
	fs.DurationVar(&c.shutdown, "shutdown-grace", 5*time.Second, "on SIGTERM, time for local streams to close")
	fs.StringVar(&c.upstreamTLS.CA, "upstream-ca", "", "PEM CA bundle Holdfast's certificate must chain to (TLS upstream); reloaded when the file changes")
	fs.StringVar(&c.upstreamTLS.Cert, "upstream-cert", "", "PEM client certificate presented to Holdfast (mTLS, with --upstream-key); reloaded when the file changes")
	fs.StringVar(&c.upstreamTLS.Key, "upstream-key", "", "PEM private key of --upstream-cert")
	fs.StringVar(&c.upstreamServerName, "upstream-server-name", "", "name Holdfast's certificate must carry (default: the --upstream host)")
	fs.BoolVar(&c.upstreamPlaintext, "upstream-plaintext", false, "speak to Holdfast without TLS (its --tls-cert unset); TLS with the system roots otherwise, when no --upstream-ca")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if _, _, err := net.SplitHostPort(c.upstream); err != nil {
		errs = append(errs, fmt.Errorf("--upstream %q: want host:port", c.upstream))
	}
	if c.nodeID == "" {
		errs = append(errs, errors.New("--node-id is required"))
	}
	if _, err := kinds(c.kinds); err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(c.listen, "unix://") {
		if _, _, err := net.SplitHostPort(c.listen); err != nil {
			errs = append(errs, fmt.Errorf("--listen %q: want host:port or unix:///path", c.listen))
		}
	}
	if _, _, err := net.SplitHostPort(c.httpListen); err != nil {
		errs = append(errs, fmt.Errorf("--http-listen %q: want host:port", c.httpListen))
	}
	if err := c.upstreamTLS.CheckClient(); err != nil {
		errs = append(errs, fmt.Errorf("--upstream-cert/--upstream-key: %w", err))
	}
	if c.upstreamPlaintext && (c.upstreamTLS.Enabled() || c.upstreamServerName != "") {
		errs = append(errs, errors.New("--upstream-plaintext excludes --upstream-ca, --upstream-cert, --upstream-key and --upstream-server-name"))
	}
	if c.maxResources <= 0 || c.maxCacheBytes <= 0 || c.maxCacheAge <= 0 || c.settle <= 0 {
		errs = append(errs, errors.New("--max-resources, --max-cache-bytes, --max-cache-age and --settle-timeout must be positive"))
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(c.logLevel))); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel))
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.logFormat))
	}
	return c, errors.Join(errs...)
}

func kinds(s string) ([]resource.Kind, error) {
	var out []resource.Kind
	for _, k := range strings.Split(s, ",") {
		switch resource.Kind(strings.TrimSpace(k)) {
		case resource.KindGRPC:
			out = append(out, resource.KindGRPC)
		case resource.KindEnvoy:
			out = append(out, resource.KindEnvoy)
		default:
			return nil, fmt.Errorf("--kinds %q: want grpc, envoy or grpc,envoy", s)
		}
	}
	return out, nil
}

func listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, err
		}
		_ = os.Remove(path) // a socket left by a killed agent
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, err
		}
		// Any local user may connect (connecting needs write permission); who can reach the
		// socket is decided by the directory it is in.
		if err := os.Chmod(path, 0o666); err != nil { //nolint:gosec // see above
			_ = l.Close()
			return nil, err
		}
		return l, nil
	}
	return net.Listen("tcp", addr)
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	ks, _ := kinds(cfg.kinds) // validated by parse
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return err
	}
	srv, err := serve.NewServer(serve.ServerOptions{Logger: log, Registry: reg, Kinds: ks})
	if err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	var tlsReload *tlsfiles.Reloader
	if !cfg.upstreamPlaintext {
		if tlsReload, err = tlsfiles.NewClient(cfg.upstreamTLS, tlsfiles.Options{Component: "upstream", Logger: log, Registry: reg}); err != nil {
			return fmt.Errorf("--upstream-ca/--upstream-cert/--upstream-key: %w", err)
		}
		creds = tlsReload.ClientCredentials(cfg.upstreamServerName)
	}
	a, err := agent.New(agent.Options{
		Upstream: cfg.upstream, NodeID: cfg.nodeID, Zone: cfg.zone, Region: cfg.region, ClusterID: cfg.clusterID, Kinds: ks,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(creds),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second})},
		CacheDir: cfg.cacheDir, MaxResources: cfg.maxResources, MaxCacheBytes: cfg.maxCacheBytes, MaxCacheAge: cfg.maxCacheAge,
		SettleTimeout: cfg.settle, Downstream: srv, Logger: log, Registry: reg,
	})
	if err != nil {
		return err
	}
	// A bad cache is reported by LoadCache and ignored: the agent then waits for upstream.
	_ = a.LoadCache()
	xdsLis, err := listen(cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.httpListen)
	if err != nil {
		_ = xdsLis.Close()
		return fmt.Errorf("--http-listen: %w", err)
	}
	handler := health.Handler(reg, func() (bool, any) { st := a.Status(); return st.Ready, st })
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	log.Info("holdfast-agent starting", "version", version.String(), "upstream", cfg.upstream, "listen", xdsLis.Addr().String(), "http", httpLis.Addr().String(),
		"node", cfg.nodeID, "kinds", cfg.kinds, "cache_dir", cfg.cacheDir, "upstream_tls", !cfg.upstreamPlaintext, "upstream_mtls", cfg.upstreamTLS.Cert != "")

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	if tlsReload != nil {
		g.Go(func() error { tlsReload.Run(gctx, time.Second); return nil })
	}
	g.Go(func() error { return srv.GRPC.Serve(xdsLis) })
	g.Go(func() error {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
		defer cancel()
		srv.Stop(sctx)
		return httpSrv.Shutdown(sctx)
	})
	return g.Wait()
}
