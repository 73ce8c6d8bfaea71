package xds

import (
	"fmt"
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
	mu     sync.Mutex
	known  bool // the node has been seen
	nodeID string
	node   *corev3.Node
	loc    Locality
	kind   ClientKind
	types  map[resourcev3.Type]*typeState // only types typeKnown says are xDS types
	nacks  []NackRecord                   // newest last, at most NackHistory
	nonces int64
	// unknown is how many subscribed names Holdfast had no resource of, over every type (at
	// most MaxUnknownNames); refusedLogged says a refusal of names was logged.
	unknown       int
	refusedLogged bool
}

// typeState is what one stream knows of one resource type.
type typeState struct {
	subscribed bool
	wildcard   bool
	names      nameSet
	// sent is the version of every resource the client was sent and may hold, accepted or
	// rejected: what it has, or what it refused and must not get again. "" (Delta) means the
	// client was told the resource does not exist. A SotW full-state type (LDS, CDS) keeps the
	// list it last sent in held instead, and sent is empty.
	sent sentSet
	held []*Resource
	// answered says a response of this type went out on this stream.
	answered bool
	// version is the SotW version_info of the last response; sentOnce says one went out.
	version  string
	sentOnce bool
	// clientVersion is the version a reconnecting SotW client says it has (trusted only for a
	// wildcard full-state type: see sotwResponseLocked).
	clientVersion string
	// index and dirty let a wake-up skip a type whose resources and subscription are unchanged.
	index *typeIndex
	dirty bool

	// setHash is the XOR of the hashes of the resources a client subscribed by name has
	// (see setVersion).
	setHash uint64

	inflight        string // nonce of the unacknowledged response, "" if none
	inflightAt      time.Time
	inflightVersion string
	inflightOut     []*Resource // what the response in flight carries
	inflightRemoved []string    // and what it removes (Delta)
	inflightEventAt time.Time   // when the Kubernetes event it carries reached Holdfast (zero: not a change)

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
}

func newStream(s *Server, id int64, flavour string) *stream {
	return &stream{srv: s, id: id, flavour: flavour, wake: make(chan struct{}, 1), since: time.Now(),
		types: map[resourcev3.Type]*typeState{}}
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
	if st.known {
		st.mu.Unlock()
		return nil
	}
	kind, knownKind := KindOf(node)
	if kinds := st.srv.opts.Kinds; kinds != nil && !slices.Contains(kinds, kind) {
		st.mu.Unlock()
		st.srv.metrics.unservedKinds.WithLabelValues(string(kind)).Inc()
		st.srv.log.Warn("client refused: this server does not serve its kind", "decision", "client_kind_refused", "subject", node.GetId(),
			"kind", kind, "served", kinds, "user_agent", node.GetUserAgentName(), "stream", st.id)
		return grpcstatus.Errorf(codes.FailedPrecondition, "this server serves %v clients only, not %s (holdfast-agent --kinds)", kinds, kind)
	}
	st.known, st.node, st.nodeID, st.kind, st.loc = true, node, node.GetId(), kind, localityOf(node)
	st.mu.Unlock()
	if !knownKind {
		st.srv.metrics.unknown.Inc()
	}
	st.srv.metrics.clients.WithLabelValues(string(kind), st.flavour).Inc()
	st.srv.log.Info("client connected", "node", node.GetId(), "kind", kind, "known_kind", knownKind,
		"user_agent", node.GetUserAgentName(), "flavour", st.flavour, "stream", st.id)
	return nil
}

