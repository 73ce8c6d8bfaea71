// Package serve is the ADS server: it holds the published resource sets (one per client
// kind) and serves them over state-of-the-world and Delta streams — subscriptions, versions
// and nonces, ACK and NACK, bounds on what a client may make it hold, slow-client handling —
// and reports every client's state (Clients, Delivery) and every answer (Settled). It builds
// no resource; requests and responses go through the codec in serve/internal/wire.
package serve

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/holdfast/holdfast/internal/promreg"
	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve/internal/wire"
)

// ServerOptions configure the ADS server. Zero values take the defaults in brackets.
type ServerOptions struct {
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// MaxClients bounds open ADS streams; a stream over it is refused. [10000]
	MaxClients int
	// AckTimeout: a client that leaves a response unacknowledged this long cannot keep up; its
	// stream is closed (it reconnects and gets the current state). [30s]
	AckTimeout time.Duration
	// NackHistory is how many NACKs are remembered per client. [16]
	NackHistory int
	// Credentials secure the server (TLS); nil serves plaintext.
	Credentials credentials.TransportCredentials
	// MaxUnknownNames bounds, per stream, the names subscribed to that Holdfast has no resource
	// of (kept as copies); more are refused. [10000]
	MaxUnknownNames int
	// Kinds are the client kinds served (nil: every kind). A client of another kind has its
	// stream ended with the reason, is counted and logged: holdfast-agent --kinds grpc serves no
	// Envoy, and an Envoy pointed at it must hear so rather than wait for nothing.
	Kinds []resource.Kind
	// WarmingHold bounds how long an Envoy's route configurations wait for the assignments of
	// new clusters it was sent (make before break): one that never asks for an assignment
	// (it would leave its cluster warming until its own initial fetch timeout, 15 s by
	// default) then gets its routes anyway. [5s]
	WarmingHold time.Duration
}

func (o *ServerOptions) defaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 10000
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.NackHistory <= 0 {
		o.NackHistory = 16
	}
	if o.MaxUnknownNames <= 0 {
		o.MaxUnknownNames = 10000
	}
	if o.WarmingHold <= 0 {
		o.WarmingHold = 5 * time.Second
	}
}

// Server serves ADS, state-of-the-world and Delta, from the latest Snapshots.
//
// Each stream computes what its client lacks from the current snapshot in its own goroutine:
// publishing only swaps a pointer and wakes every stream, so no client can delay another or
// make the publisher wait. A stream has at most one unacknowledged response per type in
// flight; changes that arrive meanwhile are coalesced into the next response, so a slow
// client gets fewer, newer responses rather than a growing queue. A client that leaves a
// response unacknowledged for AckTimeout is disconnected and counted.
//
// Versions are per resource and content-derived. A response carries only what the client does
// not have yet: for Delta and for SotW EDS and RDS, just the changed resources; SotW LDS and
// CDS must carry the whole set. A version the client rejected is never sent to it again: the
// stream waits for a new version.
type Server struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer

	// set at construction, read-only
	GRPC    *grpc.Server
	opts    ServerOptions
	log     *slog.Logger
	metrics serverMetrics
	done    chan struct{} // closed by Stop: every stream ends

	// atomic: swapped whole, read without a lock
	snaps   atomic.Pointer[Snapshots]
	settled atomic.Pointer[chan struct{}] // see Settled

	// guarded by pubMu: the indexes last published, reused when unchanged (see Publish)
	pubMu   sync.Mutex
	indexes map[resource.Kind]map[resource.Type]*typeIndex

	// guarded by mu
	mu      sync.Mutex
	streams map[int64]*stream
	nextID  int64
	ratio   prometheus.Gauge // open streams / MaxClients; nil until set

	stopOnce sync.Once // closes done
}

type serverMetrics struct {
	refused, unknown, slow    prometheus.Counter
	badRequests               *prometheus.CounterVec
	refusedNames              prometheus.Counter
	unservedKinds             *prometheus.CounterVec
	unserved                  *prometheus.CounterVec
	clients                   *prometheus.GaugeVec
	nacks, responses, resSent *prometheus.CounterVec
	bytes                     *prometheus.CounterVec
	ackSeconds                prometheus.Histogram
	lastAck                   prometheus.Gauge
	pushLatency               *prometheus.HistogramVec
}

