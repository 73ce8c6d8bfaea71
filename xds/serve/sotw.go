package serve

import (
	"fmt"
	"slices"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve/internal/wire"
)

// The state-of-the-world protocol: a client repeats its whole list of wanted names in every
// request; a response carries the whole set of a full-state type (LDS, CDS) or the changed
// resources of the others (RDS, EDS), under one version for the set.

// sotwState is what only a state-of-the-world stream keeps of a type, beside its subscription.
type sotwState struct {
	// full is the list a full-state type (LDS, CDS) last sent, sorted by name: what the client
	// has of it (for a wildcard client, the index's own list: nothing per client).
	full []*resource.Resource
	// version is the version_info of the last response; sentOnce says one went out.
	version  string
	sentOnce bool
	// clientVersion is the version a reconnecting client says it has (trusted only for a
	// wildcard full-state type: see sotwResponseLocked).
	clientVersion string
	// setHash is the XOR of the hashes of the resources a client subscribed by name has (see
	// setVersion).
	setHash uint64
}

// pushSotw sends, for every type with nothing in flight, what the client lacks.
func (st *stream) pushSotw(now time.Time, enqueue func(*wire.Response) bool) error {
	return pushTypes(st, now, enqueue, st.sotwResponseLocked)
}

// onSotwRequest applies a state-of-the-world request: the client's full list of wanted names.
func (st *stream) onSotwRequest(r *wire.SotWRequest) error {
	req := r.Req
	typ := req.GetTypeUrl()
	return st.onRequest(req.GetNode(), typ, req.GetResponseNonce(), req.GetErrorDetail(), func(ts *subscription, first bool) {
		if first {
			ts.sotw.clientVersion = req.GetVersionInfo()
		}
		if r.Repeated {
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

func (st *stream) sotwResponseLocked(typ resourcev3.Type, ts *subscription, idx *typeIndex, now time.Time) *wire.Response {
	full := fullState(typ)
	if !full && !ts.wildcard && ts.incremental(idx) {
		return st.sotwChangedLocked(typ, ts, idx, now)
	}
	var wanted []*resource.Resource
	var version string
	if ts.wildcard {
		wanted, version = idx.list, idx.version
	} else {
		wanted, ts.sotw.setHash = ts.names.in(idx)
		version = setVersion(ts.sotw.setHash)
	}
	if ts.sotw.sentOnce && version == ts.sotw.version {
		return nil
	}
	if !ts.sotw.sentOnce && full && ts.wildcard && ts.sotw.clientVersion != "" && ts.sotw.clientVersion == version {
		// A reconnecting wildcard client of a full-state type (an Envoy's LDS or CDS) that
		// already has exactly this state: nothing to send. Only there: a client subscribing by
		// name on a new stream may have dropped what the old stream gave it (grpc-js does,
		// when its channels go idle), and a version_info from another stream proves nothing
		// about what it holds now. Delta's initial_resource_versions, which name exactly what
		// a client holds, are what resumes named subscriptions (onDeltaRequest).
		ts.sotw.sentOnce, ts.sotw.version = true, version
		ts.record(full, idx, wanted, wanted)
		ts.ackedVersion = version
		return nil
	}
	out := wanted
	if !full {
		out = ts.sent.lacking(wanted)
	}
	ts.record(full, idx, wanted, out)
	return st.sotwSendLocked(typ, ts, idx, version, out, full, now)
}

// record notes what a SotW client has once sent out of wanted. A full-state type is
// replaced whole, and kept as the list itself (for a wildcard client, the index's own list:
// nothing per client); otherwise only what is sent changes, and names no longer wanted are
// dropped when the set shrank.
func (ts *subscription) record(full bool, idx *typeIndex, wanted, out []*resource.Resource) {
	if full {
		ts.sotw.full, ts.sent = wanted, sentSet{}
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

// sotwChangedLocked is sotwResponseLocked for a client subscribed by name to a type whose
// responses may be partial (EDS, RDS), when nothing but the resources changed since its last
// push: only the names idx says changed are looked at, and the version of the client's set is
// kept up to date by XOR, so a change costs O(changed), not O(subscribed).
func (st *stream) sotwChangedLocked(typ resourcev3.Type, ts *subscription, idx *typeIndex, now time.Time) *wire.Response {
	var out []*resource.Resource
	for _, n := range idx.changed {
		if !ts.names.has(n) {
			continue
		}
		if old, ok := ts.index.byName[n]; ok {
			ts.sotw.setHash ^= old.Hash()
		}
		r, ok := idx.byName[n]
		if !ok {
			ts.sent.remove(n)
			continue
		}
		ts.sotw.setHash ^= r.Hash()
		if ts.sent.lacks(r) {
			out = append(out, r)
			ts.sent.set(n, r.Version)
		}
	}
	version := setVersion(ts.sotw.setHash)
	if ts.sotw.sentOnce && version == ts.sotw.version {
		return nil
	}
	return st.sotwSendLocked(typ, ts, idx, version, out, false, now)
}

func (st *stream) sotwSendLocked(typ resourcev3.Type, ts *subscription, idx *typeIndex, version string, out []*resource.Resource, full bool, now time.Time) *wire.Response {
	if !full && len(out) == 0 {
		// Nothing new: a resource went away or was unsubscribed. SotW RDS and EDS have no way
		// to say so; the client drops it when the listener or cluster using it goes.
		ts.sotw.version = version
		return nil
	}
	nonce := st.nextNonceLocked()
	resp := wire.SotW(idx, version, typ, nonce, out)
	ts.sotw.version, ts.sotw.sentOnce = version, true
	st.sentLocked(typ, ts, nonce, version, out, nil, resp, now)
	return resp
}

// setVersion is the version of a set of resources given the XOR of their hashes: it does not
// depend on their order, so it can be kept up to date one resource at a time.
func setVersion(h uint64) string { return fmt.Sprintf("%016x", h) }
