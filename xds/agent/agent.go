// Package agent is holdfast-agent's logic: one upstream ADS stream per client kind to Holdfast,
// a disk cache of everything it receives, and Holdfast's own xDS server serving that cache to
// the local Envoys and gRPC applications. An application that restarts while Holdfast is
// unreachable gets its routes from the agent's memory, or from its disk after the agent itself
// restarted.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/internal/failures"
	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/xds"
)

// Downstream is the local xDS server the agent feeds: Holdfast's own.
type Downstream interface {
	SetSnapshots(xds.Snapshots)
	Delivery(xds.ClientKind, resourcev3.Type, map[string]string) xds.Delivery
}

// Options configure an Agent.
type Options struct {
	// Upstream is Holdfast's xDS address; DialOptions carry its transport credentials.
	Upstream    string
	DialOptions []grpc.DialOption
	// NodeID, Zone and Region are the identity presented upstream: the local application's.
	NodeID, Zone, Region string
	// Kinds are the client kinds whose resources are mirrored (default both).
	Kinds []xds.ClientKind
	// CacheDir holds the disk cache ("" = memory only).
	CacheDir string
	// MaxResources and MaxCacheBytes bound the cache; upstream responses beyond them are
	// rejected (NACKed) and the previous state kept. [100000, 256 MiB]
	MaxResources  int
	MaxCacheBytes int64
	// MaxCacheAge: a cache older than this is still served, and reported loudly. [24h]
	MaxCacheAge time.Duration
	// SettleTimeout bounds how long an upstream response waits for the local clients' verdict
	// (ACK or NACK, forwarded upstream) before it is ACKed. [5s]
	SettleTimeout time.Duration
	// WriteEvery is the least time between two cache writes. [500ms]
	WriteEvery time.Duration
	// Backoff bounds the wait between upstream reconnects (with jitter). [250ms, 15s]
	MinBackoff, MaxBackoff time.Duration
	Downstream             Downstream
	Logger                 *slog.Logger
	Registry               prometheus.Registerer
}

func (o *Options) defaults() {
	if len(o.Kinds) == 0 {
		o.Kinds = []xds.ClientKind{xds.KindGRPC, xds.KindEnvoy}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.MaxCacheAge, 24*time.Hour)
	def(&o.SettleTimeout, 5*time.Second)
	def(&o.WriteEvery, 500*time.Millisecond)
	def(&o.MinBackoff, 250*time.Millisecond)
	def(&o.MaxBackoff, 15*time.Second)
	if o.MaxResources <= 0 {
		o.MaxResources = 100000
	}
	if o.MaxCacheBytes <= 0 {
		o.MaxCacheBytes = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
}

type resources = map[xds.ClientKind]map[resourcev3.Type]map[string]*xds.Resource

// Agent mirrors Holdfast for local clients.
type Agent struct {
	o       Options
	log     *slog.Logger
	metrics metrics
	kick    chan struct{}      // capacity 1: the cache changed and must be written
	failing *failures.Repeated // paces the reports of cache writes that fail

	mu        sync.Mutex
	res       resources
	snaps     xds.Snapshots
	bytes     int64                                        // resource bytes cached
	typeBytes map[xds.ClientKind]map[resourcev3.Type]int64 // of which, by kind and type
	restored  *restoredState                               // nil once upstream confirmed every type, or if nothing was restored
	up        map[xds.ClientKind]*upstreamState
	dirty     bool
	everLive  bool      // upstream has answered every type of some kind at least once
	written   int       // resources in the last cache file written
	wroteAt   time.Time // when
}

type restoredState struct {
	writtenAt time.Time
	tooOld    bool
}

type upstreamState struct {
	connected bool
	since     time.Time
	lastErr   string
	synced    map[resourcev3.Type]bool // a response of the type arrived on the current stream
}

type metrics struct {
	connected, resources            *prometheus.GaugeVec
	reconnects, forwarded, rejected *prometheus.CounterVec
	fromCache, cacheAge             prometheus.Gauge
	loadErrors                      *prometheus.CounterVec
	writes, writeErrors             prometheus.Counter
}

// New returns an Agent; LoadCache and Run start it.
func New(o Options) (*Agent, error) {
	o.defaults()
	if o.Downstream == nil {
		return nil, errors.New("agent: no downstream server")
	}
	if o.NodeID == "" {
		return nil, errors.New("agent: a node ID is required")
	}
	a := &Agent{o: o, log: o.Logger.With("component", "agent"), kick: make(chan struct{}, 1), failing: failures.New(time.Second, time.Minute), res: resources{},
		up: map[xds.ClientKind]*upstreamState{}}
	a.typeBytes = map[xds.ClientKind]map[resourcev3.Type]int64{}
	for _, k := range o.Kinds {
		a.res[k] = map[resourcev3.Type]map[string]*xds.Resource{}
		a.typeBytes[k] = map[resourcev3.Type]int64{}
		a.up[k] = &upstreamState{synced: map[resourcev3.Type]bool{}}
	}
	m := metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "holdfast_agent_upstream_connected",
			Help: "1 while the upstream stream to Holdfast for this client kind is open."}, []string{"kind"}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "holdfast_agent_resources",
			Help: "Resources in the agent's cache, by client kind."}, []string{"kind"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_upstream_reconnects_total",
			Help: "Upstream streams that ended and were opened again, by client kind."}, []string{"kind"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_nacks_forwarded_total",
			Help: "Local clients' rejections forwarded upstream as NACKs, by type."}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_upstream_rejected_total",
			Help: "Upstream responses the agent itself rejected (invalid, or over its limits), by type."}, []string{"type"}),
		fromCache: prometheus.NewGauge(prometheus.GaugeOpts{Name: "holdfast_agent_serving_from_cache",
			Help: "1 while the agent serves resources restored from disk that upstream has not confirmed yet."}),
		cacheAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "holdfast_agent_restored_cache_age_seconds",
			Help: "Age of the restored cache being served (0 when serving live data)."}),
		loadErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_agent_cache_load_errors_total",
			Help: "Cache files not used at start, by reason."}, []string{"reason"}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_agent_cache_writes_total",
			Help: "Cache files written."}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "holdfast_agent_cache_write_errors_total",
			Help: "Cache writes that failed; the previous file stays."}),
	}
	if err := promreg.Register(o.Registry, "agent", m.connected, m.resources, m.reconnects, m.forwarded, m.rejected, m.fromCache, m.cacheAge, m.loadErrors, m.writes, m.writeErrors); err != nil {
		return nil, err
	}
	a.metrics = m
	return a, nil
}