// NewServer builds the ADS server. It serves nothing until the first SetSnapshots.
func NewServer(opts ServerOptions) (*Server, error) {
	opts.defaults()
	s := &Server{
		opts:    opts,
		log:     opts.Logger.With("component", "xds"),
		done:    make(chan struct{}),
		streams: map[int64]*stream{},
		metrics: serverMetrics{
			refused: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_streams_refused_total", Help: "ADS streams refused because --max-clients streams were open."}),
			unknown: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_unknown_client_kind_total", Help: "ADS streams from clients that are neither gRPC nor Envoy; they are served as Envoy."}),
			slow: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_slow_clients_disconnected_total", Help: "Streams closed because the client left a response unacknowledged for --xds-ack-timeout."}),
			badRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_bad_requests_total",
				Help: "Requests Holdfast could not use, by reason (malformed: not a valid discovery request; too_large: over gRPC's receive limit; no_type_url; unknown_type: not an xDS type). The client's stream is closed with the error; other streams are unaffected."}, []string{"reason"}),
			refusedNames: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "holdfast_xds_refused_names_total",
				Help: "Names a client subscribed to and Holdfast refused: it has no resource of them and the stream already held --xds-max-unknown-names such names, or the name is over 1 KiB."}),
			unservedKinds: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_unserved_client_kind_refused_total",
				Help: "Streams ended because their client is of a kind this server does not serve (holdfast-agent --kinds), by kind."}, []string{"kind"}),
			unserved: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_unserved_type_subscriptions_total",
				Help: "Subscriptions to xDS types Holdfast has no resources of (SDS, RTDS, ECDS, VHDS, ...), by type: answered as for resources it does not have."}, []string{"type"}),
			clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "holdfast_xds_connected_clients", Help: "Open ADS streams with an identified node, by client kind and flavour (sotw, delta)."}, []string{"kind", "flavour"}),
			nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_nacks_total", Help: "Responses a client rejected, by resource type."}, []string{"type"}),
			responses: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_responses_total", Help: "Responses sent, by resource type and flavour."}, []string{"type", "flavour"}),
			resSent: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_resources_sent_total", Help: "Resources sent in responses, by type (a resource sent to n clients counts n times)."}, []string{"type"}),
			bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "holdfast_xds_resource_bytes_sent_total", Help: "Serialised resource bytes sent, by flavour."}, []string{"flavour"}),
			ackSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name: "holdfast_xds_ack_seconds", Help: "Time from sending a response to the client's ACK or NACK.",
				Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
			pushLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "holdfast_xds_push_latency_seconds",
				Help:    "From the Kubernetes event reaching Holdfast to the client's ACK of the change, by type (changes to clients already served; not initial pushes).",
				Buckets: prometheus.ExponentialBuckets(0.005, 2, 15)}, []string{"type"}),
			lastAck: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "holdfast_xds_last_ack_timestamp_seconds", Help: "When a client last accepted a response (Unix time); compare with holdfast_xds_last_publish_timestamp_seconds."}),
		},
	}
	m := s.metrics
	if err := promreg.Register(opts.Registry, "xds", m.refused, m.unknown, m.slow, m.badRequests, m.refusedNames, m.unservedKinds, m.unserved, m.clients, m.nacks, m.responses, m.resSent, m.bytes, m.ackSeconds, m.lastAck, m.pushLatency); err != nil {
		return nil, err
	}
	gopts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(wire.NewCodec()),
		grpc.MaxConcurrentStreams(1000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// grpc-go and Envoy clients ping at most this often when configured to.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if opts.Credentials != nil {
		gopts = append(gopts, grpc.Creds(opts.Credentials))
	}
	s.GRPC = grpc.NewServer(gopts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.GRPC, s)
	return s, nil
}

// SetSnapshots makes snaps the state every client is served, and wakes every stream. It never
// blocks on a client.
func (s *Server) SetSnapshots(snaps Snapshots) {
	s.snaps.Store(&snaps)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		st.kick()
	}
}

