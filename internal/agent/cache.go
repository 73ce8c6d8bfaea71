package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/cache"
	"github.com/holdfast/holdfast/xds/resource"
)

// The disk cache is one file, replaced atomically, framed like Holdfast's state file
// (cache.Frame): a header line
//
//	holdfast-agent-cache 1 <payload bytes> <sha256 of payload, hex>
//
// then the payload, JSON: when it was written, when upstream last confirmed its content, and
// every resource of every client kind, as the bytes upstream sent and the version it gave
// them. Every type of a kind is listed, empty or not: a file holds complete views only, and a
// reader tells a missing type from an empty one.
const (
	cacheFileName = "holdfast-agent-cache"
	cacheMagic    = "holdfast-agent-cache"
	cacheVersion  = 1
)

type cacheFile struct {
	WrittenAt time.Time `json:"written_at"`
	// ConfirmedAt is when upstream last confirmed the content (absent in files of agents
	// before it was added: WrittenAt then).
	ConfirmedAt time.Time                                           `json:"confirmed_at,omitzero"`
	Kinds       map[resource.Kind]map[resourcev3.Type][]cachedEntry `json:"kinds"`
}

type cachedEntry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Value   []byte `json:"value"`
}

func encodeCache(kinds resources, now, confirmedAt time.Time) ([]byte, error) {
	f := cacheFile{WrittenAt: now, ConfirmedAt: confirmedAt, Kinds: map[resource.Kind]map[resourcev3.Type][]cachedEntry{}}
	for kind, types := range kinds {
		f.Kinds[kind] = map[resourcev3.Type][]cachedEntry{}
		for typ, rs := range types {
			f.Kinds[kind][typ] = make([]cachedEntry, 0, len(rs))
			for _, r := range rs {
				f.Kinds[kind][typ] = append(f.Kinds[kind][typ], cachedEntry{Name: r.Name, Version: r.Version, Value: r.Any.GetValue()})
			}
		}
	}
	payload, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	return cache.Frame(cacheMagic, cacheVersion, payload), nil
}

// decodeCache reads and checks a cache file, and returns its resources and when upstream last
// confirmed them. Any defect rejects the whole file: serving part of a cache could withdraw
// what the rest would have kept.
func decodeCache(r io.Reader, maxBytes int64) (resources, time.Time, error) {
	payload, err := cache.Unframe(r, cacheMagic, cacheVersion, maxBytes)
	if err != nil {
		return nil, time.Time{}, err
	}
	var f cacheFile
	if err := json.Unmarshal(payload, &f); err != nil {
		return nil, time.Time{}, &cache.LoadError{Reason: "decode", Err: err}
	}
	out := resources{}
	for kind, types := range f.Kinds {
		if kind != resource.KindGRPC && kind != resource.KindEnvoy {
			return nil, time.Time{}, &cache.LoadError{Reason: "invalid", Err: fmt.Errorf("client kind %q", kind)}
		}
		out[kind] = typeSet{}
		for typ, entries := range types {
			out[kind][typ] = make(map[string]*resource.Resource, len(entries))
			for _, e := range entries {
				r, err := resource.FromWire(typ, e.Name, e.Version, e.Value)
				if err != nil {
					return nil, time.Time{}, &cache.LoadError{Reason: "invalid", Err: err}
				}
				out[kind][typ][e.Name] = r
			}
		}
	}
	confirmed := f.ConfirmedAt
	if confirmed.IsZero() {
		confirmed = f.WrittenAt
	}
	return out, confirmed, nil
}

func readCacheFile(path string, maxBytes int64) (resources, time.Time, error) {
	f, err := os.Open(path) //nolint:gosec // the operator's --cache-dir
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, &cache.LoadError{Reason: "missing", Err: err}
	}
	if err != nil {
		return nil, time.Time{}, &cache.LoadError{Reason: "unreadable", Err: err}
	}
	defer f.Close()
	return decodeCache(f, maxBytes)
}