func (a *Agent) cachePath() string { return filepath.Join(a.o.CacheDir, cacheFileName) }

// LoadCache serves the disk cache at once, if there is a usable one. A missing file is normal;
// a bad one is reported, counted and ignored whole, and the agent waits for upstream.
func (a *Agent) LoadCache() error {
	if a.o.CacheDir == "" {
		return nil
	}
	res, writtenAt, err := readCacheFile(a.cachePath(), a.o.MaxCacheBytes)
	var le *cache.LoadError
	switch {
	case errors.As(err, &le) && le.Reason == "missing":
		a.log.Info("no cache file: waiting for upstream", "path", a.cachePath())
		return nil
	case err != nil:
		reason := "unreadable"
		if errors.As(err, &le) {
			reason = le.Reason
		}
		a.metrics.loadErrors.WithLabelValues(reason).Inc()
		a.log.Error("cache file ignored: waiting for upstream", "decision", "agent_cache_ignored", "subject", a.cachePath(), "reason", reason, "err", err)
		return err
	}
	age := time.Since(writtenAt)
	a.mu.Lock()
	for _, k := range a.o.Kinds {
		if types, ok := res[k]; ok {
			a.res[k] = types
		}
	}
	a.restored = &restoredState{writtenAt: writtenAt, tooOld: age > a.o.MaxCacheAge}
	a.bytes = 0
	for _, k := range a.o.Kinds {
		for _, typ := range xds.ServedTypes {
			a.typeBytes[k][typ] = bytesOf(a.res[k][typ])
			a.bytes += a.typeBytes[k][typ]
		}
	}
	a.publishLocked(xds.ServedTypes, a.o.Kinds...)
	n := a.countLocked()
	a.mu.Unlock()
	a.metrics.fromCache.Set(1)
	a.metrics.cacheAge.Set(age.Seconds())
	if age > a.o.MaxCacheAge {
		a.log.Error("serving a cache older than --max-cache-age: its routes may be long gone; serving it anyway until upstream answers",
			"decision", "agent_cache_old", "subject", a.cachePath(), "age", age.Round(time.Second), "max_age", a.o.MaxCacheAge, "resources", n)
	} else {
		a.log.Warn("serving the cache from disk until upstream answers", "decision", "agent_cache_restored", "subject", a.cachePath(),
			"age", age.Round(time.Second), "resources", n)
	}
	return nil
}

