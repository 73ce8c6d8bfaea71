package xds

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/resolver"
)

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	Translator Translator
	Logger     *slog.Logger
	Registry   prometheus.Registerer
}

// Publisher turns every new cache.View into one snapshot per client kind, validated and
// reference-checked, and sets them in the snapshot cache the ADS server serves from.
type Publisher struct {
	// set at construction, read-only
	tr      Translator
	log     *slog.Logger
	snaps   cachev3.SnapshotCache
	metrics publisherMetrics
	kick    chan struct{} // capacity 1: "latest has a view not yet published"

	// guarded by mu
	mu       sync.Mutex
	latest   *cache.View
	queuedAt time.Time // when the oldest view not yet taken by the run loop arrived

	// owned by the run loop
	built     map[resolver.Key]*serviceResources
	routeRefs map[*listenerv3.Listener][]string // cache for checkReferences, pruned each publish

	published atomic.Bool
}

type publisherMetrics struct {
	publishes      prometheus.Counter
	failures       *prometheus.CounterVec
	invalid        prometheus.Counter
	lastPublish    prometheus.Gauge
	publishSeconds prometheus.Histogram
	resources      *prometheus.GaugeVec
}

// NewPublisher creates a Publisher that sets snapshots in snaps.
func NewPublisher(opts PublisherOptions, snaps cachev3.SnapshotCache) (*Publisher, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	p := &Publisher{
		tr:    opts.Translator,
		log:   opts.Logger.With("component", "publisher"),
		snaps: snaps,
		kick:  make(chan struct{}, 1),
		built: map[resolver.Key]*serviceResources{},
		metrics: publisherMetrics{
			publishes: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_snapshots_published_total", Help: "Snapshots published to xDS clients (one per view, for all client kinds)."}),
			failures: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_publish_failures_total", Help: "Views that could not be published, by reason; the previous snapshot stays in place."}, []string{"reason"}),
			invalid: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_invalid_service_translations_total", Help: "Service translations that failed validation; the service keeps its previous resources."}),
			lastPublish: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_xds_last_publish_timestamp_seconds", Help: "Unix time of the latest successful publish."}),
			publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name: "holdfast_xds_publish_duration_seconds", Help: "Time to translate, validate and publish one view.",
				Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
			resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "holdfast_xds_resources", Help: "Resources in the latest published snapshot, by client kind and type."}, []string{"kind", "type"}),
		},
	}
	m := p.metrics
	for _, c := range []prometheus.Collector{m.publishes, m.failures, m.invalid, m.lastPublish, m.publishSeconds, m.resources} {
		if err := opts.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("publisher: register metrics: %w", err)
		}
	}
	return p, nil
}

// OnView implements cache.Observer. It never blocks: a newer view replaces one not yet published.
func (p *Publisher) OnView(v cache.View) {
	p.mu.Lock()
	p.latest = &v
	if p.queuedAt.IsZero() {
		p.queuedAt = time.Now()
	}
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Published reports whether a snapshot built from a synced or restored view has been published.
func (p *Publisher) Published() bool { return p.published.Load() }

// Stuck says whether a view has waited longer than after for the publish loop to take it.
func (p *Publisher) Stuck(now time.Time, after time.Duration) (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queuedAt.IsZero() || now.Sub(p.queuedAt) <= after {
		return false, ""
	}
	return true, fmt.Sprintf("a change has waited %v to be published", now.Sub(p.queuedAt).Round(time.Second))
}

// Run publishes views until ctx is done.
func (p *Publisher) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.kick:
		}
		p.mu.Lock()
		v := p.latest
		p.latest, p.queuedAt = nil, time.Time{}
		p.mu.Unlock()
		if v == nil || !v.Servable() {
			continue
		}
		start := time.Now()
		if err := p.publish(ctx, *v); err != nil {
			p.log.Error("snapshot not published; clients keep the previous one", "generation", v.Generation, "err", err)
			continue
		}
		p.metrics.publishSeconds.Observe(time.Since(start).Seconds())
	}
}

// build brings the translations in line with v and assembles each client kind's resources,
// closed under references. Nothing is published.
func (p *Publisher) build(v cache.View) (map[ClientKind]resourceSet, error) {
	p.update(v)
	sets, dropped := p.assemble()
	for _, err := range dropped {
		p.metrics.failures.WithLabelValues("envoy_port").Inc()
		p.log.Error("envoy listener for a port not published", "err", err)
	}
	refs := make(map[*listenerv3.Listener][]string, len(p.routeRefs))
	for kind, res := range sets {
		for _, r := range res[resourcev3.ListenerType].items {
			if l, ok := r.(*listenerv3.Listener); ok {
				if names, ok := p.routeRefs[l]; ok {
					refs[l] = names
				}
			}
		}
		if err := checkReferences(res.resources(), refs); err != nil {
			p.metrics.failures.WithLabelValues("references").Inc()
			return nil, fmt.Errorf("%s snapshot: %w", kind, err)
		}
	}
	p.routeRefs = refs // only listeners still published stay cached
	return sets, nil
}

