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
	"github.com/holdfast/holdfast/xds"
)

// The disk cache is one file, replaced atomically, framed like Holdfast's state file
// (cache.Frame): a header line
//
//	holdfast-agent-cache 1 <payload bytes> <sha256 of payload, hex>
//
// then the payload, JSON: when it was written and every resource of every client kind, as
// the bytes upstream sent and the version it gave them.
const (
	cacheFileName = "holdfast-agent-cache"
	cacheMagic    = "holdfast-agent-cache"
	cacheVersion  = 1
)

type cacheFile struct {
	WrittenAt time.Time                                            `json:"written_at"`
	Kinds     map[xds.ClientKind]map[resourcev3.Type][]cachedEntry `json:"kinds"`
}

type cachedEntry struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Value   []byte `json:"value"`
}

func encodeCache(kinds map[xds.ClientKind]map[resourcev3.Type]map[string]*xds.Resource, now time.Time) ([]byte, error) {
	f := cacheFile{WrittenAt: now, Kinds: map[xds.ClientKind]map[resourcev3.Type][]cachedEntry{}}
	for kind, types := range kinds {
		f.Kinds[kind] = map[resourcev3.Type][]cachedEntry{}
		for typ, rs := range types {
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

// decodeCache reads and checks a cache file. Any defect rejects the whole file: serving part of
// a cache could withdraw what the rest would have kept.
func decodeCache(r io.Reader, maxBytes int64) (map[xds.ClientKind]map[resourcev3.Type]map[string]*xds.Resource, time.Time, error) {
	payload, err := cache.Unframe(r, cacheMagic, cacheVersion, maxBytes)
	if err != nil {
		return nil, time.Time{}, err
	}
	var f cacheFile
	if err := json.Unmarshal(payload, &f); err != nil {
		return nil, time.Time{}, &cache.LoadError{Reason: "decode", Err: err}
	}
	out := map[xds.ClientKind]map[resourcev3.Type]map[string]*xds.Resource{}
	for kind, types := range f.Kinds {
		if kind != xds.KindGRPC && kind != xds.KindEnvoy {
			return nil, time.Time{}, &cache.LoadError{Reason: "invalid", Err: fmt.Errorf("client kind %q", kind)}
		}
		out[kind] = map[resourcev3.Type]map[string]*xds.Resource{}
		for typ, entries := range types {
			out[kind][typ] = make(map[string]*xds.Resource, len(entries))
			for _, e := range entries {
				r, err := xds.ResourceFromWire(typ, e.Name, e.Version, e.Value)
				if err != nil {
					return nil, time.Time{}, &cache.LoadError{Reason: "invalid", Err: err}
				}
				out[kind][typ][e.Name] = r
			}
		}
	}
	return out, f.WrittenAt, nil
}

func readCacheFile(path string, maxBytes int64) (map[xds.ClientKind]map[resourcev3.Type]map[string]*xds.Resource, time.Time, error) {
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
