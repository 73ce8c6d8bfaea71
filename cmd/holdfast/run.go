package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/adminserver"
	"github.com/holdfast/holdfast/internal/health"
	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/internal/statuspage"
	"github.com/holdfast/holdfast/internal/tlsfiles"
	"github.com/holdfast/holdfast/internal/version"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/resolver/clusterset"
	"github.com/holdfast/holdfast/xds/admin"
	"github.com/holdfast/holdfast/xds/publish"
	"github.com/holdfast/holdfast/xds/serve"
	"github.com/holdfast/holdfast/xds/translate"
)

// decisionLogSize is how many decisions the admin API's decision log keeps.
const decisionLogSize = 1000

// run wires resolver → cache → xds and serves until ctx is done.
func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	// Every decision logged by any part is also kept for the admin API's decision log.
	decisions := adminserver.NewDecisions(decisionLogSize)
	log = slog.New(decisions.Handler(log.Handler()))
	klog.SetSlogLogger(log.With("component", "client-go"))
	restCfg, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if err := promreg.Register(reg, "holdfast", collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return err
	}

	// The publisher needs the server's snapshot cache, the server the store's client gauge,
	// the store the publisher: build the cache side first.
	// TLS for the xDS and admin servers, from files reloaded when they change.
	var creds credentials.TransportCredentials
	var tlsReload *tlsfiles.Reloader
	if cfg.TLS.Enabled() {
		if tlsReload, err = tlsfiles.NewServer(cfg.TLS, tlsfiles.Options{Component: "server", Logger: log, Registry: reg}); err != nil {
			return fmt.Errorf("--tls-cert/--tls-key/--client-ca: %w", err)
		}
		creds = tlsReload.ServerCredentials()
	}
	srv, err := serve.NewServer(serve.ServerOptions{Logger: log, Registry: reg, MaxClients: cfg.MaxClients, AckTimeout: cfg.AckTimeout, Credentials: creds, MaxUnknownNames: cfg.MaxUnknownNames})
	if err != nil {
		return err
	}
	pub, err := publish.New(publish.Options{
		Translator: translate.Translator{Naming: translate.Naming{Domain: cfg.ClusterDomain}, EnvoyListenAddress: cfg.EnvoyListenAddress, LocalityDefault: cfg.LocalityDefault},
		Logger:     log,
		Registry:   reg,
	}, srv)
	if err != nil {
		return err
	}
	store, err := cache.NewStore(cache.StoreOptions{StateDir: cfg.StateDir, Guard: cfg.Guard, Limits: cfg.Limits, Logger: log, Registry: reg}, pub)
	if err != nil {
		return err
	}
	srv.SetClientsRatio(store.ClientsRatio())

	// One cluster: its resolver feeds the store. A cluster set: every cluster's resolver feeds
	// the merger, which feeds the store; resolver metrics carry their cluster.
	var merger *clusterset.Merger
	var others *remotes
	var res *resolver.Resolver
	var more []prometheus.Gatherer // other clusters' metrics
	if cfg.ClusterID == "" {
		if res, err = newResolver(cfg, restCfg, log, reg, false, store); err != nil {
			return err
		}
	} else {
		if merger, err = clusterset.New(clusterset.Options{Home: cfg.ClusterID, SyncTimeout: cfg.ClusterSyncTimeout, Logger: log, Registry: reg}, store); err != nil {
			return err
		}
		homeReg := prometheus.WrapRegistererWith(prometheus.Labels{"cluster": cfg.ClusterID}, reg)
		if res, err = newResolver(cfg, restCfg, log.With("cluster", cfg.ClusterID), homeReg, true, merger.Add(cfg.ClusterID)); err != nil {
			return err
		}
		if others, err = newRemotes(cfg, merger, log, reg); err != nil {
			return err
		}
		more = append(more, others)
	}
	sources := sourceSet{home: res, others: others}

	// Bind both ports before starting anything, so that a taken port fails the start at once.
	xdsLis, err := net.Listen("tcp", cfg.XDSListen)
	if err != nil {
		return fmt.Errorf("--xds-listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		_ = xdsLis.Close()
		return fmt.Errorf("--http-listen: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		_ = xdsLis.Close()
		_ = httpLis.Close()
		return fmt.Errorf("--admin-listen: %w", err)
	}
	var statusLis net.Listener
	if cfg.StatusListen != "" {
		if statusLis, err = net.Listen("tcp", cfg.StatusListen); err != nil {
			_ = xdsLis.Close()
			_ = httpLis.Close()
			_ = adminLis.Close()
			return fmt.Errorf("--status-listen: %w", err)
		}
	}
	var adminOpts []grpc.ServerOption
	if creds != nil {
		adminOpts = append(adminOpts, grpc.Creds(creds))
	}
	adminSrv := grpc.NewServer(adminOpts...)
	adminAPI := adminserver.NewServer(adminserver.Options{Services: store, Sources: sources, Clients: srv,
		Naming: translate.Naming{Domain: cfg.ClusterDomain}, Decisions: decisions, Logger: log})
	admin.RegisterAdminServer(adminSrv, adminAPI)
	statusv3.RegisterClientStatusDiscoveryServiceServer(adminSrv, adminserver.NewCSDS(srv))
	reflection.Register(adminSrv)
	ready := readinessFunc(pub, sources, merger, store, cfg.ReadyWhenStale, cfg.StuckAfter)
	handler := health.Handler(reg, func() (bool, any) { r := ready(); return r.Ready, r }, more...)
	if cfg.DebugPprof {
		handler = health.WithPprof(handler)
	}
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	log.Info("holdfast starting", "version", version.String(), "xds", xdsLis.Addr().String(), "http", httpLis.Addr().String(), "admin", adminLis.Addr().String(), "status", cfg.StatusListen,
		"namespaces", cfg.Namespaces, "cluster_domain", cfg.ClusterDomain, "cluster_id", cfg.ClusterID, "tls", cfg.TLS.Enabled(), "mtls", cfg.TLS.CA != "")

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return pub.Run(gctx) })
	if tlsReload != nil {
		g.Go(func() error { tlsReload.Run(gctx, time.Second); return nil })
	}
	// A bad state file is reported by Restore and ignored: Holdfast then serves once synced.
	// Restore runs beside everything else, outside the group: a read that hangs (a stalled
	// disk) never keeps Holdfast from serving once synced, nor from shutting down.
	go func() {
		if store.Restore() != nil || merger == nil {
			return
		}
		// Other clusters not synced yet are served as the state file has them.
		if v := store.View(); v.Restored {
			merger.Seed(v.Services)
		}
	}()
	g.Go(func() error { return store.Run(gctx) })
	g.Go(func() error { return res.Run(gctx) })
	if merger != nil {
		g.Go(func() error { return merger.Run(gctx) })
		g.Go(func() error { return others.Run(gctx) })
	}
	g.Go(func() error { return srv.GRPC.Serve(xdsLis) })
	g.Go(func() error { return adminSrv.Serve(adminLis) })
	statusSrv := &http.Server{Handler: statuspage.New(adminAPI, log, 5*time.Second), ReadHeaderTimeout: 5 * time.Second}
	if statusLis != nil {
		g.Go(func() error {
			if err := statusSrv.Serve(statusLis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down: closing xDS streams", "grace", cfg.ShutdownGrace)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
		defer cancel()
		srv.Stop(sctx)
		adminSrv.Stop()
		_ = statusSrv.Shutdown(sctx)
		return httpSrv.Shutdown(sctx)
	})
	return g.Wait()
}

// restConfig finds the API server: --kubeconfig, else the in-cluster config, else $KUBECONFIG.
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		c, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
		}
		return c, nil
	}
	c, err := rest.InClusterConfig()
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	if os.Getenv("KUBECONFIG") == "" {
		return nil, errors.New("no API server: pass --kubeconfig, run in a cluster, or set $KUBECONFIG")
	}
	c, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("$KUBECONFIG: %w", err)
	}
	return c, nil
}

