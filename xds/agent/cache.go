package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/holdfast/holdfast/xds"
)

// The disk cache is one file, replaced atomically: a header line
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

// CacheError says why a cache file was not used.
type CacheError struct {
	Reason string // missing, unreadable, truncated, checksum, version, format, oversized, invalid
	Err    error
}

func (e *CacheError) Error() string { return fmt.Sprintf("agent cache %s: %v", e.Reason, e.Err) }
func (e *CacheError) Unwrap() error { return e.Err }

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
	sum := sha256.Sum256(payload)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d %d %s\n", cacheMagic, cacheVersion, len(payload), hex.EncodeToString(sum[:]))
	b.Write(payload)
	return b.Bytes(), nil
}

// decodeCache reads and checks a cache file. Any defect rejects the whole file: serving part of
// a cache could withdraw what the rest would have kept.
func decodeCache(r io.Reader, maxBytes int64) (map[xds.ClientKind]map[resourcev3.Type]map[string]*xds.Resource, time.Time, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1024))
	if err != nil {
		return nil, time.Time{}, &CacheError{"unreadable", err}
	}
	nl := bytes.IndexByte(data, '\n')
	if nl < 0 || nl > 200 {
		return nil, time.Time{}, &CacheError{"format", errors.New("no header line")}
	}
	var magic, sumHex string
	var version int
	var size int64
	if _, err := fmt.Sscanf(string(data[:nl]), "%s %d %d %s", &magic, &version, &size, &sumHex); err != nil || magic != cacheMagic {
		return nil, time.Time{}, &CacheError{"format", fmt.Errorf("header %q", data[:nl])}
	}
	if version != cacheVersion {
		return nil, time.Time{}, &CacheError{"version", errors.New("format version " + strconv.Itoa(version))}
	}
	if size > maxBytes {
		return nil, time.Time{}, &CacheError{"oversized", fmt.Errorf("%d bytes, limit %d", size, maxBytes)}
	}
	payload := data[nl+1:]
	if int64(len(payload)) != size {
		return nil, time.Time{}, &CacheError{"truncated", fmt.Errorf("%d of %d bytes", len(payload), size)}
	}
	sum := sha256.Sum256(payload)
	if hex.EncodeToString(sum[:]) != sumHex {
		return nil, time.Time{}, &CacheError{"checksum", errors.New("payload does not match its checksum")}
	}
	var f cacheFile
	if err := json.Unmarshal(payload, &f); err != nil {
		return nil, time.Time{}, &CacheError{"format", err}
	}
	out := map[xds.ClientKind]map[resourcev3.Type]map[string]*xds.Resource{}
	for kind, types := range f.Kinds {
		if kind != xds.KindGRPC && kind != xds.KindEnvoy {
			return nil, time.Time{}, &CacheError{"invalid", fmt.Errorf("client kind %q", kind)}
		}
		out[kind] = map[resourcev3.Type]map[string]*xds.Resource{}
		for typ, entries := range types {
			out[kind][typ] = make(map[string]*xds.Resource, len(entries))
			for _, e := range entries {
				r, err := xds.ResourceFromWire(typ, e.Name, e.Version, e.Value)
				if err != nil {
					return nil, time.Time{}, &CacheError{"invalid", err}
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
		return nil, time.Time{}, &CacheError{"missing", err}
	}
	if err != nil {
		return nil, time.Time{}, &CacheError{"unreadable", err}
	}
	defer f.Close()
	return decodeCache(f, maxBytes)
}
