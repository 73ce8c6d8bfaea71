package admin

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
