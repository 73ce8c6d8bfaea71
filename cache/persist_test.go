package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast/holdfast/resolver"
)

func sampleServices() map[resolver.Key]*resolver.Service {
	a := &resolver.Service{Key: resolver.Key{Namespace: "ns", Name: "a"}, UID: "8d1f2c3a-5b6e-4f70-9a81-b2c3d4e5f607", Ports: []resolver.Port{{Name: "http", Port: 80, AppProtocol: "grpc",
		Endpoints: []resolver.Endpoint{{Address: "10.0.0.1", Port: 8080, Ready: true, Serving: true, Zone: "z1", NodeName: "n1"}, {Address: "fd00::1", Port: 8080, Serving: true, Terminating: true}}}},
		Origin: resolver.Origin{ServiceVersion: "41", Slices: []resolver.ObjectVersion{{Name: "a-x1", ResourceVersion: "57"}},
			ObservedAt: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}}
	b := &resolver.Service{Key: resolver.Key{Namespace: "other", Name: "b"}, Headless: true, Ports: []resolver.Port{{Name: "", Port: 443}}}
	return map[resolver.Key]*resolver.Service{a.Key: a, b.Key: b}
}

func TestStateRoundTrip(t *testing.T) {
	want := sampleServices()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	data, err := encodeState(want, now)
	if err != nil {
		t.Fatal(err)
	}
	got, at, err := decodeState(bytes.NewReader(data), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || !at.Equal(now) {
		t.Fatalf("round trip changed the state:\n got %v %v\nwant %v %v", got, at, want, now)
	}
	again, _ := encodeState(got, now)
	if !bytes.Equal(again, data) {
		t.Error("encoding is not deterministic")
	}
}

func TestStateCorruption(t *testing.T) {
	good, err := encodeState(sampleServices(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nl := bytes.IndexByte(good, '\n')
	flip := bytes.Clone(good)
	flip[nl+10] ^= 0x01
	invalid, _ := encodeState(map[resolver.Key]*resolver.Service{{Namespace: "ns", Name: "x"}: {Key: resolver.Key{Namespace: "ns", Name: "x"},
		Ports: []resolver.Port{{Port: 80, Endpoints: []resolver.Endpoint{{Address: "not-an-ip", Port: 1}}}}}}, time.Now())
	badUID, _ := encodeState(map[resolver.Key]*resolver.Service{{Namespace: "ns", Name: "x"}: {Key: resolver.Key{Namespace: "ns", Name: "x"}, UID: "a/b~c",
		Ports: []resolver.Port{{Port: 80}}}}, time.Now())
	tests := []struct {
		name, reason string
		data         []byte
		max          int64
	}{
		{"a uid no API server gives", "invalid", badUID, 1 << 20},
		{"empty", "header", nil, 1 << 20},
		{"truncated in the header", "header", good[:nl/2], 1 << 20},
		{"truncated payload", "truncated", good[:len(good)-7], 1 << 20},
		{"one bit flipped", "checksum", flip, 1 << 20},
		{"future version", "future_version", bytes.Replace(good, []byte("holdfast-state 1 "), []byte("holdfast-state 2 "), 1), 1 << 20},
		{"version 0, which no build wrote", "header", bytes.Replace(good, []byte("holdfast-state 1 "), []byte("holdfast-state 0 "), 1), 1 << 20},
		{"a negative version", "header", bytes.Replace(good, []byte("holdfast-state 1 "), []byte("holdfast-state -1 "), 1), 1 << 20},
		{"not a state file", "header", []byte("{\"services\":[]}\n"), 1 << 20},
		{"trailing bytes", "header", append(bytes.Clone(good), 'x'), 1 << 20},
		{"oversized", "too_large", good, int64(len(good) - 1)},
		{"invalid service", "invalid", invalid, 1 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := decodeState(bytes.NewReader(tt.data), tt.max)
			var le *LoadError
			if !errors.As(err, &le) || le.Reason != tt.reason {
				t.Fatalf("error %v, want reason %s", err, tt.reason)
			}
			if got != nil {
				t.Fatal("a bad file yielded part of its content")
			}
		})
	}
}

func FuzzDecodeState(f *testing.F) {
	good, _ := encodeState(sampleServices(), time.Now())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("holdfast-state 1 2 00\n{}"))
	f.Add([]byte("holdfast-state 1 999999999999 00\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, _, err := decodeState(bytes.NewReader(data), 1<<20)
		if err != nil {
			if got != nil {
				t.Fatal("error with content")
			}
			return
		}
		for _, s := range got {
			if validService(s) != nil {
				t.Fatalf("accepted an invalid service %+v", s)
			}
		}
	})
}

type views chan View

func (v views) OnView(x View) { v <- x }

func TestStorePersistsAndRestores(t *testing.T) {
	dir := t.TempDir()
	out := make(views, 10)
	s, err := NewStore(StoreOptions{StateDir: dir, WriteDelay: time.Millisecond}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	want := sampleServices()
	s.OnResolution(resolver.Resolution{Services: want, Synced: true})
	<-out
	cancel() // Run flushes on the way out
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	out2 := make(views, 10)
	s2, err := NewStore(StoreOptions{StateDir: dir}, out2)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Restore(); err != nil {
		t.Fatal(err)
	}
	v := <-out2
	if !v.Restored || v.Synced || !v.Servable() || !reflect.DeepEqual(v.Services, want) {
		t.Fatalf("restored view = %+v", v)
	}

	// A corrupt file is reported and ignored: nothing is served from it.
	path := filepath.Join(dir, StateFileName)
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, data[:len(data)-3], 0o600); err != nil {
		t.Fatal(err)
	}
	out3 := make(views, 10)
	s3, _ := NewStore(StoreOptions{StateDir: dir}, out3)
	if err := s3.Restore(); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("Restore of a truncated file: %v", err)
	}
	if len(out3) != 0 || s3.View().Servable() {
		t.Fatal("a truncated state file was served")
	}
}

