package serve

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve/internal/wire"
)

const (
	flavourSotW  = "sotw"
	flavourDelta = "delta"
)

// NackRecord is one response a client rejected.
type NackRecord struct {
	At      time.Time
	Type    resourcev3.Type
	Version string // the response's version (SotW) or the snapshot's (Delta)
	Nonce   string
	// Resources are the resources of the rejected response, as name → version.
	Resources map[string]string
	Detail    string
}

// stream is one client's ADS stream. Its run loop (serve) owns the protocol state; the mutex
// lets the admin side read it.
type stream struct {
	// set at construction, read-only
	srv     *Server
	id      int64
	flavour string
	wake    chan struct{} // capacity 1: "a new snapshot is out"
	since   time.Time

	// guarded by mu
	mu         sync.Mutex
	identified bool // the node has been seen
	nodeID     string
	node       *corev3.Node
	loc        resource.Locality
	kind       resource.Kind
	types      map[resourcev3.Type]*subscription // only types typeKnown says are xDS types
	nacks      []NackRecord                      // newest last, at most NackHistory
	nonces     int64
	// unknown is how many subscribed names Holdfast had no resource of, over every type (at
	// most MaxUnknownNames); refusedLogged says a refusal of names was logged.
	unknown       int
	refusedLogged bool
	// warming is, for an Envoy, every cluster it was sent whose assignment it has not been
	// sent yet, since warmingSince: its route configurations wait for them (warmingHoldsLocked).
	warming      map[string]struct{}
	warmingSince time.Time
}

// warmingHoldsLocked says whether a push of typ waits: an Envoy's RouteConfigurations do
// while a cluster it was sent has no assignment sent after it. Envoy keeps a new EDS cluster
// warming, out of routing, until its assignment arrives; a route to it applied before then
// answers 503 (no cluster) for every request in between — seen for a re-created service's new
// incarnation. Make before break: the route goes after the assignment, on the same stream, so
// Envoy applies it after the cluster is warm.
func (st *stream) warmingHoldsLocked(typ resourcev3.Type, now time.Time) bool {
	return typ == resourcev3.RouteType && len(st.warming) > 0 && now.Sub(st.warmingSince) < st.srv.opts.WarmingHold
}

// noteWarmingLocked keeps warming up to date with a response of typ just sent to an Envoy.
func (st *stream) noteWarmingLocked(typ resourcev3.Type, ts *subscription, now time.Time) {
	if st.kind != resource.KindEnvoy {
		return
	}
	switch typ {
	case resourcev3.ClusterType:
		eds := st.types[resourcev3.EndpointType]
		for _, r := range ts.inflightOut {
			if v, ok := eds.sentVersionOf(r.Name); ok && v != "" {
				continue // its assignment went out before it: Envoy warms it at once
			}
			if len(st.warming) == 0 {
				st.warming, st.warmingSince = map[string]struct{}{}, now
			}
			st.warming[r.Name] = struct{}{}
		}
		for _, n := range ts.inflightRemoved {
			delete(st.warming, n)
		}
	case resourcev3.EndpointType:
		for _, r := range ts.inflightOut {
			delete(st.warming, r.Name)
		}
	}
	if len(st.warming) == 0 {
		st.warming = nil
	}
}

// holdingForWarming says whether a route push waits for assignments (for the stream's timer:
// the hold ends by itself after ServerOptions.WarmingHold).
func (st *stream) holdingForWarming() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.warming) > 0
}

// subscription is what one stream knows of one resource type, in either protocol.
type subscription struct {
	subscribed bool
	wildcard   bool
	names      nameSet
	// sent is the version of every resource the client was sent and may have, accepted or
	// rejected: what it has, or what it refused and must not get again. "" (Delta) means the
	// client was told the resource does not exist. A SotW full-state type (LDS, CDS) keeps the
	// list it last sent in sotw.full instead, and sent is empty.
	sent sentSet
	// answered says a response of this type went out on this stream.
	answered bool
	// index and dirty let a wake-up skip a type whose resources and subscription are unchanged.
	index *typeIndex
	dirty bool

	inflight        string // nonce of the unacknowledged response, "" if none
	inflightAt      time.Time
	inflightVersion string
	inflightOut     []*resource.Resource // what the response in flight carries
	inflightRemoved []string             // and what it removes (Delta)
	inflightEventAt time.Time            // when the Kubernetes event it carries reached Holdfast (zero: not a change)

	// What the client acknowledged is sent minus what nacked lists: no second map per stream
	// (at 1,000 clients × 1,000 resources that map alone held 170 MB).
	ackedVersion string
	// rejected is every resource whose version the client rejected, name → version, until it
	// accepts another version of it; nacked is the latest rejection while any is left.
	rejected map[string]string
	nacked   *NackRecord

	// unknown is how many of names the index had no resource of when they were subscribed
	// (see admitLocked); refused counts the names refused over the stream's budget.
	unknown, refused int

	// sotw is what only the state-of-the-world protocol keeps (nil on a Delta stream, which
	// needs nothing more: what it told a client does not exist is in sent as "").
	sotw *sotwState
}