// Snapshot returns what clients of a kind are served now (nil before the first publish).
func (s *Server) Snapshot(kind resource.Kind) *Snapshot { return s.snapshot(kind) }

func (s *Server) snapshot(kind resource.Kind) *Snapshot {
	p := s.snaps.Load()
	if p == nil {
		return nil
	}
	return (*p)[kind]
}

// ClientCapacity reports the open ADS streams and how many the server allows.
func (s *Server) ClientCapacity() (open, limit int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams), s.opts.MaxClients
}

// SetClientsRatio makes the server report open streams / MaxClients on g.
func (s *Server) SetClientsRatio(g prometheus.Gauge) {
	s.mu.Lock()
	s.ratio = g
	s.setRatioLocked()
	s.mu.Unlock()
}

func (s *Server) setRatioLocked() {
	if s.ratio != nil {
		s.ratio.Set(float64(len(s.streams)) / float64(s.opts.MaxClients))
	}
}

// Stop ends every stream and stops the gRPC server, waiting at most for ctx.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() { close(s.done) })
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.GRPC.Stop()
	}
}

// open admits a stream unless --max-clients are open: Holdfast then refuses new clients with a
// clear error and keeps serving the ones it has.
func (s *Server) open(flavour string) (*stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.streams) >= s.opts.MaxClients {
		s.metrics.refused.Inc()
		s.log.Warn("ADS stream refused: client limit reached", "decision", "client_refused", "max_clients", s.opts.MaxClients)
		return nil, status.Errorf(codes.ResourceExhausted, "holdfast serves at most %d clients (--max-clients)", s.opts.MaxClients)
	}
	s.nextID++
	st := newStream(s, s.nextID, flavour)
	s.streams[st.id] = st
	s.setRatioLocked()
	return st, nil
}

func (s *Server) close(st *stream, err error) {
	s.mu.Lock()
	delete(s.streams, st.id)
	s.setRatioLocked()
	s.mu.Unlock()
	st.mu.Lock()
	identified, kind, node := st.identified, st.kind, st.nodeID
	st.mu.Unlock()
	if identified {
		s.metrics.clients.WithLabelValues(string(kind), st.flavour).Dec()
		s.log.Info("client disconnected", "node", node, "kind", kind, "flavour", st.flavour, "stream", st.id, "err", err)
	}
}

// StreamAggregatedResources serves one state-of-the-world ADS stream.
func (s *Server) StreamAggregatedResources(gs discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	st, err := s.open(flavourSotW)
	if err != nil {
		return err
	}
	previous := wire.NewPrevious()
	recv := recvWire(s, st, gs, func() *wire.SotWRequest {
		return &wire.SotWRequest{Req: new(discoveryv3.DiscoveryRequest), Known: st.decodeIndex, Previous: previous}
	})
	err = serve(gs.Context(), s, st, recv, sendWire(gs), st.onSotwRequest, st.pushSotw)
	s.close(st, err)
	return err
}

// DeltaAggregatedResources serves one incremental ADS stream.
func (s *Server) DeltaAggregatedResources(gs discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	st, err := s.open(flavourDelta)
	if err != nil {
		return err
	}
	recv := recvWire(s, st, gs, func() *wire.DeltaRequest {
		return &wire.DeltaRequest{Req: new(discoveryv3.DeltaDiscoveryRequest), Known: st.decodeIndex}
	})
	err = serve(gs.Context(), s, st, recv, sendWire(gs), st.onDeltaRequest, st.pushDelta)
	s.close(st, err)
	return err
}

// recvWire receives requests into what next makes (see wireCodec). A request that ends the
// stream because Holdfast cannot use it — one that does not decode, or one over gRPC's size
// limit — is counted and logged; other receive errors (the client went away) are not the
// client's input.
func recvWire[R wire.Request](s *Server, st *stream, gs grpc.ServerStream, next func() R) func() (R, error) {
	return func() (R, error) {
		r := next()
		err := gs.RecvMsg(r)
		switch {
		case err == nil:
		case r.DecodeErr() != nil:
			s.badRequest(st, "malformed", r.DecodeErr())
		case status.Code(err) == codes.ResourceExhausted:
			s.badRequest(st, "too_large", err)
		}
		return r, err
	}
}

