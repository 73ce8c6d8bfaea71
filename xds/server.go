package xds

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// ServerOptions configure the ADS server.
type ServerOptions struct {
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// MaxClients bounds open ADS streams; a stream over it is refused. [10000]
	MaxClients int
}

// Server serves ADS, state-of-the-world and Delta, from a snapshot cache with one snapshot per
// client kind.
type Server struct {
	// set at construction, read-only
	Cache cachev3.SnapshotCache
	GRPC  *grpc.Server
	log   *slog.Logger

	streams *streamTracker
	cancel  context.CancelFunc
}

// NewServer builds the ADS server and the snapshot cache it serves from.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	log := opts.Logger.With("component", "xds")
	if opts.MaxClients <= 0 {
		opts.MaxClients = 10000
	}
	tracker, err := newStreamTracker(log, opts.Registry, opts.MaxClients)
	if err != nil {
		return nil, err
	}
	// ads=false on purpose: in ADS mode go-control-plane answers a request that names resources
	// only if it names every resource of that type in the snapshot. All clients of a kind share
	// one snapshot, and a gRPC client names only the services it dials, so in ADS mode it would
	// stop getting updates as soon as a second service exists. Without it, each response carries
	// exactly the resources the request names. What ads=true adds besides is the order in which
	// one snapshot's types are pushed (CDS, EDS, LDS, RDS); grpc-go does not depend on it.
	snaps := cachev3.NewSnapshotCache(false, kindHash{}, slogAdapter{log: log.With("component", "go-control-plane")})
	// Streams end when this context does, which lets GracefulStop finish.
	ctx, cancel := context.WithCancel(context.Background())
	xdsServer := serverv3.NewServer(ctx, snaps, tracker.callbacks())
	g := grpc.NewServer(
		grpc.MaxConcurrentStreams(1000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// grpc-go and Envoy clients ping at most this often when configured to.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, xdsServer)
	return &Server{Cache: snaps, GRPC: g, log: log, streams: tracker, cancel: cancel}, nil
}

// SetClientsRatio makes the server report open streams / MaxClients on g.
func (s *Server) SetClientsRatio(g prometheus.Gauge) {
	s.streams.mu.Lock()
	s.streams.ratio = g
	s.streams.setRatioLocked()
	s.streams.mu.Unlock()
}

// Stop ends every stream and stops the gRPC server, waiting at most for ctx.
func (s *Server) Stop(ctx context.Context) {
	s.cancel()
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.GRPC.Stop()
	}
}

// streamTracker logs and counts clients as their streams open and close, and counts NACKs.
type streamTracker struct {
	log        *slog.Logger
	maxClients int
	refused    prometheus.Counter

	clients *prometheus.GaugeVec
	unknown prometheus.Counter
	nacks   *prometheus.CounterVec

	// guarded by mu
	mu      sync.Mutex
	streams map[int64]streamInfo
	ratio   prometheus.Gauge // open streams / maxClients; nil until set
}

type streamInfo struct {
	flavour string // "sotw" or "delta"
	kind    ClientKind
	nodeID  string
	known   bool // node seen
}

func newStreamTracker(log *slog.Logger, reg prometheus.Registerer, maxClients int) (*streamTracker, error) {
	t := &streamTracker{
		log:        log,
		maxClients: maxClients,
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_xds_streams_refused_total", Help: "ADS streams refused because --max-clients streams were open."}),
		streams: map[int64]streamInfo{},
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_xds_connected_clients", Help: "Open ADS streams with an identified node, by client kind and flavour (sotw, delta)."}, []string{"kind", "flavour"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_xds_unknown_client_kind_total", Help: "ADS streams from clients that are neither gRPC nor Envoy; they are served as Envoy."}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_xds_nacks_total", Help: "Requests that rejected the previous response, by resource type."}, []string{"type"}),
	}
	for _, c := range []prometheus.Collector{t.clients, t.unknown, t.nacks, t.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds: register metrics: %w", err)
		}
	}
	return t, nil
}

func (t *streamTracker) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc:      func(_ context.Context, id int64, _ string) error { return t.open(id, "sotw") },
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error { return t.open(id, "delta") },
		StreamClosedFunc:    func(id int64, _ *corev3.Node) { t.close(id) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			t.close(id)
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			t.request(id, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			t.request(id, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
	}
}

// open admits a stream unless --max-clients are open: Holdfast then refuses new clients with a
// clear error and keeps serving the ones it has.
func (t *streamTracker) open(id int64, flavour string) error {
	t.mu.Lock()
	if len(t.streams) >= t.maxClients {
		t.mu.Unlock()
		t.refused.Inc()
		t.log.Warn("ADS stream refused: client limit reached", "max_clients", t.maxClients, "stream", id)
		return status.Errorf(codes.ResourceExhausted, "holdfast serves at most %d clients (--max-clients)", t.maxClients)
	}
	t.streams[id] = streamInfo{flavour: flavour}
	t.setRatioLocked()
	t.mu.Unlock()
	return nil
}

func (t *streamTracker) setRatioLocked() {
	if t.ratio != nil {
		t.ratio.Set(float64(len(t.streams)) / float64(t.maxClients))
	}
}

func (t *streamTracker) close(id int64) {
	t.mu.Lock()
	info, ok := t.streams[id]
	delete(t.streams, id)
	t.setRatioLocked()
	t.mu.Unlock()
	if ok && info.known {
		t.clients.WithLabelValues(string(info.kind), info.flavour).Dec()
		t.log.Info("client disconnected", "node", info.nodeID, "kind", info.kind, "flavour", info.flavour, "stream", id)
	}
}

// request identifies the client on its first request and records NACKs.
func (t *streamTracker) request(id int64, node *corev3.Node, typeURL, nonce, detail string, nack bool) {
	t.mu.Lock()
	info := t.streams[id]
	first := !info.known && node != nil
	if first {
		kind, known := KindOf(node)
		info = streamInfo{flavour: info.flavour, kind: kind, nodeID: node.GetId(), known: true}
		t.streams[id] = info
		if !known {
			t.unknown.Inc()
		}
		t.clients.WithLabelValues(string(kind), info.flavour).Inc()
		t.log.Info("client connected", "node", info.nodeID, "kind", kind, "known_kind", known,
			"user_agent", node.GetUserAgentName(), "flavour", info.flavour, "stream", id)
	}
	t.mu.Unlock()
	if nack {
		t.nacks.WithLabelValues(typeURL).Inc()
		t.log.Warn("client rejected a response", "node", info.nodeID, "type", typeURL, "nonce", nonce, "detail", detail)
	}
}

// slogAdapter bridges go-control-plane's logger into slog. Its per-request chatter (Infof)
// is logged at debug level; nothing is formatted for a level that is off.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) logf(l slog.Level, f string, args []any) {
	if a.log.Enabled(context.Background(), l) {
		a.log.Log(context.Background(), l, fmt.Sprintf(f, args...))
	}
}

func (a slogAdapter) Debugf(f string, args ...any) { a.logf(slog.LevelDebug, f, args) }
func (a slogAdapter) Infof(f string, args ...any)  { a.logf(slog.LevelDebug, f, args) }
func (a slogAdapter) Warnf(f string, args ...any)  { a.logf(slog.LevelWarn, f, args) }
func (a slogAdapter) Errorf(f string, args ...any) { a.logf(slog.LevelError, f, args) }
