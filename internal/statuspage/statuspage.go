// Package statuspage serves Holdfast's read-only status page: an overview (sources, holds,
// services and clients by state), a page per service and per client (the `why` view). It
// shows nothing the admin API does not: every page is rendered from the answers of the admin
// API's own methods, called in process. Plain HTML that refreshes itself; no script.
package statuspage

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/holdfast/holdfast/xds/admin"
)

// API is what the page reads: the admin API's read-only methods.
type API interface {
	ListServices(context.Context, *admin.ListServicesRequest) (*admin.ListServicesResponse, error)
	GetService(context.Context, *admin.GetServiceRequest) (*admin.ServiceDetail, error)
	ListClients(context.Context, *admin.ListClientsRequest) (*admin.ListClientsResponse, error)
	GetClient(context.Context, *admin.GetClientRequest) (*admin.ClientDetail, error)
	ListSources(context.Context, *admin.ListSourcesRequest) (*admin.ListSourcesResponse, error)
	ListHolds(context.Context, *admin.ListHoldsRequest) (*admin.ListHoldsResponse, error)
	Why(context.Context, *admin.WhyRequest) (*admin.WhyResponse, error)
	GetCapacity(context.Context, *admin.GetCapacityRequest) (*admin.Capacity, error)
}

//go:embed templates/*.html
var templates embed.FS

// Handler serves the pages.
type Handler struct {
	api     API
	log     *slog.Logger
	refresh time.Duration
	pages   *template.Template
}

// New returns the page's handler; the pages refresh themselves every refresh.
func New(api API, log *slog.Logger, refresh time.Duration) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	funcs := template.FuncMap{
		"short": func(typ string) string { return typ[strings.LastIndex(typ, ".")+1:] },
		"when": func(t interface{ AsTime() time.Time }) string {
			if t == nil || t.AsTime().IsZero() || t.AsTime().Unix() == 0 {
				return "-"
			}
			return t.AsTime().UTC().Format(time.RFC3339)
		},
		"seconds": func() int { return int(refresh.Seconds()) },
	}
	pages := template.Must(template.New("").Funcs(funcs).ParseFS(templates, "templates/*.html"))
	return &Handler{api: api, log: log.With("component", "statuspage"), refresh: refresh, pages: pages}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "read-only: GET only", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var (
		page string
		data any
		err  error
	)
	switch r.URL.Path {
	case "/":
		page, data = "overview.html", h.overview(ctx)
	case "/service":
		page = "service.html"
		data, err = h.service(ctx, r.URL.Query().Get("name"))
	case "/client":
		page = "client.html"
		data, err = h.client(ctx, r.URL.Query().Get("node"), r.URL.Query().Get("service"))
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		h.log.Debug("status page request failed", "path", r.URL.Path, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var out bytes.Buffer // a page is sent whole or not at all
	if err := h.pages.ExecuteTemplate(&out, page, data); err != nil {
		h.log.Warn("status page not rendered", "path", r.URL.Path, "err", err)
		http.Error(w, "page not rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'")
	_, _ = out.WriteTo(w)
}

// count is one state and how many are in it.
type count struct {
	State string
	N     int
}

type overviewData struct {
	Sources  []*admin.Source
	Holds    []*admin.Hold
	Services []count
	NotLive  []*admin.ServiceSummary
	Total    int
	Clients  []*admin.ClientSummary
	ByState  []count
	Capacity []fill
	Refused  []string
	Errors   []string
}

// fill is one bounded table's use against its limit.
type fill struct {
	Table       string
	Used, Limit int32
	Percent     int
	Warn        bool // at or over 80 %: Holdfast warns, and refuses new entries at 100 %
}

// overview gathers every list; a failed one is named on the page, the rest still shown.
func (h *Handler) overview(ctx context.Context) overviewData {
	var d overviewData
	if r, err := h.api.ListSources(ctx, &admin.ListSourcesRequest{}); err != nil {
		d.Errors = append(d.Errors, "sources: "+err.Error())
	} else {
		d.Sources = r.GetSources()
	}
	if r, err := h.api.ListHolds(ctx, &admin.ListHoldsRequest{}); err != nil {
		d.Errors = append(d.Errors, "holds: "+err.Error())
	} else {
		d.Holds = r.GetHolds()
	}
	if r, err := h.api.ListServices(ctx, &admin.ListServicesRequest{}); err != nil {
		d.Errors = append(d.Errors, "services: "+err.Error())
	} else {
		states := map[string]int{}
		for _, s := range r.GetServices() {
			states[s.GetState()]++
			if s.GetState() != "live" {
				d.NotLive = append(d.NotLive, s)
			}
		}
		d.Total, d.Services = len(r.GetServices()), counts(states)
	}
	if r, err := h.api.ListClients(ctx, &admin.ListClientsRequest{}); err != nil {
		d.Errors = append(d.Errors, "clients: "+err.Error())
	} else {
		states := map[string]int{}
		for _, c := range r.GetClients() {
			states[clientState(c)]++
		}
		d.Clients, d.ByState = r.GetClients(), counts(states)
	}
	if c, err := h.api.GetCapacity(ctx, &admin.GetCapacityRequest{}); err != nil {
		d.Errors = append(d.Errors, "capacity: "+err.Error())
	} else {
		for _, f := range []fill{{Table: "services", Used: c.GetServices(), Limit: c.GetMaxServices()}, {Table: "endpoints", Used: c.GetEndpoints(), Limit: c.GetMaxEndpoints()},
			{Table: "tombstones", Used: c.GetTombstones(), Limit: c.GetMaxTombstones()}, {Table: "clients", Used: c.GetClients(), Limit: c.GetMaxClients()}} {
			if f.Limit > 0 {
				f.Percent = int(100 * int64(f.Used) / int64(f.Limit))
			}
			f.Warn = f.Percent >= 80
			d.Capacity = append(d.Capacity, f)
		}
		d.Refused = c.GetRefused()
	}
	return d
}

// clientState is what an operator first wants to know of a client.
func clientState(c *admin.ClientSummary) string {
	for _, t := range c.GetTypes() {
		if t.GetNacked() != nil {
			return "rejecting"
		}
	}
	for _, t := range c.GetTypes() {
		if t.GetInFlight() {
			return "updating"
		}
	}
	return "in step"
}

func counts(m map[string]int) []count {
	out := make([]count, 0, len(m))
	for s, n := range m {
		out = append(out, count{s, n})
	}
	slices.SortFunc(out, func(a, b count) int { return cmp.Or(b.N-a.N, strings.Compare(a.State, b.State)) })
	return out
}

func (h *Handler) service(ctx context.Context, name string) (*admin.ServiceDetail, error) {
	ns, n, _ := strings.Cut(name, "/")
	return h.api.GetService(ctx, &admin.GetServiceRequest{Namespace: ns, Name: n})
}

type clientData struct {
	Detail  *admin.ClientDetail
	Why     *admin.WhyResponse
	Service string
}

// client is one client, and with a service the why view of the two.
func (h *Handler) client(ctx context.Context, node, service string) (clientData, error) {
	d := clientData{Service: service}
	var err error
	if d.Detail, err = h.api.GetClient(ctx, &admin.GetClientRequest{NodeId: node}); err != nil {
		return d, err
	}
	if service != "" {
		d.Why, err = h.api.Why(ctx, &admin.WhyRequest{NodeId: node, Service: service})
	}
	return d, err
}