// readiness is what /readyz reports.
type readiness struct {
	Ready bool `json:"ready"`
	// Published: a snapshot built from a complete sync with the API server is being served.
	Published bool `json:"published"`
	// Stale: at least one source cannot be trusted right now; its last routes are still served.
	Stale bool `json:"stale"`
	// Restored: serving state loaded from disk, not yet synced with the API server.
	Restored     bool                    `json:"restored"`
	RestoredFrom *time.Time              `json:"restored_from,omitempty"`
	Sources      []resolver.SourceStatus `json:"sources"`
	// Clusters: with a cluster set, every cluster and whether it has synced (or was given up
	// on after --cluster-sync-timeout: served without it).
	Clusters []clusterset.ClusterStatus `json:"clusters,omitempty"`
	// Held: a change the mass-withdrawal guard keeps from clients.
	Held *heldChange `json:"held,omitempty"`
	// Stuck: Holdfast is alive but not doing its work (publishing, persisting).
	Stuck []string `json:"stuck,omitempty"`
}

type heldChange struct {
	ID        int       `json:"id"`
	Since     time.Time `json:"since"`
	Reason    string    `json:"reason"`
	Withdrawn int       `json:"withdrawn"`
	Services  []string  `json:"services"`
}

// readinessFunc decides readiness: ready once a synced snapshot is published (with a cluster
// set: once the home cluster has synced and every other one has synced or had
// --cluster-sync-timeout to); while a source is stale, only if readyWhenStale.
func readinessFunc(pub *publish.Publisher, sources sourceSet, merger *clusterset.Merger, store *cache.Store, readyWhenStale bool, stuckAfter time.Duration) func() readiness {
	return func() readiness {
		now := time.Now()
		r := readiness{Published: pub.Published(), Sources: sources.Sources()}
		if merger != nil {
			r.Clusters = merger.Clusters()
		}
		if v := store.View(); v.Restored {
			r.Restored, r.RestoredFrom = true, &v.RestoredFrom
		}
		if h := store.Held(); h != nil {
			r.Held = &heldChange{ID: h.ID, Since: h.Since, Reason: h.Verdict.Reason, Withdrawn: h.Verdict.Withdrawn, Services: h.Verdict.Services}
		}
		for _, s := range r.Sources {
			if s.State == resolver.Stale {
				r.Stale = true
			}
		}
		for _, c := range []func(time.Time, time.Duration) (bool, string){pub.Stuck, store.Stuck} {
			if stuck, why := c(now, stuckAfter); stuck {
				r.Stuck = append(r.Stuck, why)
			}
		}
		r.Ready = r.Published && len(r.Stuck) == 0 && (readyWhenStale || !r.Stale)
		return r
	}
}

// sourceSet is every cluster's sources: the home cluster's under their own names, the other
// clusters' as "<cluster>/<source>".
type sourceSet struct {
	home   *resolver.Resolver
	others *remotes // nil: one cluster
}

// Sources implements adminserver.Sources.
func (s sourceSet) Sources() []resolver.SourceStatus {
	out := s.home.Sources()
	if s.others != nil {
		out = append(out, s.others.Sources()...)
	}
	return out
}