// badRequest counts and logs a request refused for reason; the caller ends the stream with err.
func (s *Server) badRequest(st *stream, reason string, err error) {
	s.metrics.badRequests.WithLabelValues(reason).Inc()
	st.mu.Lock()
	node := st.nodeID
	st.mu.Unlock()
	s.log.Warn("bad request: stream closed", "decision", "bad_request", "reason", reason, "node", node,
		"flavour", st.flavour, "stream", st.id, "err", err)
}

// sendWire sends pre-serialised responses on a stream (see wireCodec).
func sendWire(gs grpc.ServerStream) func(*wire.Response) error {
	return func(w *wire.Response) error { return gs.SendMsg(w) }
}

// serve runs one stream: requests are read by one goroutine, responses written by another, and
// everything else happens here, one event at a time.
func serve[Req, Resp any](ctx context.Context, s *Server, st *stream,
	recv func() (Req, error), send func(Resp) error,
	onRequest func(Req) error, push func(now time.Time, enqueue func(Resp) bool) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reqs := make(chan Req)
	errc := make(chan error, 2)
	go func() {
		for {
			r, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	// One unacknowledged response per type is in flight at most, so this never fills for a
	// client that follows the protocol; if it does, the client is not reading.
	sendq := make(chan Resp, 16)
	go func() {
		for {
			select {
			case r := <-sendq:
				if err := send(r); err != nil {
					errc <- err
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	enqueue := func(r Resp) bool {
		select {
		case sendq <- r:
			return true
		default:
			return false
		}
	}
	tick := time.NewTicker(min(s.opts.AckTimeout/4, time.Second, s.opts.WarmingHold))
	defer tick.Stop()
	for {
		var err error
		select {
		case <-s.done:
			return status.Error(codes.Unavailable, "holdfast is shutting down")
		case <-ctx.Done():
			return ctx.Err()
		case err = <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case r := <-reqs:
			if err = onRequest(r); err == nil {
				err = push(time.Now(), enqueue)
			}
		case <-st.wake:
			err = push(time.Now(), enqueue)
		case now := <-tick.C:
			if err = st.checkSlow(now); err == nil && st.holdingForWarming() {
				err = push(now, enqueue) // a route waiting for assignments goes when WarmingHold ends
			}
		}
		if err != nil {
			return err
		}
	}
}

// ClientStatus is what the server knows of one connected client.
type ClientStatus struct {
	NodeID  string
	Node    *corev3.Node
	Kind    resource.Kind
	Flavour string // sotw or delta
	Since   time.Time
	Types   map[resourcev3.Type]TypeStatus
	// Nacks are the client's latest rejections, oldest first.
	Nacks []NackRecord
}

// TypeStatus is one client's subscription to one resource type.
type TypeStatus struct {
	Wildcard bool
	Names    []string          // subscribed by name, sorted
	Sent     map[string]string // what the client was sent and may hold, name → version
	// AckedVersion is the version of the last response the client accepted. Rejected is every
	// resource whose latest version sent the client rejected (name → version), and Nacked the
	// latest rejection while any is left.
	AckedVersion string
	Nacked       *NackRecord
	Rejected     map[string]string
	InFlight     bool // a response awaits the client's ACK or NACK
	// Refused counts the names the client subscribed to that were refused: Holdfast has no
	// resource of them and the stream held its budget of such names (--xds-max-unknown-names).
	Refused int
	// InFlightResources are that response's resources, name → version ("" = removal).
	InFlightResources map[string]string
}

// Clients returns the status of every connected client, in connection order.
func (s *Server) Clients() []ClientStatus {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	slices.SortFunc(streams, func(a, b *stream) int { return cmp.Compare(a.id, b.id) })
	out := make([]ClientStatus, 0, len(streams))
	for _, st := range streams {
		out = append(out, st.status())
	}
	return out
}
