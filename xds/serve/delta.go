package serve

import (
	"slices"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/xds/resource"
	"github.com/holdfast/holdfast/xds/serve/internal/wire"
)

// The incremental (Delta) protocol: a client subscribes and unsubscribes names; a response
// carries the resources the client lacks and names the ones that are gone. A Delta stream
// keeps nothing beyond its subscriptions: what it told a client does not exist is in sent as "".

// pushDelta sends, for every type with nothing in flight, what the client lacks.
func (st *stream) pushDelta(now time.Time, enqueue func(*wire.Response) bool) error {
	return pushTypes(st, now, enqueue, st.deltaResponseLocked)
}

// onDeltaRequest applies an incremental request's subscription changes. The first request of
// a type says which versions the client already has (after a reconnect), so that nothing it
// has is sent again.
func (st *stream) onDeltaRequest(r *wire.DeltaRequest) error {
	req := r.Req
	return st.onRequest(req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail(), func(ts *subscription, first bool) {
		if first {
			ts.sent.setVersions(st.indexLocked(req.GetTypeUrl(), ts), r.Initial)
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

func (st *stream) deltaResponseLocked(typ resourcev3.Type, ts *subscription, idx *typeIndex, now time.Time) *wire.Response {
	var out []*resource.Resource
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
	resp := wire.Delta(idx, idx.version, typ, nonce, out, removed)
	ts.sent.setMany(idx, out)
	st.sentLocked(typ, ts, nonce, idx.version, out, removed, resp, now)
	return resp
}

// deltaDiffLocked compares everything the client wants with what it was sent: what to send,
// and what to tell it is gone (recorded as sent "").
func (ts *subscription) deltaDiffLocked(idx *typeIndex) (out []*resource.Resource, removed []string) {
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
