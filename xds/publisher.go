package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/resolver"
)

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	Translator Translator
	Logger     *slog.Logger
	Registry   prometheus.Registerer
}

// SnapshotSetter receives every published set of snapshots. The ADS server is one.
type SnapshotSetter interface {
	SetSnapshots(Snapshots)
}

// Publisher turns every new cache.View into one snapshot per client kind, validated and
// reference-checked, and hands them to the ADS server.
type Publisher struct {
	// set at construction, read-only
	tr      Translator
	log     *slog.Logger
	out     SnapshotSetter
	metrics publisherMetrics
	kick    chan struct{} // capacity 1: "latest has a view not yet published"

	// guarded by mu
	mu       sync.Mutex
	latest   *cache.View
	newest   uint64    // the highest generation handed in: an older view never replaces it
	queuedAt time.Time // when the oldest view not yet taken by the run loop arrived

	invalid map[resolver.Key]invalidState // services whose newest state failed validation

	// owned by the run loop
	built     map[resolver.Key]*serviceResources
	retired   map[resolver.Key]*serviceResources            // earlier incarnations served beside built (cache.View.Retired)
	ports     map[int32]*portOutbound                       // Envoy's outbound_<port> resources, by port
	indexes   map[ClientKind]map[resourcev3.Type]*typeIndex // the last published, reused when unchanged
	routeRefs map[*listenerv3.Listener][]string             // cache for checkReferences, pruned each publish
	// eventAt is when the oldest Kubernetes event behind the services retranslated for this
	// publish arrived (zero: none known); the indexes it changes carry it.
	eventAt time.Time

	published atomic.Bool
}

type publisherMetrics struct {
	publishes      prometheus.Counter
	failures       *prometheus.CounterVec
	invalid        prometheus.Counter
	invalidNow     prometheus.Gauge
	lastPublish    prometheus.Gauge
	publishSeconds prometheus.Histogram
	resources      *prometheus.GaugeVec
}

// NewPublisher creates a Publisher that hands its snapshots to out (nil: nobody, for tests).
func NewPublisher(opts PublisherOptions, out SnapshotSetter) (*Publisher, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	p := &Publisher{
		tr:      opts.Translator,
		log:     opts.Logger.With("component", "publisher"),
		out:     out,
		kick:    make(chan struct{}, 1),
		built:   map[resolver.Key]*serviceResources{},
		retired: map[resolver.Key]*serviceResources{},
		ports:   map[int32]*portOutbound{},
		invalid: map[resolver.Key]invalidState{},
		metrics: publisherMetrics{
			publishes: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_snapshots_published_total", Help: "Snapshots published to xDS clients (one per view, for all client kinds)."}),
			failures: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_publish_failures_total", Help: "Views that could not be published, by reason; the previous snapshot stays in place."}, []string{"reason"}),
			invalid: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_invalid_service_translations_total", Help: "Service translations that failed validation; the service keeps its previous resources."}),
			invalidNow: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_xds_services_invalid", Help: "Services whose newest state fails validation: each keeps its previous resources (degraded)."}),
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
	if err := promreg.Register(opts.Registry, "publisher", m.publishes, m.failures, m.invalid, m.invalidNow, m.lastPublish, m.publishSeconds, m.resources); err != nil {
		return nil, err
	}
	return p, nil
}

// OnView implements cache.Observer. It never blocks: a newer view replaces one not yet
// published. The store hands views in from several goroutines (the resolver's, its own loop's
// tombstone sweeps and hold expiries, an operator's release, the restore at start), each
// after unlocking, so they may arrive out of order: a view older than one already handed in
// is dropped, whatever goroutine it comes from.
func (p *Publisher) OnView(v cache.View) {
	p.mu.Lock()
	if v.Generation <= p.newest && p.newest != 0 {
		p.mu.Unlock()
		return
	}
	p.newest = v.Generation
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
			p.log.Error("snapshot not published; clients keep the previous one", "decision", "snapshot_rejected", "generation", v.Generation, "err", err)
			continue
		}
		p.metrics.publishSeconds.Observe(time.Since(start).Seconds())
	}
}

