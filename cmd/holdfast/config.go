package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/tlsfiles"
	"github.com/holdfast/holdfast/resolver"
)

// Config is everything the control plane is started with. It is validated once, in parseConfig.
type Config struct {
	Kubeconfig         string
	XDSListen          string
	HTTPListen         string
	AdminListen        string
	StatusListen       string
	Namespaces         []string
	ClusterDomain      string
	EnvoyListenAddress string
	LogFormat          string
	LogLevel           string
	ShutdownGrace      time.Duration
	ProbeInterval      time.Duration
	ProbeTimeout       time.Duration
	WatchIdleTimeout   time.Duration
	ReadyWhenStale     bool
	MaxEndpoints       int
	StateDir           string
	Guard              cache.GuardOptions
	StuckAfter         time.Duration
	Limits             cache.Limits
	MaxClients         int
	MaxUnknownNames    int
	AckTimeout         time.Duration
	Debounce           time.Duration
	DebounceMax        time.Duration
	WatchNodes         bool
	LocalityDefault    string
	TLS                tlsfiles.Files
	DebugPprof         bool

	// Several clusters (the MCS API's cluster set): ClusterID names the cluster Holdfast runs
	// in and turns cluster sets on; Remotes and ClustersDir name the others' kubeconfigs.
	ClusterID          string
	Remotes            map[string]string // cluster ID → kubeconfig path
	ClustersDir        string
	ClustersRescan     time.Duration
	ClusterSyncTimeout time.Duration
}