func (st *stream) typeStateLocked(typ resourcev3.Type) *typeState {
	ts := st.types[typ]
	if ts == nil {
		ts = &typeState{}
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
func (st *stream) settleLocked(typ resourcev3.Type, ts *typeState, detail *status.Status, now time.Time) {
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
func (ts *typeState) incremental(idx *typeIndex) bool {
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
func (st *stream) onRequest(node *corev3.Node, typ resourcev3.Type, nonce string, detail *status.Status, subscribe func(ts *typeState, first bool)) error {
	if err := st.identify(node); err != nil {
		return err
	}
	if typ == "" {
		err := grpcstatus.Error(codes.InvalidArgument, "request without type_url")
		st.srv.badRequest(st, "no_type_url", err)
		return err
	}
	if !typeKnown(typ) {
		err := grpcstatus.Errorf(codes.InvalidArgument, "type_url %q is not an xDS resource type", clip(typ, 200))
		st.srv.badRequest(st, "unknown_type", err)
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.types[typ]; !ok && !typeServed(typ) {
		st.srv.metrics.unserved.WithLabelValues(typ).Inc()
		st.srv.log.Info("client subscribes to a type Holdfast has no resources of: answered as for resources it does not have",
			"node", st.nodeID, "type", typ, "flavour", st.flavour, "stream", st.id)
	}
	ts := st.typeStateLocked(typ)
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

// onSotwRequest applies a state-of-the-world request: the client's full list of wanted names.
func (st *stream) onSotwRequest(r *sotwRequest) error {
	req := r.req
	typ := req.GetTypeUrl()
	return st.onRequest(req.GetNode(), typ, req.GetResponseNonce(), req.GetErrorDetail(), func(ts *typeState, first bool) {
		if first {
			ts.clientVersion = req.GetVersionInfo()
		}
		if r.repeated {
			return // the names of the previous request of this type, which ts holds
		}
		names := req.GetResourceNames()
		wildcard := slices.Contains(names, "*") || (fullState(typ) && len(names) == 0 && (first || ts.wildcard))
		if wildcard == ts.wildcard && sameNames(&ts.names, names) {
			return
		}
		idx := st.indexLocked(typ, ts)
		names = st.admitLocked(typ, ts, idx, names, true)
		ts.wildcard = wildcard
		ts.names = nameSet{}
		ts.names.addMany(idx, withoutWildcard(names), func(n string) string { return st.canonicalLocked(typ, n) })
		ts.dirty = true
		if !ts.wildcard {
			for n := range ts.sent.all() {
				if !ts.names.has(n) {
					ts.sent.remove(n) // unsubscribed: the client dropped it
				}
			}
		}
	})
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
func (st *stream) indexLocked(typ resourcev3.Type, ts *typeState) *typeIndex {
	if ts.index != nil {
		return ts.index
	}
	if snap := st.srv.snapshot(st.kind); snap != nil {
		return snap.index(typ).at(st.loc)
	}
	return noResources
}

// knownIndex is the index a request's names of type typ are looked up in while it is decoded
// (see sotwRequest): the current one of the client's kind, nil before the client said who it is.
func (st *stream) knownIndex(typ string) *typeIndex {
	st.mu.Lock()
	known, kind := st.known, st.kind
	st.mu.Unlock()
	if !known {
		return nil
	}
	if snap := st.srv.snapshot(kind); snap != nil {
		return snap.types[typ]
	}
	return nil
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

// sameNames says whether names (which may repeat a name) are exactly the set have.
func sameNames(have *nameSet, names []string) bool {
	n := 0
	for _, x := range names {
		if x == "*" {
			continue
		}
		if !have.has(x) {
			return false
		}
		n++
	}
	if n == have.len() {
		return true
	}
	if n < have.len() {
		return false
	}
	seen := make(map[string]struct{}, n) // repeated names: count each once
	for _, x := range names {
		if x != "*" {
			seen[x] = struct{}{}
		}
	}
	return len(seen) == have.len()
}

// pushSotw and pushDelta send, for every type with nothing in flight, what the client lacks.
func (st *stream) pushSotw(now time.Time, enqueue func(*wireResponse) bool) error {
	return pushTypes(st, now, enqueue, st.sotwResponseLocked)
}

func (st *stream) pushDelta(now time.Time, enqueue func(*wireResponse) bool) error {
	return pushTypes(st, now, enqueue, st.deltaResponseLocked)
}

// pushTypes walks the types in push order and, for each with nothing in flight whose
// resources or subscription changed since its last push, enqueues what respond builds (the
// zero Resp: nothing to send).
func pushTypes[Resp comparable](st *stream, now time.Time, enqueue func(Resp) bool,
	respond func(resourcev3.Type, *typeState, *typeIndex, time.Time) Resp) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	snap := st.srv.snapshot(st.kind)
	if snap == nil {
		return nil // nothing published yet: the first snapshot wakes every stream
	}
	var none Resp
	for _, typ := range pushOrder {
		ts := st.types[typ]
		if ts == nil || !ts.subscribed || ts.inflight != "" {
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

func (st *stream) sotwResponseLocked(typ resourcev3.Type, ts *typeState, idx *typeIndex, now time.Time) *wireResponse {
	full := fullState(typ)
	if !full && !ts.wildcard && ts.incremental(idx) {
		return st.sotwChangedLocked(typ, ts, idx, now)
	}
	var wanted []*Resource
	var version string
	if ts.wildcard {
		wanted, version = idx.list, idx.version
	} else {
		wanted, ts.setHash = ts.names.in(idx)
		version = setVersion(ts.setHash)
	}
	if ts.sentOnce && version == ts.version {
		return nil
	}
	if !ts.sentOnce && full && ts.wildcard && ts.clientVersion != "" && ts.clientVersion == version {
		// A reconnecting wildcard client of a full-state type (an Envoy's LDS or CDS) that
		// already has exactly this state: nothing to send. Only there: a client subscribing by
		// name on a new stream may have dropped what the old stream gave it (grpc-js does,
		// when its channels go idle), and a version_info from another stream proves nothing
		// about what it holds now. Delta's initial_resource_versions, which name exactly what
		// a client holds, are what resumes named subscriptions (onDeltaRequest).
		ts.sentOnce, ts.version = true, version
		ts.hold(full, idx, wanted, wanted)
		ts.ackedVersion = version
		return nil
	}
	out := wanted
	if !full {
		out = ts.sent.lacking(wanted)
	}
	ts.hold(full, idx, wanted, out)
	return st.sotwSendLocked(typ, ts, idx, version, out, full, now)
}

// hold records what a SotW client holds once sent out of wanted. A full-state type is
// replaced whole, and kept as the list itself (for a wildcard client, the index's own list:
// nothing per client); otherwise only what is sent changes, and names no longer wanted are
// dropped when the set shrank.
func (ts *typeState) hold(full bool, idx *typeIndex, wanted, out []*Resource) {
	if full {
		ts.held, ts.sent = wanted, sentSet{}
		return
	}
	ts.sent.setMany(idx, out)
	if ts.sent.size() > len(wanted) {
		keep := make(map[string]struct{}, len(wanted))
		for _, r := range wanted {
			keep[r.Name] = struct{}{}
		}
		for n := range ts.sent.all() {
			if _, ok := keep[n]; !ok {
				ts.sent.remove(n)
			}
		}
	}
}

// sentVersion returns the version of name the client was sent and may hold.
func (ts *typeState) sentVersion(name string) (string, bool) {
	if ts.held == nil {
		return ts.sent.get(name)
	}
	// held is sorted by name: the index's list, or the wanted names in order.
	if i, ok := byName(ts.held, name); ok {
		return ts.held[i].Version, true
	}
	return "", false
}

// sentVersions returns what the client holds, name → version.
func (ts *typeState) sentVersions() map[string]string {
	if ts.held == nil {
		return ts.sent.all()
	}
	out := make(map[string]string, len(ts.held))
	for _, r := range ts.held {
		out[r.Name] = r.Version
	}
	return out
}

// sotwChangedLocked is sotwResponseLocked for a client subscribed by name to a type whose
// responses may be partial (EDS, RDS), when nothing but the resources changed since its last
// push: only the names idx says changed are looked at, and the version of the client's set is
// kept up to date by XOR, so a change costs O(changed), not O(subscribed).
func (st *stream) sotwChangedLocked(typ resourcev3.Type, ts *typeState, idx *typeIndex, now time.Time) *wireResponse {
	var out []*Resource
	for _, n := range idx.changed {
		if !ts.names.has(n) {
			continue
		}
		if old, ok := ts.index.byName[n]; ok {
			ts.setHash ^= old.hash
		}
		r, ok := idx.byName[n]
		if !ok {
			ts.sent.remove(n)
			continue
		}
		ts.setHash ^= r.hash
		if ts.sent.lacks(r) {
			out = append(out, r)
			ts.sent.set(n, r.Version)
		}
	}
	version := setVersion(ts.setHash)
	if ts.sentOnce && version == ts.version {
		return nil
	}
	return st.sotwSendLocked(typ, ts, idx, version, out, false, now)
}

func (st *stream) sotwSendLocked(typ resourcev3.Type, ts *typeState, idx *typeIndex, version string, out []*Resource, full bool, now time.Time) *wireResponse {
	if !full && len(out) == 0 {
		// Nothing new: a resource went away or was unsubscribed. SotW RDS and EDS have no way
		// to say so; the client drops it when the listener or cluster using it goes.
		ts.version = version
		return nil
	}
	nonce := st.nextNonceLocked()
	resp := sotwWire(idx, version, typ, nonce, out)
	ts.version, ts.sentOnce = version, true
	st.sentLocked(typ, ts, nonce, version, out, nil, resp, now)
	return resp
}

// setVersion is the version of a set of resources given the XOR of their hashes: it does not
// depend on their order, so it can be kept up to date one resource at a time.
func setVersion(h uint64) string { return fmt.Sprintf("%016x", h) }

// onDeltaRequest applies an incremental request's subscription changes. The first request of
// a type says which versions the client already has (after a reconnect), so that nothing it
// has is sent again.
func (st *stream) onDeltaRequest(r *deltaRequest) error {
	req := r.req
	return st.onRequest(req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail(), func(ts *typeState, first bool) {
		if first {
			ts.sent.setVersions(st.indexLocked(req.GetTypeUrl(), ts), r.initial)
			if len(req.GetResourceNamesSubscribe()) == 0 {
				ts.wildcard = true // legacy wildcard
			}
		}
		typ := req.GetTypeUrl()
		idx := st.indexLocked(typ, ts)
		if subscribe := req.GetResourceNamesSubscribe(); len(subscribe) > 0 {
			subscribe = st.admitLocked(typ, ts, idx, subscribe, false)
			ts.wildcard = ts.wildcard || slices.Contains(subscribe, "*")
			ts.names.addMany(idx, withoutWildcard(subscribe), func(n string) string { return st.canonicalLocked(typ, n) })
			ts.dirty = true
		}
		for _, n := range req.GetResourceNamesUnsubscribe() {
			if n == "*" {
				ts.wildcard = false
			} else {
				if ts.names.remove(n) {
					st.forgetLocked(ts, idx, n)
				}
				if !ts.wildcard {
					ts.sent.remove(n)
				}
			}
			ts.dirty = true
		}
	})
}

func (st *stream) deltaResponseLocked(typ resourcev3.Type, ts *typeState, idx *typeIndex, now time.Time) *wireResponse {
	var out []*Resource
	var removed []string
	if ts.incremental(idx) {
		// Only the names that changed since the last push can differ from what the client has.
		for _, n := range idx.changed {
			explicit := ts.names.has(n)
			if !explicit && !ts.wildcard {
				continue
			}
			if r, ok := idx.byName[n]; ok {
				if ts.sent.lacks(r) {
					out = append(out, r)
				}
				continue
			}
			if v, told := ts.sent.get(n); (explicit && !told) || (told && v != "") {
				removed = append(removed, n)
				if explicit {
					ts.sent.set(n, "")
				} else {
					ts.sent.remove(n)
				}
			}
		}
	} else {
		out, removed = ts.deltaDiffLocked(idx)
	}
	if len(out) == 0 && len(removed) == 0 && ts.answered {
		return nil
	}
	// The first answer to a subscription goes out even when empty: it tells the client (an
	// agent after a reconnect, an Envoy waiting to initialise) that what it has is the state.
	slices.Sort(removed)
	nonce := st.nextNonceLocked()
	resp := deltaWire(idx, idx.version, typ, nonce, out, removed)
	ts.sent.setMany(idx, out)
	st.sentLocked(typ, ts, nonce, idx.version, out, removed, resp, now)
	return resp
}

// deltaDiffLocked compares everything the client wants with what it was sent: what to send,
// and what to tell it is gone (recorded as sent "").
func (ts *typeState) deltaDiffLocked(idx *typeIndex) (out []*Resource, removed []string) {
	fresh := ts.sent.empty() // a first push: nothing can be gone
	if ts.wildcard {
		out = ts.sent.lacking(idx.list[:len(idx.list):len(idx.list)])
	} else {
		rs, _ := ts.names.in(idx)
		out = ts.sent.lacking(rs)
	}
	for _, n := range ts.names.outside(idx) {
		if v, told := ts.sent.get(n); !told || v != "" {
			removed = append(removed, n) // never existed, or gone: say so once
			ts.sent.set(n, "")
		}
	}
	if fresh {
		return out, removed
	}
	var gone []string // sent, and idx does not have them (any more)
	ts.sent.eachOutside(idx, func(n, v string) {
		if v != "" {
			gone = append(gone, n)
		}
	})
	for _, n := range gone {
		explicit := ts.names.has(n)
		if !explicit && !ts.wildcard {
			continue
		}
		removed = append(removed, n)
		if explicit {
			ts.sent.set(n, "")
		} else {
			ts.sent.remove(n)
		}
	}
	return out, removed
}

// sentLocked marks a response as in flight and counts it.
func (st *stream) sentLocked(typ resourcev3.Type, ts *typeState, nonce, version string, out []*Resource, removed []string, resp *wireResponse, now time.Time) {
	ts.inflight, ts.inflightAt, ts.inflightVersion, ts.answered = nonce, now, version, true
	ts.inflightOut, ts.inflightRemoved = out, removed
	m := st.srv.metrics
	m.responses.WithLabelValues(typ, st.flavour).Inc()
	m.resSent.WithLabelValues(typ).Add(float64(resp.n))
	m.bytes.WithLabelValues(st.flavour).Add(float64(resp.size))
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
