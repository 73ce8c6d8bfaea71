package admin

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Decisions keeps Holdfast's latest decisions in a bounded ring. Components need no reference
// to it: a decision is a log line with a "decision" attribute (its kind) and usually a
// "subject", and Decisions is a slog.Handler wrapper that keeps a copy of every such line. So
// what the admin API shows and what the logs say are the same record.
type Decisions struct {
	mu   sync.Mutex
	ring []Record
	next int
	full bool
}

// Record is one decision, as logged.
type Record struct {
	At      time.Time
	Kind    string
	Subject string
	Message string
	Attrs   map[string]string
}

// NewDecisions keeps the latest n decisions.
func NewDecisions(n int) *Decisions {
	return &Decisions{ring: make([]Record, max(n, 1))}
}

func (d *Decisions) add(dec Record) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ring[d.next] = dec
	d.next = (d.next + 1) % len(d.ring)
	d.full = d.full || d.next == 0
}

// Latest returns up to limit decisions (0: all kept) of the given kind ("" = any), newest first.
func (d *Decisions) Latest(limit int, kind string) []Record {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.next
	if d.full {
		n = len(d.ring)
	}
	var out []Record
	for i := 1; i <= n; i++ {
		dec := d.ring[(d.next-i+len(d.ring))%len(d.ring)]
		if kind != "" && dec.Kind != kind {
			continue
		}
		out = append(out, dec)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out
}

// Handler wraps next: every record goes to next, and records with a "decision" attribute are
// kept too.
func (d *Decisions) Handler(next slog.Handler) slog.Handler {
	return &decisionHandler{d: d, next: next}
}

type decisionHandler struct {
	d      *Decisions
	next   slog.Handler
	attrs  []slog.Attr // from WithAttrs
	groups []string
}

func (h *decisionHandler) Enabled(ctx context.Context, l slog.Level) bool {
	// Decisions are logged at Info and above; keep them even when the output handler is
	// quieter.
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *decisionHandler) Handle(ctx context.Context, r slog.Record) error {
	dec := Record{At: r.Time, Message: r.Message, Attrs: map[string]string{}}
	take := func(a slog.Attr) {
		switch a.Key {
		case "decision":
			dec.Kind = a.Value.String()
		case "subject":
			dec.Subject = a.Value.String()
		default:
			dec.Attrs[a.Key] = a.Value.String()
		}
	}
	for _, a := range h.attrs {
		take(a)
	}
	r.Attrs(func(a slog.Attr) bool { take(a); return true })
	if dec.Kind != "" && len(h.groups) == 0 {
		h.d.add(dec)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *decisionHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &decisionHandler{d: h.d, next: h.next.WithAttrs(as), attrs: append(slices.Clone(h.attrs), as...), groups: h.groups}
}

func (h *decisionHandler) WithGroup(name string) slog.Handler {
	return &decisionHandler{d: h.d, next: h.next.WithGroup(name), attrs: h.attrs, groups: append(slices.Clone(h.groups), name)}
}