// parseConfig parses and validates the control plane's flags. Errors are for the user: they
// name the flag and what it accepts.
func parseConfig(args []string, stderr io.Writer) (Config, error) {
	var c Config
	var namespaces string
	fs := flag.NewFlagSet("holdfast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "path to a kubeconfig; if empty, the in-cluster config is used, else $KUBECONFIG")
	fs.StringVar(&c.XDSListen, "xds-listen", ":18000", "host:port for the xDS (ADS, state-of-the-world and Delta) gRPC server")
	fs.StringVar(&c.HTTPListen, "http-listen", ":18080", "host:port for /healthz, /readyz and /metrics")
	fs.StringVar(&c.AdminListen, "admin-listen", "127.0.0.1:18001", "host:port for the admin gRPC API and CSDS (holdfastctl, grpcurl); loopback by default: it can release guard holds")
	fs.StringVar(&c.StatusListen, "status-listen", "127.0.0.1:18002", "host:port for the read-only status page (HTML: sources, holds, services, clients, why); loopback by default; \"\" turns it off")
	fs.StringVar(&namespaces, "namespaces", "", "comma-separated namespaces to watch; empty watches all namespaces")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain; resources are named <svc>.<ns>.svc.<domain>:<port>")
	fs.StringVar(&c.EnvoyListenAddress, "envoy-listen-address", "127.0.0.1", "IP address Envoy's outbound_<port> listeners bind to")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 5*time.Second, "on SIGTERM, how long open xDS streams get to close before they are cut")
	fs.DurationVar(&c.ProbeInterval, "probe-interval", 5*time.Second, "how often to check the API server with a quorum read; also how long an HTTP/2 connection to it may read nothing before it is pinged")
	fs.DurationVar(&c.ProbeTimeout, "probe-timeout", 3*time.Second, "a probe (or an HTTP/2 ping) not answered within this marks the source stale (or closes the connection)")
	fs.DurationVar(&c.WatchIdleTimeout, "watch-idle-timeout", 3*time.Minute, "a watch that delivers no event and no bookmark for this long is stale and is restarted with a fresh list")
	fs.StringVar(&c.StateDir, "state-dir", "", "directory for the last-known-good state file; Holdfast serves it at start, before it reaches the API server. Empty: keep state in memory only")
	fs.BoolVar(&c.Guard.Disabled, "guard-disabled", false, "turn the mass-withdrawal guard off: every change reaches clients at once")
	fs.Float64Var(&c.Guard.MaxWithdrawFraction, "guard-max-withdraw-fraction", 0.5, "hold a change that withdraws more than this fraction of all usable endpoints within --guard-window")
	fs.IntVar(&c.Guard.MinFleetEndpoints, "guard-min-fleet-endpoints", 100, "the fraction rule applies only to fleets of at least this many usable endpoints")
	fs.IntVar(&c.Guard.MinWithdrawnEndpoints, "guard-min-withdrawn-endpoints", 20, "the fraction rule applies only to changes withdrawing at least this many endpoints")
	fs.DurationVar(&c.Guard.Window, "guard-window", time.Minute, "withdrawals are added up over this window")
	fs.IntVar(&c.Guard.MinServiceEndpoints, "guard-min-service-endpoints", 10, "hold a service with at least this many endpoints dropping to zero right after its source was stale or restarted")
	fs.DurationVar(&c.Guard.RecentUnhealthy, "guard-recent-unhealthy", 5*time.Minute, "how long after a stale or restarted source its withdrawals count as suspicious")
	fs.DurationVar(&c.Guard.HoldPeriod, "guard-hold-period", 2*time.Minute, "a held change that stays true this long with healthy sources is applied")
	fs.DurationVar(&c.StuckAfter, "stuck-after", 30*time.Second, "not ready when a change has waited this long to be published, or the state file has lagged this long behind")
	fs.DurationVar(&c.AckTimeout, "xds-ack-timeout", 30*time.Second, "an xDS client that leaves a response unacknowledged this long cannot keep up: its stream is closed and counted (it reconnects and gets the current state)")
	fs.DurationVar(&c.Debounce, "debounce", 10*time.Millisecond, "coalesce Kubernetes events: publish this long after the latest one...")
	fs.DurationVar(&c.DebounceMax, "debounce-max", 100*time.Millisecond, "...but never later than this after the first one")
	fs.IntVar(&c.Limits.MaxServices, "max-services", 20000, "serve at most this many services; new ones over it are refused, served ones are never evicted")
	fs.IntVar(&c.Limits.MaxEndpoints, "max-endpoints", 500000, "serve at most this many endpoints in all; new services or growth over it are refused")
	fs.IntVar(&c.MaxClients, "max-clients", 10000, "serve at most this many ADS streams; new ones over it are refused with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.MaxUnknownNames, "xds-max-unknown-names", 10000, "per ADS stream, the most names subscribed to that Holdfast has no resource of; more are refused, counted and shown in holdfastctl client (no real client comes near)")
	fs.DurationVar(&c.Limits.TombstoneGrace, "tombstone-grace", 30*time.Second, "a deleted service is served as it last was, endpoints included, this long, so that delete and re-create does not flap clients")
	fs.IntVar(&c.MaxEndpoints, "max-endpoints-per-service", 20000, "a service with more endpoints than this (all ports) is rejected whole and keeps its last good state")
	fs.BoolVar(&c.WatchNodes, "watch-nodes", true, "watch Nodes' metadata for their topology labels: an endpoint's region, and its zone when its EndpointSlice has none (needs list/watch on nodes)")
	fs.StringVar(&c.LocalityDefault, "locality-default", resolver.LocalityRegion, "how endpoints are ordered for each client when a service does not say (annotation "+resolver.LocalityAnnotation+" or trafficDistribution): region (own zone, then own region, then the rest), zone (own zone, then the rest) or off (one priority)")
	fs.StringVar(&c.TLS.Cert, "tls-cert", "", "PEM certificate for the xDS and admin servers (with --tls-key); reloaded when the file changes. Empty: plaintext")
	fs.StringVar(&c.TLS.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLS.CA, "client-ca", "", "PEM CA bundle: with it, xDS and admin clients must present a certificate it signed (mTLS); reloaded when the file changes")
	fs.BoolVar(&c.DebugPprof, "debug-pprof", false, "serve Go's profiles at /debug/pprof/ on --http-listen (for chasing memory or CPU; off: they show internals)")
	fs.Bool("version", false, "print the version and exit")
	fs.BoolVar(&c.ReadyWhenStale, "ready-when-stale", true, "stay ready while a source is stale: Holdfast still serves the last known routes, which beat none")
	fs.StringVar(&c.ClusterID, "cluster-id", "", "the ID of the cluster Holdfast runs in (a DNS label); turns on cluster sets (MCS API): exported services are also served as <svc>.<ns>.svc."+resolver.ClusterSetDomain+" with every exporting cluster's endpoints")
	fs.Func("remote-cluster", "ID=KUBECONFIG: another cluster of the cluster set and the kubeconfig that reaches it (repeatable; needs --cluster-id)", func(v string) error {
		id, path, ok := strings.Cut(v, "=")
		if !ok || id == "" || path == "" {
			return errors.New("want ID=KUBECONFIG")
		}
		if c.Remotes == nil {
			c.Remotes = map[string]string{}
		}
		if _, dup := c.Remotes[id]; dup {
			return fmt.Errorf("cluster %q given twice", id)
		}
		c.Remotes[id] = path
		return nil
	})
	fs.StringVar(&c.ClustersDir, "clusters-dir", "", "a directory of kubeconfig files, one per other cluster, named by its ID (a .yaml, .yml or .kubeconfig extension is dropped; e.g. Secrets mounted there); re-read every --clusters-rescan, so clusters can be added and removed at run time (needs --cluster-id)")
	fs.DurationVar(&c.ClustersRescan, "clusters-rescan", 10*time.Second, "how often --clusters-dir is read again")
	fs.DurationVar(&c.ClusterSyncTimeout, "cluster-sync-timeout", 30*time.Second, "how long Holdfast waits for another cluster's first sync before serving (and being ready) without it")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: holdfast [flags]\n       holdfast bootstrap --grpc|--envoy --node-id ID --server HOST:PORT [--zone Z --region R]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, ns := range strings.Split(namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			c.Namespaces = append(c.Namespaces, ns)
		}
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	for _, a := range []struct{ flag, v string }{{"--xds-listen", c.XDSListen}, {"--http-listen", c.HTTPListen}, {"--admin-listen", c.AdminListen}, {"--status-listen", c.StatusListen}} {
		if a.flag == "--status-listen" && a.v == "" {
			continue // off
		}
		if err := checkListen(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.flag, a.v, err))
		}
	}
	for _, ns := range c.Namespaces {
		if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--namespaces: %q is not a namespace name: %s", ns, strings.Join(msgs, "; ")))
		}
	}
	if msgs := validation.IsDNS1123Subdomain(c.ClusterDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster-domain %q: %s", c.ClusterDomain, strings.Join(msgs, "; ")))
	}
	errs = append(errs, c.validateClusters()...)
	if _, err := netip.ParseAddr(c.EnvoyListenAddress); err != nil {
		errs = append(errs, fmt.Errorf("--envoy-listen-address %q: want an IP address", c.EnvoyListenAddress))
	}
	if c.TLS.Enabled() {
		if err := c.TLS.CheckServer(); err != nil {
			errs = append(errs, fmt.Errorf("--tls-cert/--tls-key/--client-ca: %w", err))
		}
	}
	switch c.LocalityDefault {
	case resolver.LocalityOff, resolver.LocalityZone, resolver.LocalityRegion:
	default:
		errs = append(errs, fmt.Errorf("--locality-default %q: want region, zone or off", c.LocalityDefault))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.ProbeInterval < time.Second || c.ProbeTimeout < 100*time.Millisecond || c.ProbeTimeout >= c.ProbeInterval {
		errs = append(errs, fmt.Errorf("--probe-interval %v / --probe-timeout %v: want an interval of at least 1s and a timeout of at least 100ms, shorter than the interval", c.ProbeInterval, c.ProbeTimeout))
	}
	if c.WatchIdleTimeout < 90*time.Second {
		errs = append(errs, fmt.Errorf("--watch-idle-timeout %v: want at least 90s (an idle watch gets a bookmark about once a minute)", c.WatchIdleTimeout))
	}
	g := c.Guard
	if g.MaxWithdrawFraction <= 0 || g.MaxWithdrawFraction >= 1 {
		errs = append(errs, fmt.Errorf("--guard-max-withdraw-fraction %v: want a fraction between 0 and 1", g.MaxWithdrawFraction))
	}
	if g.MinFleetEndpoints < 1 || g.MinWithdrawnEndpoints < 1 || g.MinServiceEndpoints < 1 {
		errs = append(errs, errors.New("--guard-min-fleet-endpoints, --guard-min-withdrawn-endpoints and --guard-min-service-endpoints must be at least 1"))
	}
	if g.Window <= 0 || g.RecentUnhealthy <= 0 || g.HoldPeriod <= 0 {
		errs = append(errs, errors.New("--guard-window, --guard-recent-unhealthy and --guard-hold-period must be positive"))
	}
	if c.StuckAfter < time.Second {
		errs = append(errs, fmt.Errorf("--stuck-after %v: want at least 1s", c.StuckAfter))
	}
	if c.Limits.MaxServices < 1 || c.Limits.MaxEndpoints < 1 || c.MaxClients < 1 || c.MaxUnknownNames < 1 {
		errs = append(errs, errors.New("--max-services, --max-endpoints, --max-clients and --xds-max-unknown-names must be at least 1"))
	}
	if c.Limits.TombstoneGrace < time.Second {
		errs = append(errs, fmt.Errorf("--tombstone-grace %v: want at least 1s (a deleted service is withdrawn when it ends; without one, a delete and re-create flaps every client)", c.Limits.TombstoneGrace))
	}
	if c.MaxEndpoints < 1 {
		errs = append(errs, fmt.Errorf("--max-endpoints-per-service %d: must be at least 1", c.MaxEndpoints))
	}
	if c.AckTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--xds-ack-timeout %v: want at least 1s", c.AckTimeout))
	}
	if c.Debounce <= 0 || c.DebounceMax < c.Debounce || c.DebounceMax > time.Minute {
		errs = append(errs, fmt.Errorf("--debounce %v / --debounce-max %v: want a positive hold-off and a maximum no shorter than it, at most 1m", c.Debounce, c.DebounceMax))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-grace %v: must not be negative", c.ShutdownGrace))
	}
	return errors.Join(errs...)
}

