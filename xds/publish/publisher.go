// Package publish runs the loop that turns the cache's views into what xDS clients are
// served: every new view is translated (incrementally, by translate.Builder) and the result
// handed to a Sink (the ADS server), newest first, never blocking the cache. It owns which
// views get published and the metrics of publishing; translation and serving are elsewhere.
package publish

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/resolver"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/translate"
)

// Options configure a Publisher.
type Options struct {
	Translator translate.Translator
	Logger     *slog.Logger
	Registry   prometheus.Registerer
}

// Sink receives every published set of resources. The ADS server is one.
type Sink interface {
	// Publish makes set what clients are served; eventAt is when the oldest Kubernetes event
	// behind the change reached Holdfast (zero: none known).
	Publish(set resource.Set, eventAt time.Time)
}

// Publisher turns every new cache.View into each client kind's resources, validated and
// closed under references, and hands them to its Sink.
type Publisher struct {
	// set at construction, read-only
	log     *slog.Logger
	out     Sink
	metrics metrics
	kick    chan struct{} // capacity 1: "latest has a view not yet published"

	// guarded by mu
	mu       sync.Mutex
	latest   *cache.View
	newest   uint64                  // the highest generation handed in: an older view never replaces it
	queuedAt time.Time               // when the oldest view not yet taken by the run loop arrived
	invalid  map[resolver.Key]string // services whose newest state failed validation, with why

	// owned by the run loop (Run)
	builder *translate.Builder

	// atomic
	published atomic.Bool // a snapshot built from a synced or restored view went out
}

type metrics struct {
	publishes      prometheus.Counter
	failures       *prometheus.CounterVec
	invalid        prometheus.Counter
	invalidNow     prometheus.Gauge
	lastPublish    prometheus.Gauge
	publishSeconds prometheus.Histogram
	resources      *prometheus.GaugeVec
}

// New creates a Publisher that hands what it publishes to out (nil: nobody, for tests).
func New(opts Options, out Sink) (*Publisher, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	p := &Publisher{
		log:     opts.Logger.With("component", "publisher"),
		out:     out,
		kick:    make(chan struct{}, 1),
		builder: translate.NewBuilder(opts.Translator),
		invalid: map[resolver.Key]string{},
		metrics: metrics{
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
		if err := p.publish(*v); err != nil {
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
	return maps.Clone(p.invalid)
}

// publish translates v and hands the result to the sink.
func (p *Publisher) publish(v cache.View) error {
	res, err := p.builder.Build(v.Services, v.Retired)
	for _, r := range res.Rejected {
		if r.Retired {
			p.log.Warn("an earlier incarnation of a service no longer translates; not served beside the new one", "subject", r.Key.String(), "err", r.Err)
			continue
		}
		p.metrics.invalid.Inc()
		p.log.Warn("service translation rejected: keeping its previous resources", "decision", "service_invalid", "subject", r.Key.String(), "kept_previous", r.KeptPrevious, "err", r.Err)
	}
	for _, err := range res.Dropped {
		p.metrics.failures.WithLabelValues("envoy_port").Inc()
		p.log.Error("envoy listener for a port not published", "err", err)
	}
	p.mu.Lock()
	p.invalid = res.Invalid
	p.mu.Unlock()
	p.metrics.invalidNow.Set(float64(len(res.Invalid)))
	if err != nil {
		p.metrics.failures.WithLabelValues("references").Inc()
		return err
	}
	for kind, byType := range res.Set {
		for typ, l := range byType {
			p.metrics.resources.WithLabelValues(string(kind), resource.Short(typ)).Set(float64(len(l)))
		}
	}
	if p.out != nil {
		p.out.Publish(res.Set, res.EventAt)
	}
	p.metrics.publishes.Inc()
	p.metrics.lastPublish.SetToCurrentTime()
	if !p.published.Swap(true) {
		p.log.Info("first snapshot published", "services", res.Services, "generation", v.Generation)
	}
	return nil
}