func (a *Agent) countLocked() int {
	n := 0
	for _, types := range a.res {
		for _, rs := range types {
			n += len(rs)
		}
	}
	return n
}

// publishLocked hands the downstream server new snapshots in which the given types of the
// given kinds are rebuilt from the cache; the other types keep their indexes.
func (a *Agent) publishLocked(types []resourcev3.Type, kinds ...xds.ClientKind) {
	snaps := make(xds.Snapshots, len(a.res))
	maps.Copy(snaps, a.snaps)
	for _, kind := range kinds {
		for _, typ := range types {
			rs := a.res[kind][typ]
			l := make([]*xds.Resource, 0, len(rs))
			for _, r := range rs {
				l = append(l, r)
			}
			snaps[kind] = snaps[kind].WithType(typ, l)
		}
		a.metrics.resources.WithLabelValues(string(kind)).Set(float64(a.countKindLocked(kind)))
	}
	a.snaps = snaps
	a.o.Downstream.SetSnapshots(snaps)
}

func bytesOf(rs map[string]*xds.Resource) int64 {
	var n int64
	for _, r := range rs {
		n += int64(len(r.Any.GetValue()))
	}
	return n
}

func (a *Agent) countKindLocked(kind xds.ClientKind) int {
	n := 0
	for _, rs := range a.res[kind] {
		n += len(rs)
	}
	return n
}

// Run keeps one upstream stream per kind and writes the cache until ctx is done; the last
// state is written before it returns.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(a.o.Upstream, a.o.DialOptions...)
	if err != nil {
		return fmt.Errorf("agent: upstream %q: %w", a.o.Upstream, err)
	}
	defer conn.Close()
	var wg sync.WaitGroup
	for _, kind := range a.o.Kinds {
		wg.Go(func() { a.upstreamLoop(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn), kind) })
	}
	wg.Go(func() { a.writer(ctx) })
	wg.Wait()
	return nil
}

func (a *Agent) upstreamLoop(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, kind xds.ClientKind) {
	backoff := a.o.MinBackoff
	for ctx.Err() == nil {
		started := time.Now()
		err := a.stream(ctx, ads, kind)
		a.mu.Lock()
		st := a.up[kind]
		wasConnected := st.connected
		st.connected, st.synced = false, map[resourcev3.Type]bool{}
		if err != nil {
			st.lastErr = err.Error()
		}
		a.mu.Unlock()
		a.metrics.connected.WithLabelValues(string(kind)).Set(0)
		if ctx.Err() != nil {
			return
		}
		a.metrics.reconnects.WithLabelValues(string(kind)).Inc()
		if wasConnected {
			a.log.Warn("upstream stream ended: serving the cache, reconnecting", "decision", "agent_upstream_lost", "subject", string(kind), "err", err)
		}
		if time.Since(started) > a.o.MaxBackoff {
			backoff = a.o.MinBackoff // it ran well for a while: start over
		}
		wait := backoff/2 + rand.N(backoff/2+1) //nolint:gosec // jitter, not a secret
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, a.o.MaxBackoff)
	}
}

func (a *Agent) node(kind xds.ClientKind) *corev3.Node {
	id := a.o.NodeID
	if len(a.o.Kinds) > 1 {
		id += "/" + string(kind)
	}
	n := &corev3.Node{Id: id, UserAgentName: "holdfast-agent", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		xds.ClientMetadataKey: structpb.NewStringValue(string(kind)),
		"holdfast.io/agent":   structpb.NewStringValue("true"),
	}}}
	if a.o.Zone != "" || a.o.Region != "" {
		n.Locality = &corev3.Locality{Zone: a.o.Zone, Region: a.o.Region}
	}
	return n
}

// stream runs one upstream Delta stream: subscribe to every type by wildcard, saying what the
// cache holds so that nothing it has is sent again and what is gone is removed explicitly;
// then apply each response and answer it with the local clients' verdict.
func (a *Agent) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient, kind xds.ClientKind) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	for i, typ := range xds.ServedTypes {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: a.versions(kind, typ)}
		if i == 0 {
			req.Node = a.node(kind)
		}
		if err := st.Send(req); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("upstream closed the stream")
		}
		if err != nil {
			return err
		}
		a.mu.Lock()
		if u := a.up[kind]; !u.connected {
			u.connected, u.since, u.lastErr = true, time.Now(), ""
			a.log.Info("upstream connected", "kind", kind, "upstream", a.o.Upstream)
		}
		a.mu.Unlock()
		a.metrics.connected.WithLabelValues(string(kind)).Set(1)
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
		if detail := a.apply(ctx, kind, resp); detail != "" {
			ack.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: detail}
		}
		if err := st.Send(ack); err != nil {
			return err
		}
	}
}

