package cache

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

// The state file is one header line and a JSON payload:
//
//	holdfast-state <format version> <payload bytes> <sha256 of payload, hex>\n
//	{"written_at": ..., "services": [...]}
//
// The header lets a reader refuse a file from a newer Holdfast, a truncated file, or a corrupted
// one before decoding anything.
const (
	stateMagic   = "holdfast-state"
	stateVersion = 1
)

// StateFileName is the state file's name in the state directory.
const StateFileName = "state"

// LoadError says why a state file was not used. Reason is a bounded set, fit for a metric label.
type LoadError struct {
	Reason string // missing, too_large, header, future_version, truncated, checksum, decode, invalid
	Err    error
}

func (e *LoadError) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *LoadError) Unwrap() error { return e.Err }

type stateFile struct {
	WrittenAt time.Time           `json:"written_at"`
	Services  []*resolver.Service `json:"services"`
}

// encodeState renders services as a state file.
func encodeState(services map[resolver.Key]*resolver.Service, now time.Time) ([]byte, error) {
	sf := stateFile{WrittenAt: now.UTC(), Services: make([]*resolver.Service, 0, len(services))}
	for _, k := range (resolver.Resolution{Services: services}).SortedKeys() {
		sf.Services = append(sf.Services, services[k])
	}
	payload, err := json.Marshal(sf)
	if err != nil {
		return nil, err
	}
	return Frame(stateMagic, stateVersion, payload), nil
}

// Frame prefixes payload with the header line "<magic> <version> <payload bytes> <sha256 hex>",
// so that Unframe can tell a whole, current file from anything else.
func Frame(magic string, version int, payload []byte) []byte {
	sum := sha256.Sum256(payload)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d %d %s\n", magic, version, len(payload), hex.EncodeToString(sum[:]))
	b.Write(payload)
	return b.Bytes()
}

// Unframe reads a file written by Frame and returns its payload, or a *LoadError whose reason is
// header (not such a file, or a version no build wrote), future_version, too_large, truncated or
// checksum.
func Unframe(r io.Reader, magic string, version int, maxBytes int64) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, maxBytes+1))
	header, err := br.ReadString('\n')
	if err != nil {
		return nil, &LoadError{"header", fmt.Errorf("no header line: %w", err)}
	}
	f := strings.Fields(header)
	if len(f) != 4 || f[0] != magic {
		return nil, &LoadError{"header", fmt.Errorf("not a %s file", magic)}
	}
	v, err := strconv.Atoi(f[1])
	if err != nil {
		return nil, &LoadError{"header", fmt.Errorf("version %q", f[1])}
	}
	switch {
	case v > version:
		return nil, &LoadError{"future_version", fmt.Errorf("format version %d, this build reads %d", v, version)}
	case v != version:
		return nil, &LoadError{"header", fmt.Errorf("format version %d: no build of this program wrote it (it reads %d)", v, version)}
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 {
		return nil, &LoadError{"header", fmt.Errorf("payload size %q", f[2])}
	}
	if size+int64(len(header)) > maxBytes {
		return nil, &LoadError{"too_large", fmt.Errorf("%d bytes, more than %d", size+int64(len(header)), maxBytes)}
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(br, payload); err != nil {
		return nil, &LoadError{"truncated", err}
	}
	if n, _ := br.Read(make([]byte, 1)); n != 0 {
		return nil, &LoadError{"header", errors.New("trailing bytes after the payload")}
	}
	sum := sha256.Sum256(payload)
	if hex.EncodeToString(sum[:]) != f[3] {
		return nil, &LoadError{"checksum", errors.New("payload does not match its checksum")}
	}
	return payload, nil
}

// decodeState parses and validates a state file. It never returns part of a file: either every
// service in it is valid, or an error.
func decodeState(r io.Reader, maxBytes int64) (map[resolver.Key]*resolver.Service, time.Time, error) {
	payload, err := Unframe(r, stateMagic, stateVersion, maxBytes)
	if err != nil {
		return nil, time.Time{}, err
	}
	var sf stateFile
	if err := json.Unmarshal(payload, &sf); err != nil {
		return nil, time.Time{}, &LoadError{"decode", err}
	}
	out := make(map[resolver.Key]*resolver.Service, len(sf.Services))
	for i, s := range sf.Services {
		if err := validService(s); err != nil {
			return nil, time.Time{}, &LoadError{"invalid", fmt.Errorf("service %d: %w", i, err)}
		}
		if _, dup := out[s.Key]; dup {
			return nil, time.Time{}, &LoadError{"invalid", fmt.Errorf("service %s listed twice", s.Key)}
		}
		out[s.Key] = s
	}
	return out, sf.WrittenAt, nil
}

// validService holds a restored service to what the resolver itself would produce.
func validService(s *resolver.Service) error {
	if s == nil || s.Namespace == "" || s.Name == "" {
		return errors.New("no namespace or name")
	}
	if len(s.Ports) == 0 {
		return fmt.Errorf("%s: no ports", s.Key)
	}
	if !resolver.ValidUID(s.UID) {
		return fmt.Errorf("%s: uid %q is not a Kubernetes UID", s.Key, s.UID)
	}
	for _, p := range s.Ports {
		if p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("%s: port %d out of range", s.Key, p.Port)
		}
		for _, e := range p.Endpoints {
			a, err := netip.ParseAddr(e.Address)
			if err != nil || a.Zone() != "" || e.Port < 1 || e.Port > 65535 {
				return fmt.Errorf("%s: endpoint %q port %d", s.Key, e.Address, e.Port)
			}
		}
	}
	return nil
}

// WriteFileAtomic replaces path with data so that a reader sees the old file or the new one,
// never a mix, even across a crash: write a temp file, fsync it, rename it over, fsync the dir.
func WriteFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close() // the write error is the one to report
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close() // the write error is the one to report
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