func newStream(s *Server, id int64, flavour string) *stream {
	return &stream{srv: s, id: id, flavour: flavour, wake: make(chan struct{}, 1), since: time.Now(),
		types: map[resourcev3.Type]*subscription{}}
}

func (st *stream) kick() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// identify takes the client's identity from the first request that carries a node, and refuses
// a client of a kind the server does not serve.
func (st *stream) identify(node *corev3.Node) error {
	st.mu.Lock()
	if st.identified {
		st.mu.Unlock()
		return nil
	}
	kind, recognised := resource.KindOf(node)
	if kinds := st.srv.opts.Kinds; kinds != nil && !slices.Contains(kinds, kind) {
		st.mu.Unlock()
		st.srv.metrics.unservedKinds.WithLabelValues(string(kind)).Inc()
		st.srv.log.Warn("client refused: this server does not serve its kind", "decision", "client_kind_refused", "subject", node.GetId(),
			"kind", kind, "served", kinds, "user_agent", node.GetUserAgentName(), "stream", st.id)
		return grpcstatus.Errorf(codes.FailedPrecondition, "this server serves %v clients only, not %s (holdfast-agent --kinds)", kinds, kind)
	}
	st.identified, st.node, st.nodeID, st.kind, st.loc = true, node, node.GetId(), kind, resource.LocalityOf(node)
	st.mu.Unlock()
	if !recognised {
		st.srv.metrics.unknown.Inc()
	}
	st.srv.metrics.clients.WithLabelValues(string(kind), st.flavour).Inc()
	st.srv.log.Info("client connected", "node", node.GetId(), "kind", kind, "known_kind", recognised,
		"user_agent", node.GetUserAgentName(), "flavour", st.flavour, "stream", st.id)
	return nil
}

func (st *stream) subscriptionLocked(typ resourcev3.Type) *subscription {
	ts := st.types[typ]
	if ts == nil {
		ts = &subscription{}
		if st.flavour == flavourSotW {
			ts.sotw = &sotwState{}
		}
		st.types[typ] = ts
	}
	return ts
}

// fullState says whether a SotW response of this type must carry every resource the client
// wants (LDS, CDS) or may carry only changed ones (RDS, EDS).
func fullState(typ resourcev3.Type) bool {
	return typ == resourcev3.ListenerType || typ == resourcev3.ClusterType
}

// settleLocked handles the client's ACK or NACK of the response in flight.
func (st *stream) settleLocked(typ resourcev3.Type, ts *subscription, detail *status.Status, now time.Time) {
	st.srv.metrics.ackSeconds.Observe(now.Sub(ts.inflightAt).Seconds())
	if detail != nil {
		res := make(map[string]string, len(ts.inflightOut)+len(ts.inflightRemoved))
		for _, r := range ts.inflightOut {
			res[r.Name] = r.Version
		}
		for _, n := range ts.inflightRemoved {
			res[n] = ""
		}
		rec := NackRecord{At: now, Type: typ, Version: ts.inflightVersion, Nonce: ts.inflight, Resources: res, Detail: detail.GetMessage()}
		ts.nacked = &rec
		if ts.rejected == nil {
			ts.rejected = map[string]string{}
		}
		for _, r := range ts.inflightOut {
			ts.rejected[r.Name] = r.Version
		}
		st.nacks = append(st.nacks, rec)
		if len(st.nacks) > st.srv.opts.NackHistory {
			st.nacks = slices.Delete(st.nacks, 0, len(st.nacks)-st.srv.opts.NackHistory)
		}
		st.srv.metrics.nacks.WithLabelValues(typ).Inc()
		st.srv.log.Warn("client rejected a response; it will not be sent that version again", "decision", "client_nack", "subject", st.nodeID,
			"type", typ, "version", ts.inflightVersion, "nonce", ts.inflight, "resources", len(res), "detail", detail.GetMessage())
	} else {
		ts.ackedVersion = ts.inflightVersion
		for _, r := range ts.inflightOut {
			delete(ts.rejected, r.Name) // a version of it was accepted
		}
		if len(ts.rejected) == 0 {
			ts.rejected, ts.nacked = nil, nil
		}
		st.srv.metrics.lastAck.SetToCurrentTime()
		if !ts.inflightEventAt.IsZero() {
			st.srv.metrics.pushLatency.WithLabelValues(typ).Observe(now.Sub(ts.inflightEventAt).Seconds())
		}
	}
	ts.inflight, ts.inflightOut, ts.inflightRemoved = "", nil, nil
	st.srv.notifySettled()
}

