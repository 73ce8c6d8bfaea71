package resolver

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func svc(ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: ports, ClusterIP: "10.0.0.1"},
	}
}

type ep struct {
	addrs                       []string
	ready, serving, terminating *bool
	zone                        string
}

func slice(name string, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: at,
		Ports:       ports,
	}
	for _, e := range eps {
		de := discoveryv1.Endpoint{Addresses: e.addrs, Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if e.zone != "" {
			de.Zone = ptr(e.zone)
		}
		s.Endpoints = append(s.Endpoints, de)
	}
	return s
}

func port(name string, p int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(p), Protocol: ptr(corev1.ProtocolTCP)}
}

func TestBuildService(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	httpPort := corev1.ServicePort{Name: "http", Port: 80}
	v4 := discoveryv1.AddressTypeIPv4
	tests := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   *Service
	}{
		{
			name: "two slices merge, sorted, target ports from the slices",
			svc:  svc(httpPort),
			slices: []*discoveryv1.EndpointSlice{
				slice("a", v4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.1.0.2"}, ready: yes, zone: "z1"}),
				slice("b", v4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.1.0.1"}, ready: yes, zone: "z2"}),
			},
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{{Name: "http", Port: 80, Endpoints: []Endpoint{
				{Address: "10.1.0.1", Port: 8080, Ready: true, Serving: true, Zone: "z2"},
				{Address: "10.1.0.2", Port: 8080, Ready: true, Serving: true, Zone: "z1"},
			}}}},
		},
		{
			name: "nil conditions default to ready and serving",
			svc:  svc(httpPort),
			slices: []*discoveryv1.EndpointSlice{
				slice("a", v4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.1.0.1"}}),
			},
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{{Name: "http", Port: 80, Endpoints: []Endpoint{
				{Address: "10.1.0.1", Port: 8080, Ready: true, Serving: true},
			}}}},
		},
		{
			name: "not ready and terminating conditions are kept as reported",
			svc:  svc(httpPort),
			slices: []*discoveryv1.EndpointSlice{
				slice("a", v4, []discoveryv1.EndpointPort{port("http", 8080)},
					ep{addrs: []string{"10.1.0.1"}, ready: no},
					ep{addrs: []string{"10.1.0.2"}, ready: no, serving: yes, terminating: yes}),
			},
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{{Name: "http", Port: 80, Endpoints: []Endpoint{
				{Address: "10.1.0.1", Port: 8080},
				{Address: "10.1.0.2", Port: 8080, Serving: true, Terminating: true},
			}}}},
		},
		{
			name: "the same address in two slices is listed once, ready wins",
			svc:  svc(httpPort),
			slices: []*discoveryv1.EndpointSlice{
				slice("a", v4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.1.0.1"}, ready: no}),
				slice("b", v4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.1.0.1"}, ready: yes}),
			},
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{{Name: "http", Port: 80, Endpoints: []Endpoint{
				{Address: "10.1.0.1", Port: 8080, Ready: true, Serving: true},
			}}}},
		},
		{
			name: "slice ports match service ports by name; unmatched slices give nothing",
			svc:  svc(corev1.ServicePort{Name: "grpc", Port: 9000}, httpPort),
			slices: []*discoveryv1.EndpointSlice{
				slice("a", v4, []discoveryv1.EndpointPort{port("http", 8080), port("grpc", 9090)}, ep{addrs: []string{"10.1.0.1"}}),
				slice("b", v4, []discoveryv1.EndpointPort{port("metrics", 9100)}, ep{addrs: []string{"10.1.0.9"}}),
			},
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{
				{Name: "http", Port: 80, Endpoints: []Endpoint{{Address: "10.1.0.1", Port: 8080, Ready: true, Serving: true}}},
				{Name: "grpc", Port: 9000, Endpoints: []Endpoint{{Address: "10.1.0.1", Port: 9090, Ready: true, Serving: true}}},
			}},
		},
		{
			name: "addresses not matching the slice's type, and FQDN slices, are skipped",
			svc:  svc(httpPort),
			slices: []*discoveryv1.EndpointSlice{
				slice("a", v4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"fd00::1", "not-an-ip", "10.1.0.1"}}),
				slice("b", discoveryv1.AddressTypeFQDN, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"db.example.com"}}),
				slice("c", discoveryv1.AddressTypeIPv6, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"fd00::2"}}),
			},
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{{Name: "http", Port: 80, Endpoints: []Endpoint{
				{Address: "10.1.0.1", Port: 8080, Ready: true, Serving: true},
				{Address: "fd00::2", Port: 8080, Ready: true, Serving: true},
			}}}},
		},
		{
			name: "a service without slices keeps its ports with no endpoints",
			svc:  svc(httpPort),
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{{Name: "http", Port: 80}}},
		},
		{
			name: "UDP ports are not served",
			svc:  svc(corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, httpPort),
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Ports: []Port{{Name: "http", Port: 80}}},
		},
		{
			name: "ExternalName services are not served",
			svc: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com", Ports: []corev1.ServicePort{httpPort}}},
			want: nil,
		},
		{
			name: "headless services are served",
			svc: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
				Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: ptr("kubernetes.io/h2c")}}}},
			want: &Service{Key: Key{Namespace: "ns", Name: "web"}, Headless: true, Ports: []Port{{Name: "http", Port: 80, AppProtocol: "kubernetes.io/h2c"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := buildService(tt.svc, tt.slices, nil)
			if got != nil {
				got.Origin = Origin{} // provenance has its own test
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("buildService:\n got  %+v\n want %+v", got, tt.want)
			}
		})
	}
}