// Invalid returns the services whose newest state failed validation, with the reason. Each
// keeps serving its previous resources (or none, if it never had valid ones).
func (p *Publisher) Invalid() map[resolver.Key]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[resolver.Key]string, len(p.invalid))
	for k, iv := range p.invalid {
		out[k] = iv.why
	}
	return out
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
		for _, r := range res[resourcev3.ListenerType] {
			if l, ok := r.Msg.(*listenerv3.Listener); ok {
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

func (p *Publisher) publish(_ context.Context, v cache.View) error {
	sets, err := p.build(v)
	if err != nil {
		return err
	}
	snaps := make(Snapshots, len(sets))
	indexes := map[ClientKind]map[resourcev3.Type]*typeIndex{}
	for kind, res := range sets {
		snap := &Snapshot{types: make(map[resourcev3.Type]*typeIndex, len(res))}
		for typ, l := range res {
			idx := p.indexFor(kind, typ, l, indexes)
			snap.types[typ] = idx
			p.metrics.resources.WithLabelValues(string(kind), shortType(typ)).Set(float64(len(l)))
		}
		snaps[kind] = snap
	}
	p.indexes = indexes
	if p.out != nil {
		p.out.SetSnapshots(snaps)
	}
	p.metrics.publishes.Inc()
	p.metrics.lastPublish.SetToCurrentTime()
	if !p.published.Swap(true) {
		p.log.Info("first snapshot published", "services", len(p.built), "generation", v.Generation)
	}
	return nil
}

// indexFor returns the type index for one kind's resources of one type: the previous one when
// nothing changed (so that streams skip the type at once), the other kind's when both kinds
// share the resources (clusters and assignments), a new one otherwise.
func (p *Publisher) indexFor(kind ClientKind, typ resourcev3.Type, l resourceList, next map[ClientKind]map[resourcev3.Type]*typeIndex) *typeIndex {
	version := l.version()
	var idx *typeIndex
	for _, byType := range next {
		if other := byType[typ]; other != nil && other.version == version && len(other.list) == len(l) {
			idx = other
		}
	}
	if prev := p.indexes[kind][typ]; idx == nil && prev != nil && prev.version == version && len(prev.list) == len(l) {
		idx = prev
	}
	if idx == nil {
		idx = newTypeIndex(l)
		prev := p.indexes[kind][typ]
		if prev != nil {
			idx.since(prev)
			idx.eventAt = p.eventAt
		}
		idx.localize(prev)
	}
	if next[kind] == nil {
		next[kind] = map[resourcev3.Type]*typeIndex{}
	}
	next[kind][typ] = idx
	return idx
}

// update brings the per-service translations in line with the view, translating only services
// whose *resolver.Service changed. A service whose new translation is invalid keeps its
// previous resources and is reported as invalid until a valid state arrives.
func (p *Publisher) update(v cache.View) {
	p.eventAt = time.Time{}
	p.mu.Lock()
	invalid := maps.Clone(p.invalid)
	p.mu.Unlock()
	for k := range p.built {
		if _, ok := v.Services[k]; !ok {
			delete(p.built, k)
		}
	}
	for k, iv := range invalid {
		if v.Services[k] != iv.src {
			delete(invalid, k) // gone, or a new state: judged again below
		}
	}
	for k, s := range v.Services {
		if prev, ok := p.built[k]; ok && prev.src == s {
			continue
		}
		if _, judged := invalid[k]; judged {
			continue // the same invalid state: judged already
		}
		sr, err := p.tr.translateService(s)
		if err != nil {
			p.metrics.invalid.Inc()
			_, kept := p.built[k]
			p.log.Warn("service translation rejected: keeping its previous resources", "decision", "service_invalid", "subject", k.String(), "kept_previous", kept, "err", err)
			invalid[k] = invalidState{src: s, why: err.Error()}
			continue
		}
		p.built[k] = sr
		if at := s.Origin.ObservedAt; !at.IsZero() && (p.eventAt.IsZero() || at.Before(p.eventAt)) {
			p.eventAt = at
		}
	}
	p.mu.Lock()
	p.invalid = invalid
	p.mu.Unlock()
	p.metrics.invalidNow.Set(float64(len(invalid)))
	p.updateRetired(v.Retired)
}

// updateRetired brings the translations of retired incarnations in line with the view. One
// that does not translate is left out: it was served before, so it translated then, and the
// new incarnation is what clients move to.
func (p *Publisher) updateRetired(retired map[resolver.Key]*resolver.Service) {
	for k, sr := range p.retired {
		if retired[k] != sr.src {
			delete(p.retired, k)
		}
	}
	for k, s := range retired {
		if _, ok := p.retired[k]; ok {
			continue
		}
		sr, err := p.tr.translateService(s)
		if err != nil {
			p.log.Warn("an earlier incarnation of a service no longer translates; not served beside the new one", "subject", k.String(), "err", err)
			continue
		}
		p.retired[k] = sr
	}
}

// invalidState is a service state that failed validation, kept so that it is judged once.
type invalidState struct {
	src *resolver.Service
	why string
}

// resourceSet is one client kind's resources, by type.
type resourceSet map[resourcev3.Type]resourceList

// resources returns the plain resources, by type.
func (rs resourceSet) resources() map[resourcev3.Type][]types.Resource {
	out := make(map[resourcev3.Type][]types.Resource, len(rs))
	for t, l := range rs {
		out[t] = l.items()
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
	var clusters, assignments, grpcListeners, grpcRoutes resourceList
	vhostsByPort := map[int32][]vhostEntry{}
	for _, k := range keys {
		for _, pr := range p.built[k].ports {
			clusters = append(clusters, pr.cluster)
			assignments = append(assignments, pr.assignment)
			grpcListeners = append(grpcListeners, pr.grpcListener)
			grpcRoutes = append(grpcRoutes, pr.grpcRoute)
			vhostsByPort[pr.port] = append(vhostsByPort[pr.port], pr.envoyVHost)
		}
	}
	// An earlier incarnation of a service created again keeps its cluster, assignment and gRPC
	// route configuration (not its listener, which now points to the new incarnation, nor its
	// Envoy virtual host) while clients move to the new names.
	for _, k := range slices.SortedFunc(maps.Keys(p.retired), resolver.Key.Compare) {
		live := p.built[k]
		for _, pr := range p.retired[k].ports {
			if live != nil && slices.ContainsFunc(live.ports, func(l portResources) bool { return l.cluster.Name == pr.cluster.Name }) {
				continue // the same names: nothing to keep apart
			}
			clusters = append(clusters, pr.cluster)
			assignments = append(assignments, pr.assignment)
			grpcRoutes = append(grpcRoutes, pr.grpcRoute)
		}
	}
	ports := make([]int32, 0, len(vhostsByPort))
	for port := range vhostsByPort {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	var envoyListeners, envoyRoutes resourceList
	var errs []error
	for port := range p.ports {
		if _, ok := vhostsByPort[port]; !ok {
			delete(p.ports, port)
		}
	}
	for _, port := range ports {
		po, err := p.tr.envoyPortResources(port, vhostsByPort[port], p.ports[port])
		if err != nil {
			errs = append(errs, err)
			delete(p.ports, port)
			continue
		}
		p.ports[port] = po
		envoyListeners = append(envoyListeners, po.listener)
		envoyRoutes = append(envoyRoutes, po.route)
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