// incremental says whether only the resources idx lists as changed can differ from what this
// type's client was last pushed: its subscription is unchanged and idx was built from the
// index of its last push.
func (ts *subscription) incremental(idx *typeIndex) bool {
	return ts.index != nil && !ts.dirty && idx.base == weak.Make(ts.index)
}

func (st *stream) nextNonceLocked() string {
	st.nonces++
	return strconv.FormatInt(st.nonces, 36)
}

// onRequest does what every request needs: identify the client, check the type, settle the
// response in flight when the request's nonce acknowledges it (a stale nonce acknowledges
// nothing), then let subscribe apply the request's subscription (first: the type's first
// request on this stream), all under st.mu.
func (st *stream) onRequest(node *corev3.Node, typ resourcev3.Type, nonce string, detail *status.Status, subscribe func(ts *subscription, first bool)) error {
	if err := st.identify(node); err != nil {
		return err
	}
	if typ == "" {
		err := grpcstatus.Error(codes.InvalidArgument, "request without type_url")
		st.srv.badRequest(st, "no_type_url", err)
		return err
	}
	if !resource.IsXDS(typ) {
		err := grpcstatus.Errorf(codes.InvalidArgument, "type_url %q is not an xDS resource type", clip(typ, 200))
		st.srv.badRequest(st, "unknown_type", err)
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.types[typ]; !ok && !resource.IsServed(typ) {
		st.srv.metrics.unserved.WithLabelValues(typ).Inc()
		st.srv.log.Info("client subscribes to a type Holdfast has no resources of: answered as for resources it does not have",
			"node", st.nodeID, "type", typ, "flavour", st.flavour, "stream", st.id)
	}
	ts := st.subscriptionLocked(typ)
	if nonce != "" && nonce == ts.inflight {
		st.settleLocked(typ, ts, detail, time.Now())
	}
	first := !ts.subscribed
	ts.subscribed = true
	if first {
		ts.dirty = true
	}
	subscribe(ts, first)
	return nil
}

// withoutWildcard returns names without "*" (a copy only when there is one to drop).
func withoutWildcard(names []string) []string {
	if !slices.Contains(names, "*") {
		return names
	}
	return slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "*" })
}

// indexLocked is the index a type's names are best expressed against: the one last pushed, else
// the one the next push will use.
func (st *stream) indexLocked(typ resourcev3.Type, ts *subscription) *typeIndex {
	if ts.index != nil {
		return ts.index
	}
	if snap := st.srv.snapshot(st.kind); snap != nil {
		return snap.index(typ).at(st.loc)
	}
	return noResources
}

// decodeIndex is the index a request's names of type typ are looked up in while it is decoded
// (see wire.SotWRequest): the current one of the client's kind, nil before the client said who it is.
func (st *stream) decodeIndex(typ string) wire.Index {
	st.mu.Lock()
	identified, kind := st.identified, st.kind
	st.mu.Unlock()
	if !identified {
		return nil
	}
	if snap := st.srv.snapshot(kind); snap != nil {
		if idx, ok := snap.types[typ]; ok {
			return idx
		}
	}
	return nil // an untyped nil: not an index
}

// canonicalLocked returns the published resource's own copy of a subscribed name, when it
// exists: a thousand streams subscribed to the same names then share one copy of each, and
// the request they came in can be collected.
func (st *stream) canonicalLocked(typ resourcev3.Type, n string) string {
	if r, ok := st.srv.snapshot(st.kind).Get(typ, n); ok {
		return r.Name
	}
	return strings.Clone(n) // a request's names share one allocation: keep only this one
}

