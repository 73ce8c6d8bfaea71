package adminserver

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestDecisionsKeepsDecisionLines(t *testing.T) {
	var out bytes.Buffer
	d := NewDecisions(3)
	log := slog.New(d.Handler(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})))
	log.Warn("not a decision", "service", "a")
	comp := log.With("component", "store")
	for i, kind := range []string{"guard_hold", "service_degraded", "client_nack", "guard_release"} {
		comp.Warn("decided", "decision", kind, "subject", "s"+string(rune('0'+i)), "reason", "because")
	}
	log.Info("quiet decision", "decision", "source_recovered", "subject", "ns") // below the output level: kept all the same
	log.WithGroup("g").Warn("grouped", "decision", "ignored")

	tests := []struct {
		limit int
		kind  string
		want  []string // kinds, newest first
	}{
		{0, "", []string{"source_recovered", "guard_release", "client_nack"}},
		{2, "", []string{"source_recovered", "guard_release"}},
		{0, "client_nack", []string{"client_nack"}},
		{0, "guard_hold", nil}, // pushed out of the ring
	}
	for _, tt := range tests {
		got := d.Latest(tt.limit, tt.kind)
		var kinds []string
		for _, r := range got {
			kinds = append(kinds, r.Kind)
		}
		if strings.Join(kinds, ",") != strings.Join(tt.want, ",") {
			t.Errorf("Latest(%d, %q) = %v, want %v", tt.limit, tt.kind, kinds, tt.want)
		}
	}
	r := d.Latest(0, "guard_release")[0]
	if r.Subject != "s3" || r.Message != "decided" || r.Attrs["component"] != "store" || r.Attrs["reason"] != "because" || r.At.IsZero() {
		t.Errorf("record = %+v", r)
	}
	// Everything still reaches the output handler at its own level.
	if s := out.String(); !strings.Contains(s, "not a decision") || !strings.Contains(s, "decision=guard_hold") || strings.Contains(s, "quiet decision") {
		t.Errorf("output:\n%s", s)
	}
}

// TestDecisionsCoalesceRepeats: a decision repeated (the same kind, subject and message: a
// failing disk every second) is kept once, counted, with its latest attributes, and moves to
// the front; so a thousand repeats never push a hold or a NACK out of a log of three.
func TestDecisionsCoalesceRepeats(t *testing.T) {
	d := NewDecisions(3)
	log := slog.New(d.Handler(slog.DiscardHandler))
	log.Warn("held", "decision", "guard_hold", "subject", "hold 1")
	log.Warn("rejected", "decision", "client_nack", "subject", "sidecar-1")
	for i := range 1000 {
		log.Error("state file not written", "decision", "state_write_failed", "subject", "/state", "failures", i)
	}
	got := d.Latest(0, "")
	if len(got) != 3 || got[0].Kind != "state_write_failed" || got[1].Kind != "client_nack" || got[2].Kind != "guard_hold" {
		t.Fatalf("kept %+v, want the repeated failure once, then the NACK and the hold", got)
	}
	if got[0].Count != 1000 || got[0].Attrs["failures"] != "999" || got[0].First.After(got[0].At) {
		t.Errorf("coalesced record %+v: want count 1000, the latest attributes, first before at", got[0])
	}
	// A hold logged again after other decisions moves to the front, counted.
	log.Warn("held", "decision", "guard_hold", "subject", "hold 1")
	if got := d.Latest(1, ""); got[0].Kind != "guard_hold" || got[0].Count != 2 {
		t.Errorf("newest = %+v", got[0])
	}
	// Another subject is another decision.
	log.Warn("held", "decision", "guard_hold", "subject", "hold 2")
	if n := len(d.Latest(0, "guard_hold")); n != 2 {
		t.Errorf("%d guard_hold records, want 2", n)
	}
}

func TestNodeMatchers(t *testing.T) {
	exact := func(s string) *matcherv3.NodeMatcher {
		return &matcherv3.NodeMatcher{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}}
	}
	tests := []struct {
		name string
		ms   []*matcherv3.NodeMatcher
		id   string
		want bool
	}{
		{"no matchers: all", nil, "x", true},
		{"exact", []*matcherv3.NodeMatcher{exact("sidecar-1")}, "sidecar-1", true},
		{"exact, other", []*matcherv3.NodeMatcher{exact("sidecar-1")}, "sidecar-2", false},
		{"any of two", []*matcherv3.NodeMatcher{exact("a"), exact("b")}, "b", true},
		{"prefix", []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "side"}}}}, "sidecar-1", true},
		{"suffix, ignoring case", []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{IgnoreCase: true, MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "-A"}}}}, "zone-a", true},
		{"contains", []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "car"}}}}, "sidecar", true},
		{"regex, whole", []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "side.*-[0-9]"}}}}}, "sidecar-1", true},
		{"regex, partial is no match", []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "car"}}}}}, "sidecar-1", false},
		{"bad regex", []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}}, "(", false},
		{"metadata matchers: unsupported, no match", []*matcherv3.NodeMatcher{{NodeId: exact("a").NodeId, NodeMetadatas: []*matcherv3.StructMatcher{{}}}}, "a", false},
	}
	for _, tt := range tests {
		if got := matches(tt.ms, tt.id); got != tt.want {
			t.Errorf("%s: matches(%q) = %v, want %v", tt.name, tt.id, got, tt.want)
		}
	}
}
