package adminserver

import (
	"container/list"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Decisions keeps Holdfast's latest decisions in a bounded list. Components need no reference
// to it: a decision is a log line with a "decision" attribute (its kind) and usually a
// "subject", and Decisions is a slog.Handler wrapper that keeps a copy of every such line. So
// what the admin API shows and what the logs say are the same record.
//
// A decision that repeats one already kept — the same kind, subject and message, a failing
// disk retried every second, say — is not kept again: the kept one counts it, takes its time
// and attributes, and becomes the newest. So noise takes one entry, and what an operator needs
// (a hold, a NACK) is never pushed out by it.
type Decisions struct {
	// set at construction, read-only
	size int

	// guarded by mu
	mu    sync.Mutex
	order *list.List               // of *Record, newest first
	byKey map[string]*list.Element // kind, subject and message → its entry
}

// Record is one decision, as logged: the latest of Count alike, the first of them at First.
type Record struct {
	At      time.Time
	Kind    string
	Subject string
	Message string
	Attrs   map[string]string
	First   time.Time
	Count   int
}

// NewDecisions keeps the latest n decisions.
func NewDecisions(n int) *Decisions {
	return &Decisions{size: max(n, 1), order: list.New(), byKey: map[string]*list.Element{}}
}

func (d *Decisions) add(dec Record) {
	key := dec.Kind + "\x00" + dec.Subject + "\x00" + dec.Message
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.byKey[key]; ok {
		kept := e.Value.(*Record)
		kept.At, kept.Attrs = dec.At, dec.Attrs
		kept.Count++
		d.order.MoveToFront(e)
		return
	}
	dec.First, dec.Count = dec.At, 1
	d.byKey[key] = d.order.PushFront(&dec)
	if d.order.Len() > d.size {
		oldest := d.order.Back()
		d.order.Remove(oldest)
		r := oldest.Value.(*Record)
		delete(d.byKey, r.Kind+"\x00"+r.Subject+"\x00"+r.Message)
	}
}

// Latest returns up to limit decisions (0: all kept) of the given kind ("" = any), newest first.
func (d *Decisions) Latest(limit int, kind string) []Record {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Record
	for e := d.order.Front(); e != nil; e = e.Next() {
		dec := *e.Value.(*Record)
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