// pushTypes walks the types in push order and, for each with nothing in flight whose
// resources or subscription changed since its last push, enqueues what respond builds (the
// zero Resp: nothing to send).
func pushTypes[Resp comparable](st *stream, now time.Time, enqueue func(Resp) bool,
	respond func(resourcev3.Type, *subscription, *typeIndex, time.Time) Resp) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	snap := st.srv.snapshot(st.kind)
	if snap == nil {
		return nil // nothing published yet: the first snapshot wakes every stream
	}
	var none Resp
	for _, typ := range resource.PushOrder {
		ts := st.types[typ]
		if ts == nil || !ts.subscribed || ts.inflight != "" || st.warmingHoldsLocked(typ, now) {
			continue
		}
		idx := snap.index(typ).at(st.loc)
		if idx == ts.index && !ts.dirty {
			continue
		}
		changeDriven := ts.index != nil && !ts.dirty // not a first push or a new subscription
		resp := respond(typ, ts, idx, now)
		ts.index, ts.dirty = idx, false
		ts.names.rebase(idx)
		ts.sent.rebase(idx)
		if resp == none {
			continue
		}
		st.noteWarmingLocked(typ, ts, now)
		ts.inflightEventAt = time.Time{}
		if changeDriven {
			ts.inflightEventAt = idx.eventAt
		}
		if !enqueue(resp) {
			return st.slowLocked(typ, "its send queue is full")
		}
	}
	return nil
}

// full is the list a SotW full-state type last sent (nil: none, or not such a type).
func (ts *subscription) full() []*resource.Resource {
	if ts.sotw == nil {
		return nil
	}
	return ts.sotw.full
}

// sentVersion returns the version of name the client was sent and may have.
func (ts *subscription) sentVersion(name string) (string, bool) {
	full := ts.full()
	if full == nil {
		return ts.sent.get(name)
	}
	// full is sorted by name: the index's list, or the wanted names in order.
	if i, ok := byName(full, name); ok {
		return full[i].Version, true
	}
	return "", false
}

// sentVersionOf is sentVersion on a subscription that may not exist (nil: nothing sent).
func (ts *subscription) sentVersionOf(name string) (string, bool) {
	if ts == nil {
		return "", false
	}
	return ts.sentVersion(name)
}

// sentVersions returns what the client has, name → version.
func (ts *subscription) sentVersions() map[string]string {
	full := ts.full()
	if full == nil {
		return ts.sent.all()
	}
	out := make(map[string]string, len(full))
	for _, r := range full {
		out[r.Name] = r.Version
	}
	return out
}

// sentLocked marks a response as in flight and counts it.
func (st *stream) sentLocked(typ resourcev3.Type, ts *subscription, nonce, version string, out []*resource.Resource, removed []string, resp *wire.Response, now time.Time) {
	ts.inflight, ts.inflightAt, ts.inflightVersion, ts.answered = nonce, now, version, true
	ts.inflightOut, ts.inflightRemoved = out, removed
	m := st.srv.metrics
	m.responses.WithLabelValues(typ, st.flavour).Inc()
	m.resSent.WithLabelValues(typ).Add(float64(resp.Resources()))
	m.bytes.WithLabelValues(st.flavour).Add(float64(resp.Size()))
}

// status copies what the stream knows for the admin side.
func (st *stream) status() ClientStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	cs := ClientStatus{NodeID: st.nodeID, Node: st.node, Kind: st.kind, Flavour: st.flavour, Since: st.since,
		Types: make(map[resourcev3.Type]TypeStatus, len(st.types)), Nacks: slices.Clone(st.nacks)}
	for typ, ts := range st.types {
		t := TypeStatus{Wildcard: ts.wildcard, Names: slices.Clone(ts.names.sortedNames()), Sent: ts.sentVersions(),
			AckedVersion: ts.ackedVersion, Nacked: ts.nacked, Rejected: maps.Clone(ts.rejected), InFlight: ts.inflight != "", Refused: ts.refused}
		if t.InFlight {
			t.InFlightResources = make(map[string]string, len(ts.inflightOut)+len(ts.inflightRemoved))
			for _, r := range ts.inflightOut {
				t.InFlightResources[r.Name] = r.Version
			}
			for _, n := range ts.inflightRemoved {
				t.InFlightResources[n] = ""
			}
		}
		cs.Types[typ] = t
	}
	return cs
}

// checkSlow closes the stream of a client that has left a response unacknowledged too long.
func (st *stream) checkSlow(now time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for typ, ts := range st.types {
		if ts.inflight != "" && now.Sub(ts.inflightAt) > st.srv.opts.AckTimeout {
			return st.slowLocked(typ, "a response has gone unacknowledged for "+now.Sub(ts.inflightAt).Round(time.Second).String())
		}
	}
	return nil
}

func (st *stream) slowLocked(typ resourcev3.Type, why string) error {
	st.srv.metrics.slow.Inc()
	st.srv.log.Warn("client too slow: disconnecting it (it reconnects and gets the current state)", "decision", "client_slow", "subject", st.nodeID,
		"kind", st.kind, "flavour", st.flavour, "type", typ, "why", why, "stream", st.id)
	return grpcstatus.Errorf(codes.Unavailable, "holdfast: client too slow (%s): reconnect", why)
}