func (a *Agent) versions(kind xds.ClientKind, typ resourcev3.Type) map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string, len(a.res[kind][typ]))
	for n, r := range a.res[kind][typ] {
		out[n] = r.Version
	}
	return out
}

// apply takes one upstream response into the cache and serves it, then waits for the local
// clients' verdict. It returns the NACK detail, "" to ACK.
func (a *Agent) apply(ctx context.Context, kind xds.ClientKind, resp *discoveryv3.DeltaDiscoveryResponse) string {
	typ := resp.GetTypeUrl()
	if !slices.Contains(xds.ServedTypes, typ) {
		return "holdfast-agent: type " + typ + " is not served"
	}
	in := make([]*xds.Resource, 0, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		res, err := xds.ResourceFromWire(typ, r.GetName(), r.GetVersion(), r.GetResource().GetValue())
		if err != nil {
			a.metrics.rejected.WithLabelValues(typ).Inc()
			a.log.Warn("upstream response rejected: keeping the previous state", "decision", "agent_rejected", "subject", r.GetName(), "type", typ, "err", err)
			return "holdfast-agent: " + err.Error()
		}
		in = append(in, res)
	}
	a.mu.Lock()
	cur := a.res[kind][typ]
	next := make(map[string]*xds.Resource, len(cur)+len(in))
	for n, r := range cur {
		next[n] = r
	}
	for _, n := range resp.GetRemovedResources() {
		delete(next, n)
	}
	for _, r := range in {
		next[r.Name] = r
	}
	total := a.countLocked() - len(cur) + len(next)
	typeSize := bytesOf(next)
	size := a.bytes - a.typeBytes[kind][typ] + typeSize
	if total > a.o.MaxResources || size > a.o.MaxCacheBytes {
		a.mu.Unlock()
		a.metrics.rejected.WithLabelValues(typ).Inc()
		a.log.Error("upstream response over the cache limits: keeping the previous state", "decision", "agent_over_limit", "subject", string(kind),
			"type", typ, "resources", total, "max_resources", a.o.MaxResources, "bytes", size, "max_bytes", a.o.MaxCacheBytes)
		return fmt.Sprintf("holdfast-agent: cache limits exceeded (%d resources of %d, %d bytes of %d)", total, a.o.MaxResources, size, a.o.MaxCacheBytes)
	}
	a.res[kind][typ] = next
	a.bytes, a.typeBytes[kind][typ] = size, typeSize
	a.up[kind].synced[typ] = true
	a.everLive = a.everLive || len(a.up[kind].synced) == len(xds.ServedTypes)
	a.confirmLocked()
	a.publishLocked([]resourcev3.Type{typ}, kind)
	a.dirty = true
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
	return a.verdict(ctx, kind, typ, in)
}

// confirmLocked ends serving from the restored cache once upstream answered every type of
// every kind on its current stream.
func (a *Agent) confirmLocked() {
	if a.restored == nil {
		return
	}
	for _, u := range a.up {
		for _, typ := range xds.ServedTypes {
			if !u.synced[typ] {
				return
			}
		}
	}
	a.log.Info("upstream confirmed the full state: serving live data", "decision", "agent_live", "subject", a.o.Upstream,
		"restored_age", time.Since(a.restored.writtenAt).Round(time.Second))
	a.restored = nil
	a.metrics.fromCache.Set(0)
	a.metrics.cacheAge.Set(0)
}

