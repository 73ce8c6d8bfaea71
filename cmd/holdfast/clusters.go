package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/resolver/clusterset"
)

// remotes runs a resolver for every other cluster of the cluster set: those named by
// --remote-cluster, and those --clusters-dir holds, read again every --clusters-rescan. A
// cluster whose kubeconfig changes is started over with the new one; one whose file goes is
// removed from the merge (its endpoints are withdrawn through the guard); a kubeconfig that
// cannot be used is reported and, if its cluster was running, leaves it running as it was.
type remotes struct {
	// set at construction, read-only
	cfg     Config
	log     *slog.Logger
	merger  *clusterset.Merger
	configs *prometheus.CounterVec // holdfast_cluster_config_errors_total{cluster}

	// guarded by mu
	mu      sync.Mutex
	running map[string]*remote
	bad     map[string]string // cluster ID → the error its kubeconfig last gave, while it gives one
}

// remote is one other cluster's resolver, running until cancel.
type remote struct {
	kubeconfig []byte
	res        *resolver.Resolver
	reg        *prometheus.Registry // its resolver's metrics, labelled cluster=<id>
	cancel     context.CancelFunc
	done       chan struct{}
}

func newRemotes(cfg Config, merger *clusterset.Merger, log *slog.Logger, reg prometheus.Registerer) (*remotes, error) {
	r := &remotes{cfg: cfg, log: log.With("component", "clusters"), merger: merger, running: map[string]*remote{}, bad: map[string]string{},
		configs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_cluster_config_errors_total", Help: "Times another cluster's kubeconfig (--remote-cluster, --clusters-dir) could not be used; holdfastctl sources and the log say why."}, []string{"cluster"})}
	if err := promreg.Register(reg, "clusters", r.configs); err != nil {
		return nil, err
	}
	return r, nil
}

// Run keeps the running clusters in step with the flags and the directory until ctx is done,
// then stops them all.
func (r *remotes) Run(ctx context.Context) error {
	defer r.stopAll()
	for {
		r.sync(ctx, r.wanted())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.ClustersRescan):
		}
		if r.cfg.ClustersDir == "" {
			<-ctx.Done() // --remote-cluster only: nothing changes at run time
			return nil
		}
	}
}

// wanted reads every configured cluster's kubeconfig. A file that cannot be read is reported
// and keeps its cluster as it is running (nil bytes).
func (r *remotes) wanted() map[string][]byte {
	want := map[string][]byte{}
	for id, path := range r.cfg.Remotes {
		b, err := os.ReadFile(path) //nolint:gosec // the operator's --remote-cluster path
		if err != nil {
			r.failed(id, fmt.Errorf("--remote-cluster %s=%s: %w", id, path, err))
		}
		want[id] = b
	}
	if r.cfg.ClustersDir == "" {
		return want
	}
	// Read through an os.Root: nothing in the directory can lead outside it (a Secret volume's
	// files are symlinks into its own ..data).
	var entries []os.DirEntry
	root, err := os.OpenRoot(r.cfg.ClustersDir)
	if err == nil {
		defer root.Close()
		entries, err = os.ReadDir(r.cfg.ClustersDir)
	}
	if err != nil {
		// Keep every cluster as it is: an unreadable directory is not an empty one.
		r.log.Error("--clusters-dir cannot be read: the clusters stay as they are", "dir", r.cfg.ClustersDir, "err", err)
		r.mu.Lock()
		for id := range r.running {
			if _, ok := want[id]; !ok {
				want[id] = nil
			}
		}
		r.mu.Unlock()
		return want
	}
	for _, e := range entries {
		id, ok := clusterFileID(e.Name())
		if !ok {
			continue
		}
		path := filepath.Join(r.cfg.ClustersDir, e.Name())
		if fi, err := root.Stat(e.Name()); err != nil || !fi.Mode().IsRegular() { // Secret volumes hold symlinks
			continue
		}
		if msgs := validation.IsDNS1123Label(id); len(msgs) > 0 || id == r.cfg.ClusterID {
			r.failed(id, fmt.Errorf("--clusters-dir %s: %q is not another cluster's ID (a DNS label other than --cluster-id)", path, id))
			continue
		}
		if _, dup := want[id]; dup {
			r.failed(id, fmt.Errorf("--clusters-dir %s: cluster %q is given twice", path, id))
			continue
		}
		b, err := root.ReadFile(e.Name())
		if err != nil {
			r.failed(id, fmt.Errorf("--clusters-dir %s: %w", path, err))
		}
		want[id] = b
	}
	return want
}

// clusterFileID is the cluster ID a file of --clusters-dir names: its name without a .yaml,
// .yml or .kubeconfig extension. Hidden files (a Secret volume's ..data) name none.
func clusterFileID(name string) (string, bool) {
	if strings.HasPrefix(name, ".") {
		return "", false
	}
	for _, ext := range []string{".yaml", ".yml", ".kubeconfig"} {
		name = strings.TrimSuffix(name, ext)
	}
	return name, name != ""
}