func TestBuildServiceRecordsOrigin(t *testing.T) {
	s := svc(corev1.ServicePort{Name: "http", Port: 80})
	s.ResourceVersion = "41"
	s.UID = "5c1e2f3a-0000-4000-8000-000000000001"
	b := slice("web-b", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.0.0.2"}})
	b.ResourceVersion = "57"
	a := slice("web-a", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.0.0.1"}})
	a.ResourceVersion = "63"
	got, _ := buildService(s, []*discoveryv1.EndpointSlice{b, a}, nil)
	want := Origin{ServiceVersion: "41", Slices: []ObjectVersion{{"web-a", "63"}, {"web-b", "57"}}}
	if !reflect.DeepEqual(got.Origin, want) {
		t.Errorf("origin = %+v, want %+v", got.Origin, want)
	}
	if got.UID != string(s.UID) {
		t.Errorf("UID = %q, want the Service's %q: it names the incarnation clients are served", got.UID, s.UID)
	}
}

func TestEndpointHealth(t *testing.T) {
	tests := []struct {
		e    Endpoint
		want Health
	}{
		{Endpoint{Ready: true, Serving: true}, Healthy},
		{Endpoint{Ready: false, Serving: true, Terminating: true}, Draining},
		{Endpoint{Ready: false, Serving: false, Terminating: true}, Excluded},
		{Endpoint{Ready: false, Serving: true}, Excluded},
		{Endpoint{}, Excluded},
	}
	for _, tt := range tests {
		if got := tt.e.Health(); got != tt.want {
			t.Errorf("%+v.Health() = %v, want %v", tt.e, got, tt.want)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, tt := range []struct {
		in   Endpoint
		want string
	}{
		{Endpoint{Address: "10.0.0.1", Port: 80}, "10.0.0.1:80"},
		{Endpoint{Address: "fd00::1", Port: 443}, "[fd00::1]:443"},
	} {
		if got := tt.in.HostPort(); got != tt.want {
			t.Errorf("HostPort(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestPortNameMismatchReported: a Service port named grpc whose EndpointSlice names its port
// http. Kubernetes allows it, and nothing can be routed: the slice's port is a rejected element
// (with a reason naming both sides), and the service's port is served empty, saying why. A
// service with no slice at all says nothing about its ports (no endpoints yet is normal).
func TestPortNameMismatchReported(t *testing.T) {
	grpcPort := corev1.ServicePort{Name: "grpc", Port: 80}
	mismatched := slice("web-a", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8080)}, ep{addrs: []string{"10.0.0.1"}})
	mismatched.ResourceVersion = "7"
	got, rejections := buildService(svc(grpcPort), []*discoveryv1.EndpointSlice{mismatched}, nil)
	if len(rejections) != 1 || rejections[0].Reason != ReasonPortNameMismatch || rejections[0].Name != "web-a" ||
		!strings.Contains(rejections[0].Detail, `port "http" matches no port of service web (its ports: "grpc")`) {
		t.Fatalf("rejections %+v", rejections)
	}
	if len(got.Ports) != 1 || len(got.Ports[0].Endpoints) != 0 ||
		got.Ports[0].Unmatched != `no EndpointSlice has a port named "grpc" (they have: "http")` {
		t.Fatalf("port %+v: want it served empty, saying why", got.Ports)
	}
	// The same service with no slice yet: nothing to report.
	got, rejections = buildService(svc(grpcPort), nil, nil)
	if len(rejections) != 0 || got.Ports[0].Unmatched != "" {
		t.Errorf("no slices: rejections %v, port %+v", rejections, got.Ports[0])
	}
	// Matched by name again: nothing to report.
	fixed := slice("web-a", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("grpc", 8080)}, ep{addrs: []string{"10.0.0.1"}})
	got, rejections = buildService(svc(grpcPort), []*discoveryv1.EndpointSlice{fixed}, nil)
	if len(rejections) != 0 || got.Ports[0].Unmatched != "" || len(got.Ports[0].Endpoints) != 1 {
		t.Errorf("matching names: rejections %v, port %+v", rejections, got.Ports[0])
	}
}

func TestBuildServiceRejections(t *testing.T) {
	httpPort := corev1.ServicePort{Name: "http", Port: 80}
	v4, v6 := discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6
	good := port("http", 8080)
	noNumber := discoveryv1.EndpointPort{Name: ptr("http")}
	tests := []struct {
		name        string
		slices      []*discoveryv1.EndpointSlice
		wantReasons []string
		wantUsable  int
	}{
		{"clean", []*discoveryv1.EndpointSlice{slice("a", v4, []discoveryv1.EndpointPort{good}, ep{addrs: []string{"10.0.0.1"}})}, nil, 1},
		{"bad address beside a good one", []*discoveryv1.EndpointSlice{
			slice("a", v4, []discoveryv1.EndpointPort{good}, ep{addrs: []string{"nonsense", "10.0.0.1"}}),
		}, []string{ReasonAddressInvalid}, 1},
		{"wrong family", []*discoveryv1.EndpointSlice{
			slice("a", v6, []discoveryv1.EndpointPort{good}, ep{addrs: []string{"10.0.0.1"}}),
		}, []string{ReasonAddressFamily}, 0},
		{"FQDN slice", []*discoveryv1.EndpointSlice{
			slice("a", discoveryv1.AddressTypeFQDN, []discoveryv1.EndpointPort{good}, ep{addrs: []string{"db.example.com"}}),
		}, []string{ReasonAddressType}, 0},
		{"port without a number", []*discoveryv1.EndpointSlice{
			slice("a", v4, []discoveryv1.EndpointPort{noNumber}, ep{addrs: []string{"10.0.0.1"}}),
		}, []string{ReasonPortInvalid}, 0},
		{"duplicate across slices", []*discoveryv1.EndpointSlice{
			slice("a", v4, []discoveryv1.EndpointPort{good}, ep{addrs: []string{"10.0.0.1"}}),
			slice("b", v4, []discoveryv1.EndpointPort{good}, ep{addrs: []string{"10.0.0.1"}}),
		}, []string{ReasonDuplicateEndpoint}, 1},
		{"a slice port the service does not name", []*discoveryv1.EndpointSlice{
			slice("a", v4, []discoveryv1.EndpointPort{good, port("metrics", 9090)}, ep{addrs: []string{"10.0.0.1"}}),
		}, []string{ReasonPortNameMismatch}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rejections := buildService(svc(httpPort), tt.slices, nil)
			var reasons []string
			for _, r := range rejections {
				reasons = append(reasons, r.Reason)
			}
			if !reflect.DeepEqual(reasons, tt.wantReasons) {
				t.Errorf("reasons = %v, want %v", reasons, tt.wantReasons)
			}
			if u := got.usableCount(); u != tt.wantUsable {
				t.Errorf("usable endpoints = %d, want %d", u, tt.wantUsable)
			}
		})
	}
	_, rs := buildService(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}}, nil, nil)
	if len(rs) != 1 || rs[0].Reason != ReasonExternalName {
		t.Errorf("ExternalName: rejections %v", rs)
	}
}

func TestUnusableKeepsLastGoodState(t *testing.T) {
	r := &Resolver{opts: Options{MaxEndpointsPerService: 2}}
	usable := &Service{Ports: []Port{{Port: 80, Endpoints: []Endpoint{{Address: "10.0.0.1", Port: 80, Ready: true}}}}}
	empty := &Service{Ports: []Port{{Port: 80}}}
	big := &Service{Ports: []Port{{Port: 80, Endpoints: make([]Endpoint, 3)}}}
	bad := []Rejection{{Kind: "EndpointSlice", Reason: ReasonAddressInvalid}}
	tests := []struct {
		name             string
		prev, next       *Service
		rejections       []Rejection
		wantKeepPrevious bool
	}{
		{"valid scale to zero goes through", usable, empty, nil, false},
		{"bad input leaving nothing keeps the last good state", usable, empty, bad, true},
		{"bad input with something left goes through", usable, usable, bad, false},
		{"first sight of a bad service", nil, empty, bad, false},
		{"too many endpoints", usable, big, nil, true},
		{"deletion goes through", usable, nil, bad, false},
		{"a bad annotation does not make a scale to zero look like bad input", usable, empty,
			[]Rejection{{Kind: "Service", Reason: ReasonAnnotationInvalid}}, false},
	}
	for _, tt := range tests {
		if got := r.unusable(tt.prev, tt.next, tt.rejections) != ""; got != tt.wantKeepPrevious {
			t.Errorf("%s: keep previous = %v, want %v", tt.name, got, tt.wantKeepPrevious)
		}
	}
}

// TestBuildServiceTopology: zones come from the slice, else from the endpoint's Node; regions
// from the Node; hints are kept; the locality annotation and trafficDistribution are read,
// and a bad annotation is reported and ignored.
func TestBuildServiceTopology(t *testing.T) {
	nodes := func(name string) (string, string, bool) {
		switch name {
		case "node-a":
			return "zone-a", "region-1", true
		case "node-b":
			return "zone-b", "region-1", true
		}
		return "", "", false
	}
	httpPort := corev1.ServicePort{Name: "http", Port: 80}
	s := slice("web-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{port("http", 8080)},
		ep{addrs: []string{"10.0.0.1"}, zone: "zone-x"}, // the slice's zone wins over the Node's
		ep{addrs: []string{"10.0.0.2"}},                 // zone from node-b
		ep{addrs: []string{"10.0.0.3"}},                 // unknown Node: nothing
		ep{addrs: []string{"10.0.0.4"}},                 // no Node at all
	)
	s.Endpoints[0].NodeName = ptr("node-a")
	s.Endpoints[1].NodeName = ptr("node-b")
	s.Endpoints[1].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-c"}, {Name: "zone-b"}, {Name: "zone-b"}}}
	s.Endpoints[2].NodeName = ptr("node-gone")
	want := []Endpoint{
		{Address: "10.0.0.1", Port: 8080, Ready: true, Serving: true, Zone: "zone-x", NodeName: "node-a", Region: "region-1"},
		{Address: "10.0.0.2", Port: 8080, Ready: true, Serving: true, Zone: "zone-b", NodeName: "node-b", Region: "region-1", ForZones: []string{"zone-b", "zone-c"}},
		{Address: "10.0.0.3", Port: 8080, Ready: true, Serving: true, NodeName: "node-gone"},
		{Address: "10.0.0.4", Port: 8080, Ready: true, Serving: true},
	}
	tests := []struct {
		name         string
		annotation   string
		distribution string
		nodes        topology
		wantLocality string
		wantReason   string
	}{
		{"nodes watched, region policy", LocalityRegion, "", nodes, LocalityRegion, ""},
		{"off", LocalityOff, "PreferClose", nodes, LocalityOff, ""},
		{"a bad annotation is reported and ignored", "nearest", "PreferClose", nodes, "", ReasonAnnotationInvalid},
		{"nodes not watched", "", "", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sv := svc(httpPort)
			if tt.annotation != "" {
				sv.Annotations = map[string]string{LocalityAnnotation: tt.annotation}
			}
			if tt.distribution != "" {
				sv.Spec.TrafficDistribution = ptr(tt.distribution)
			}
			got, rs := buildService(sv, []*discoveryv1.EndpointSlice{s}, tt.nodes)
			if got.Locality != tt.wantLocality || got.TrafficDistribution != tt.distribution {
				t.Errorf("locality %q, distribution %q; want %q, %q", got.Locality, got.TrafficDistribution, tt.wantLocality, tt.distribution)
			}
			switch {
			case tt.wantReason == "" && len(rs) != 0:
				t.Errorf("rejections %v", rs)
			case tt.wantReason != "" && (len(rs) != 1 || rs[0].Reason != tt.wantReason || rs[0].Kind != "Service"):
				t.Errorf("rejections %v, want one %s", rs, tt.wantReason)
			}
			wantEps := want
			if tt.nodes == nil {
				wantEps = []Endpoint{
					{Address: "10.0.0.1", Port: 8080, Ready: true, Serving: true, Zone: "zone-x", NodeName: "node-a"},
					{Address: "10.0.0.2", Port: 8080, Ready: true, Serving: true, NodeName: "node-b", ForZones: []string{"zone-b", "zone-c"}},
					{Address: "10.0.0.3", Port: 8080, Ready: true, Serving: true, NodeName: "node-gone"},
					{Address: "10.0.0.4", Port: 8080, Ready: true, Serving: true},
				}
			}
			if !reflect.DeepEqual(got.Ports[0].Endpoints, wantEps) {
				t.Errorf("endpoints\n got %+v\nwant %+v", got.Ports[0].Endpoints, wantEps)
			}
		})
	}
}