// verdict waits, at most SettleTimeout, until every local client of kind that wants one of
// the resources just received has it or has rejected it, and returns the first rejection's
// detail ("" if none).
func (a *Agent) verdict(ctx context.Context, kind xds.ClientKind, typ resourcev3.Type, in []*xds.Resource) string {
	if len(in) == 0 {
		return ""
	}
	versions := make(map[string]string, len(in))
	for _, r := range in {
		versions[r.Name] = r.Version
	}
	deadline := time.Now().Add(a.o.SettleTimeout)
	for {
		d := a.o.Downstream.Delivery(kind, typ, versions)
		pending, detail := d.Pending > 0, d.Rejection
		if detail != "" {
			a.metrics.forwarded.WithLabelValues(typ).Inc()
			a.log.Warn("forwarding a local client's rejection upstream", "decision", "agent_nack_forwarded", "subject", string(kind), "type", typ, "detail", detail)
			return detail
		}
		if !pending || time.Now().After(deadline) || ctx.Err() != nil {
			return ""
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writer writes the cache at most every WriteEvery while it changes, and once more at the end.
func (a *Agent) writer(ctx context.Context) {
	if a.o.CacheDir == "" {
		return
	}
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			a.write()
			return
		case <-a.kick:
		}
		if wait := a.o.WriteEvery - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				a.write()
				return
			case <-time.After(wait):
			}
		}
		a.write()
		last = time.Now()
	}
}

func (a *Agent) write() {
	a.mu.Lock()
	if !a.dirty {
		a.mu.Unlock()
		return
	}
	snap := make(resources, len(a.res))
	for k, types := range a.res {
		snap[k] = make(map[resourcev3.Type]map[string]*xds.Resource, len(types))
		for t, rs := range types {
			snap[k][t] = rs // replaced whole on change, never mutated: safe to read unlocked
		}
	}
	a.dirty = false
	n := a.countLocked()
	a.mu.Unlock()
	data, err := encodeCache(snap, time.Now())
	if err == nil {
		err = cache.WriteFileAtomic(a.cachePath(), data)
	}
	if err != nil {
		a.metrics.writeErrors.Inc()
		if rep := a.failing.Fail(time.Now()); rep.Log {
			a.log.Error("cache not written; the previous file stays", "decision", "agent_cache_write_failed", "subject", a.cachePath(), "err", err,
				"failures", rep.Count, "over", rep.Over.Round(time.Second), "failing_since", rep.Since)
		}
		a.mu.Lock()
		a.dirty = true
		a.mu.Unlock()
		return
	}
	a.metrics.writes.Inc()
	if n, since := a.failing.Succeed(); n > 0 {
		a.log.Info("cache written again", "decision", "agent_cache_write_recovered", "subject", a.cachePath(), "after_failures", n, "failed_for", time.Since(since).Round(time.Second))
	}
	a.mu.Lock()
	a.written, a.wroteAt = n, time.Now()
	a.mu.Unlock()
}

// Status is what /readyz reports.
type Status struct {
	// Ready: the agent has something to serve: a restored cache, or a state upstream sent in
	// full at least once (kept, and served, while upstream is away).
	Ready    bool                      `json:"ready"`
	Upstream map[string]UpstreamStatus `json:"upstream"`
	Cache    CacheStatus               `json:"cache"`
	Counts   map[xds.ClientKind]int    `json:"resources"`
}

// UpstreamStatus is one kind's upstream stream.
type UpstreamStatus struct {
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	Synced    bool      `json:"synced"` // every type answered on this stream
	LastError string    `json:"last_error,omitempty"`
}

// CacheStatus says whether restored data is served, and how old it is, and what was last
// written to disk.
type CacheStatus struct {
	ServingRestored  bool      `json:"serving_restored"`
	LastWrite        time.Time `json:"last_write,omitzero"`
	WrittenResources int       `json:"written_resources"`
	WrittenAt        time.Time `json:"written_at,omitzero"`
	AgeSeconds       float64   `json:"age_seconds,omitempty"`
	TooOld           bool      `json:"too_old,omitempty"`
}

// Status reports the agent's state.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Status{Upstream: map[string]UpstreamStatus{}, Counts: map[xds.ClientKind]int{}}
	for k, u := range a.up {
		synced := true
		for _, typ := range xds.ServedTypes {
			synced = synced && u.synced[typ]
		}
		s.Upstream[string(k)] = UpstreamStatus{Connected: u.connected, Since: u.since, Synced: synced, LastError: u.lastErr}
		s.Counts[k] = a.countKindLocked(k)
	}
	s.Ready = a.everLive || a.restored != nil
	s.Cache = CacheStatus{LastWrite: a.wroteAt, WrittenResources: a.written}
	if r := a.restored; r != nil {
		s.Cache.ServingRestored, s.Cache.WrittenAt, s.Cache.AgeSeconds, s.Cache.TooOld = true, r.writtenAt, time.Since(r.writtenAt).Seconds(), r.tooOld
	}
	return s
}