// TestRepeatedFailuresRateLimited: a state file that cannot be written (here its path is a
// directory, which defeats root too) fails every attempt; the failures are counted one by one
// but reported at a falling pace, each report saying how many it stands for, and retries back
// off; the first write that works says so once.
func TestRepeatedFailuresRateLimited(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, StateFileName)
	if err := os.MkdirAll(filepath.Join(blocker, "in-the-way"), 0o750); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	// A clock that stands still: the 100 failures below happen at one instant, however slow
	// the machine.
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := NewStore(StoreOptions{StateDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registry: reg,
		Now: func() time.Time { return at }}, make(views, 1000))
	if err != nil {
		t.Fatal(err)
	}
	s.OnResolution(resolver.Resolution{Services: sampleServices(), Synced: true})
	const attempts = 100
	for range attempts {
		if s.flush() {
			t.Fatal("a write into a directory's path succeeded")
		}
	}
	if n := testutil.ToFloat64(s.metrics.writeErrors); n != attempts {
		t.Errorf("holdfast_state_write_errors_total = %v, want every failure counted (%d)", n, attempts)
	}
	// The first is reported at once, the next not before a second has passed: 100 failures
	// within one instant are one report.
	if n := strings.Count(logs.String(), "decision=state_write_failed"); n != 1 {
		t.Errorf("%d reports for %d failures at one instant, want 1:\n%s", n, attempts, logs.String())
	}
	if d := s.failing.Retry(); d != 30*time.Second {
		t.Errorf("retry after %v following %d failures, want the 30s ceiling", d, attempts)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	if !s.flush() {
		t.Fatal("the write failed once the path was free")
	}
	if !strings.Contains(logs.String(), "decision=state_write_recovered") || !strings.Contains(logs.String(), fmt.Sprintf("after_failures=%d", attempts)) {
		t.Errorf("no line saying the state file is written again after %d failures:\n%s", attempts, logs.String())
	}
	if d := s.failing.Retry(); d != time.Second {
		t.Errorf("retry after a success: %v, want 1s", d)
	}
}