// checkListen accepts "host:port" where host is empty (every address), an IP address or
// localhost, and port a number from 0 to 65535. Names are refused rather than looked up: a
// listen address is configuration, and a DNS answer at start is not.
func checkListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q: want a number from 0 to 65535", port)
	}
	if host == "" || host == "localhost" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("host %q: want an IP address, localhost or nothing (every address); names are not looked up", host)
	}
	return nil
}

// checkEnvironment checks what the configuration names on this machine before anything
// starts: a state directory that exists as a directory (or can be created) and can be written
// to, and a state file, if there is one, that is a regular file (never opened to find out: a
// FIFO would block the read); a kubeconfig that exists.
func (c Config) checkEnvironment() error {
	var errs []error
	if c.StateDir != "" {
		if err := checkStateDir(c.StateDir); err != nil {
			errs = append(errs, fmt.Errorf("--state-dir %s: %w", c.StateDir, err))
		}
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			errs = append(errs, fmt.Errorf("--kubeconfig: %w", err))
		}
	} else if env := os.Getenv("KUBECONFIG"); env != "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		found := false
		for _, p := range filepath.SplitList(env) {
			if _, err := os.Stat(p); err == nil { //nolint:gosec // the operator's own $KUBECONFIG, checked for existence
				found = true
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("$KUBECONFIG=%s: no such file (and not running in a cluster)", env))
		}
	}
	return errors.Join(errs...)
}

func checkStateDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("cannot be created: %w", err)
		}
	case err != nil:
		return err
	case !fi.IsDir():
		return errors.New("not a directory")
	}
	probe, err := os.CreateTemp(dir, ".holdfast-write-check-*")
	if err != nil {
		return fmt.Errorf("not writable: %w", err)
	}
	closeErr := probe.Close()
	_ = os.Remove(probe.Name())
	if closeErr != nil {
		return fmt.Errorf("not writable: %w", closeErr)
	}
	state := filepath.Join(dir, cache.StateFileName)
	if fi, err := os.Stat(state); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%v): refused without reading it; remove it", state, fi.Mode().Type())
	}
	return nil
}

// validateClusters checks the cluster-set flags.
func (c Config) validateClusters() []error {
	var errs []error
	if c.ClusterID == "" {
		if len(c.Remotes) > 0 || c.ClustersDir != "" {
			errs = append(errs, errors.New("--remote-cluster and --clusters-dir need --cluster-id: the ID of the cluster Holdfast runs in"))
		}
		return errs
	}
	if msgs := validation.IsDNS1123Label(c.ClusterID); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--cluster-id %q: %s", c.ClusterID, strings.Join(msgs, "; ")))
	}
	if c.ClusterDomain == resolver.ClusterSetDomain {
		errs = append(errs, fmt.Errorf("--cluster-domain %q is the cluster set's domain: cluster-local and cluster-set names would collide", c.ClusterDomain))
	}
	for id, path := range c.Remotes {
		if msgs := validation.IsDNS1123Label(id); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--remote-cluster %q: the ID is not a DNS label: %s", id, strings.Join(msgs, "; ")))
		}
		if id == c.ClusterID {
			errs = append(errs, fmt.Errorf("--remote-cluster %q: that is --cluster-id, the cluster Holdfast runs in", id))
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("--remote-cluster %s=%s: %w", id, path, err))
		}
	}
	if c.ClustersDir != "" {
		if fi, err := os.Stat(c.ClustersDir); err != nil {
			errs = append(errs, fmt.Errorf("--clusters-dir: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("--clusters-dir %s: not a directory", c.ClustersDir))
		}
	}
	if c.ClustersRescan <= 0 {
		errs = append(errs, fmt.Errorf("--clusters-rescan %v: must be positive", c.ClustersRescan))
	}
	if c.ClusterSyncTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--cluster-sync-timeout %v: must be positive", c.ClusterSyncTimeout))
	}
	return errs
}