func (p *Publisher) publish(ctx context.Context, v cache.View) error {
	sets, err := p.build(v)
	if err != nil {
		return err
	}
	for kind, res := range sets {
		snap := &cachev3.Snapshot{}
		for typ, l := range res {
			snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(l.version(), l.items)
			p.metrics.resources.WithLabelValues(string(kind), shortType(typ)).Set(float64(len(l.items)))
		}
		if err := p.snaps.SetSnapshot(ctx, string(kind), snap); err != nil {
			p.metrics.failures.WithLabelValues("set").Inc()
			return fmt.Errorf("%s snapshot: %w", kind, err)
		}
	}
	p.metrics.publishes.Inc()
	p.metrics.lastPublish.SetToCurrentTime()
	if !p.published.Swap(true) {
		p.log.Info("first snapshot published", "services", len(p.built), "generation", v.Generation)
	}
	return nil
}

// update brings the per-service translations in line with the view, translating only services
// whose *resolver.Service changed. A service whose new translation is invalid keeps its
// previous resources.
func (p *Publisher) update(v cache.View) {
	for k := range p.built {
		if _, ok := v.Services[k]; !ok {
			delete(p.built, k)
		}
	}
	for k, s := range v.Services {
		if prev, ok := p.built[k]; ok && prev.src == s {
			continue
		}
		sr, err := p.tr.translateService(s)
		if err != nil {
			p.metrics.invalid.Inc()
			_, kept := p.built[k]
			p.log.Warn("service translation rejected", "service", k, "kept_previous", kept, "err", err)
			continue
		}
		p.built[k] = sr
	}
}

// resourceSet is one client kind's resources, by type.
type resourceSet map[resourcev3.Type]*hashedList

// resources returns the plain resources, by type.
func (rs resourceSet) resources() map[resourcev3.Type][]types.Resource {
	out := make(map[resourcev3.Type][]types.Resource, len(rs))
	for t, l := range rs {
		out[t] = l.items
	}
	return out
}

// assemble builds the full resource set of each client kind from the per-service translations.
// An outbound_<port> listener or route that fails validation is left out, alone, and reported.
func (p *Publisher) assemble() (map[ClientKind]resourceSet, []error) {
	keys := make([]resolver.Key, 0, len(p.built))
	for k := range p.built {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, resolver.Key.Compare)
	clusters, assignments, grpcListeners, grpcRoutes := &hashedList{}, &hashedList{}, &hashedList{}, &hashedList{}
	vhostsByPort := map[int32][]vhostEntry{}
	for _, k := range keys {
		for _, pr := range p.built[k].ports {
			clusters.add(pr.cluster)
			assignments.add(pr.assignment)
			grpcListeners.add(pr.grpcListener)
			grpcRoutes.add(pr.grpcRoute)
			vhostsByPort[pr.port] = append(vhostsByPort[pr.port], vhostEntry{pr.envoyVHost, pr.vhostHash})
		}
	}
	ports := make([]int32, 0, len(vhostsByPort))
	for port := range vhostsByPort {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	envoyListeners, envoyRoutes := &hashedList{}, &hashedList{}
	var errs []error
	for _, port := range ports {
		l, rc, err := p.tr.envoyPortResources(port, vhostsByPort[port])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		envoyListeners.add(l)
		envoyRoutes.add(rc)
	}
	return map[ClientKind]resourceSet{
		KindGRPC: {
			resourcev3.ListenerType: grpcListeners, resourcev3.RouteType: grpcRoutes,
			resourcev3.ClusterType: clusters, resourcev3.EndpointType: assignments,
		},
		KindEnvoy: {
			resourcev3.ListenerType: envoyListeners, resourcev3.RouteType: envoyRoutes,
			resourcev3.ClusterType: clusters, resourcev3.EndpointType: assignments,
		},
	}, errs
}

// hashed is a resource with the hash of its deterministic serialisation.
type hashed struct {
	res  types.Resource
	hash uint64
}

func hashOf(m proto.Message) hashed {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		// Unreachable for validated resources; still make the hash unique to this content.
		b = []byte(err.Error())
	}
	h := fnv.New64a()
	_, _ = h.Write(b) // a hash.Hash never fails to write
	return hashed{res: m, hash: h.Sum64()}
}

func combine(hashes []uint64) uint64 {
	h := fnv.New64a()
	var buf [8]byte
	for _, x := range hashes {
		binary.BigEndian.PutUint64(buf[:], x)
		_, _ = h.Write(buf[:])
	}
	return h.Sum64()
}

// hashedList is the resources of one type, in a stable order, with their hashes.
type hashedList struct {
	items  []types.Resource
	hashes []uint64
}

func (l *hashedList) add(h hashed) {
	l.items = append(l.items, h.res)
	l.hashes = append(l.hashes, h.hash)
}

// version derives a type's version from its content, so that the same state always gets the same
// version: a restarted Holdfast, or another replica, does not make clients re-apply anything.
func (l *hashedList) version() string { return fmt.Sprintf("%016x", combine(l.hashes)) }

func shortType(t resourcev3.Type) string {
	switch t {
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route"
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "endpoint"
	}
	return t
}
