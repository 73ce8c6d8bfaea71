package statuspage

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/holdfast/holdfast/xds/admin"
)

// fakeAPI answers like the admin API, with a service whose reason is hostile HTML.
type fakeAPI struct{}

func (fakeAPI) ListServices(context.Context, *admin.ListServicesRequest) (*admin.ListServicesResponse, error) {
	return &admin.ListServicesResponse{Services: []*admin.ServiceSummary{
		{Namespace: "shop", Name: "cart", State: "degraded", Reason: `<script>alert(1)</script>`},
		{Namespace: "shop", Name: "web", State: "live"}}}, nil
}
func (fakeAPI) GetService(_ context.Context, r *admin.GetServiceRequest) (*admin.ServiceDetail, error) {
	if r.GetName() != "cart" {
		return nil, status.Error(codes.NotFound, "no service")
	}
	return &admin.ServiceDetail{Summary: &admin.ServiceSummary{Namespace: "shop", Name: "cart", State: "degraded"}}, nil
}
func (fakeAPI) ListClients(context.Context, *admin.ListClientsRequest) (*admin.ListClientsResponse, error) {
	return &admin.ListClientsResponse{Clients: []*admin.ClientSummary{{NodeId: "a", Types: []*admin.TypeStatus{{InFlight: true}}}}}, nil
}
func (fakeAPI) GetClient(context.Context, *admin.GetClientRequest) (*admin.ClientDetail, error) {
	return &admin.ClientDetail{Summary: &admin.ClientSummary{NodeId: "a"}}, nil
}
func (fakeAPI) ListSources(context.Context, *admin.ListSourcesRequest) (*admin.ListSourcesResponse, error) {
	return nil, status.Error(codes.Unavailable, "sources unavailable")
}
func (fakeAPI) ListHolds(context.Context, *admin.ListHoldsRequest) (*admin.ListHoldsResponse, error) {
	return &admin.ListHoldsResponse{}, nil
}
func (fakeAPI) Why(context.Context, *admin.WhyRequest) (*admin.WhyResponse, error) {
	return &admin.WhyResponse{Reasons: []*admin.WhyReason{{Cause: "nack", Detail: "rejected"}}}, nil
}

func (fakeAPI) GetCapacity(context.Context, *admin.GetCapacityRequest) (*admin.Capacity, error) {
	return &admin.Capacity{Services: 18000, MaxServices: 20000, Endpoints: 10, MaxEndpoints: 500000, MaxTombstones: 10000, Clients: 1, MaxClients: 10000,
		Refused: []string{"shop/huge"}}, nil
}

func TestPages(t *testing.T) {
	srv := httptest.NewServer(New(fakeAPI{}, nil, 5*time.Second))
	defer srv.Close()
	for _, tt := range []struct {
		method, path string
		code         int
		want, not    []string
	}{
		{"GET", "/", 200, []string{"degraded", "&lt;script&gt;", "updating", "sources: rpc error", `content="5"`,
			`<td>services</td><td>18000</td><td>20000</td><td class="bad">90 %</td>`, `<td>endpoints</td><td>10</td><td>500000</td><td>0 %</td>`, "Refused for want of room: shop/huge"}, []string{"<script>"}},
		{"GET", "/service?name=shop/cart", 200, []string{"Service shop/cart"}, nil},
		{"GET", "/service?name=shop/nope", 400, []string{"no service"}, nil},
		{"GET", "/client?node=a&service=shop/cart", 200, []string{"nack", "rejected"}, nil},
		{"GET", "/client?node=a", 200, []string{"Client a", `name="service"`}, nil},
		{"POST", "/", 405, []string{"read-only"}, nil},
		{"GET", "/release", 404, nil, nil},
	} {
		req, err := http.NewRequestWithContext(context.Background(), tt.method, srv.URL+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		b := string(body)
		if resp.StatusCode != tt.code {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.code)
		}
		for _, w := range tt.want {
			if !strings.Contains(b, w) {
				t.Errorf("%s %s lacks %q", tt.method, tt.path, w)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(b, n) {
				t.Errorf("%s %s contains %q", tt.method, tt.path, n)
			}
		}
	}
}