// sync starts, restarts and stops clusters so that exactly want runs. A nil kubeconfig keeps
// its cluster as it is.
func (r *remotes) sync(ctx context.Context, want map[string][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, rm := range r.running {
		if _, ok := want[id]; !ok {
			r.log.Warn("cluster removed: its endpoints are withdrawn from cluster-set services (the guard judges it)", "decision", "cluster_removed", "subject", id)
			r.stopLocked(id, rm)
			r.merger.Remove(id)
		}
	}
	for id := range r.bad {
		if _, ok := want[id]; !ok {
			delete(r.bad, id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		b := want[id]
		rm, running := r.running[id]
		if b == nil || (running && bytes.Equal(rm.kubeconfig, b)) {
			continue
		}
		next, err := r.start(ctx, id, b)
		if err != nil {
			r.failedLocked(id, err)
			continue
		}
		delete(r.bad, id)
		if running {
			r.log.Info("cluster's kubeconfig changed: watching it again with the new one", "decision", "cluster_restarted", "subject", id)
			r.stopLocked(id, rm)
		} else {
			r.log.Info("cluster added", "decision", "cluster_added", "subject", id)
		}
		r.running[id] = next
	}
}

// start builds and starts cluster id's resolver from its kubeconfig.
func (r *remotes) start(ctx context.Context, id string, kubeconfig []byte) (*remote, error) {
	restCfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: kubeconfig: %w", id, err)
	}
	reg := prometheus.NewRegistry()
	log := r.log.With("cluster", id)
	// The merger learns of the cluster only once its resolver exists: a failure leaves a
	// running one as it was. Nothing is published before Run.
	var obs resolver.Observer
	res, err := newResolver(r.cfg, restCfg, log, prometheus.WrapRegistererWith(prometheus.Labels{"cluster": id}, reg), true,
		resolver.ObserverFunc(func(res resolver.Resolution) { obs.OnResolution(res) }))
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", id, err)
	}
	obs = r.merger.Add(id)
	rctx, cancel := context.WithCancel(ctx)
	rm := &remote{kubeconfig: kubeconfig, res: res, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rm.done)
		_ = res.Run(rctx)
	}()
	return rm, nil
}

func (r *remotes) stopLocked(id string, rm *remote) {
	rm.cancel()
	<-rm.done
	delete(r.running, id)
}

func (r *remotes) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, rm := range r.running {
		r.stopLocked(id, rm)
	}
}

func (r *remotes) failed(id string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failedLocked(id, err)
}

// failedLocked reports a cluster's unusable kubeconfig once per distinct error.
func (r *remotes) failedLocked(id string, err error) {
	r.configs.WithLabelValues(id).Inc()
	if r.bad[id] == err.Error() {
		return
	}
	r.bad[id] = err.Error()
	_, running := r.running[id]
	r.log.Error("another cluster's kubeconfig cannot be used", "decision", "cluster_config_error", "subject", id, "running_as_before", running, "err", err)
}

// Sources reports the other clusters' sources, named "<cluster>/<source>", and one line for
// each cluster whose kubeconfig cannot be used.
func (r *remotes) Sources() []resolver.SourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []resolver.SourceStatus
	for _, id := range slices.Sorted(maps.Keys(r.running)) {
		for _, s := range r.running[id].res.Sources() {
			s.Name = id + "/" + s.Name
			out = append(out, s)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(r.bad)) {
		if _, running := r.running[id]; !running {
			out = append(out, resolver.SourceStatus{Name: id + "/kubeconfig", State: resolver.Syncing, Reason: r.bad[id]})
		}
	}
	return out
}

// Gather implements prometheus.Gatherer: every running cluster's resolver metrics.
func (r *remotes) Gather() ([]*dto.MetricFamily, error) {
	r.mu.Lock()
	gs := make(prometheus.Gatherers, 0, len(r.running))
	for _, rm := range r.running {
		gs = append(gs, rm.reg)
	}
	r.mu.Unlock()
	return gs.Gather()
}

// newResolver builds a resolver for one cluster: the home cluster's (exports watched when
// cluster sets are on) or another's (always).
func newResolver(cfg Config, restCfg *rest.Config, log *slog.Logger, reg prometheus.Registerer, exports bool, obs resolver.Observer) (*resolver.Resolver, error) {
	restCfg.UserAgent = "holdfast"
	restCfg, err := resolver.TuneTransport(restCfg, cfg.ProbeInterval, cfg.ProbeTimeout)
	switch {
	case errors.Is(err, resolver.ErrTransportNotTuned):
		log.Warn("API server connections not health-checked; stalls are caught by the probe alone", "reason", err)
	case err != nil:
		return nil, err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	var md metadata.Interface
	if cfg.WatchNodes || exports {
		if md, err = metadata.NewForConfig(restCfg); err != nil {
			return nil, fmt.Errorf("kubernetes metadata client: %w", err)
		}
	}
	opts := resolver.Options{
		Client: client, Namespaces: cfg.Namespaces, Logger: log, Registry: reg,
		ProbeInterval: cfg.ProbeInterval, ProbeTimeout: cfg.ProbeTimeout, WatchIdleTimeout: cfg.WatchIdleTimeout,
		MaxEndpointsPerService: cfg.MaxEndpoints, HoldOff: cfg.Debounce, MaxDelay: cfg.DebounceMax,
	}
	if cfg.WatchNodes {
		opts.Metadata = md
	}
	if exports {
		opts.Exports = md
	}
	return resolver.New(opts, obs)
}
