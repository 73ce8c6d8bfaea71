// Package fleet builds synthetic fleets of services for benchmarks and load tests.
package fleet

import (
	"fmt"
	"time"

	"github.com/holdfast/holdfast/resolver"
)

// Key names service i of a fleet: svc-<i> in namespace ns-<i mod 50>.
func Key(i int) resolver.Key {
	return resolver.Key{Namespace: fmt.Sprintf("ns-%d", i%50), Name: fmt.Sprintf("svc-%d", i)}
}

// New builds n services, each with one port (80) and per ready endpoints spread over three
// zones, with the provenance a real resolver would record.
func New(n, per int) map[resolver.Key]*resolver.Service {
	out := make(map[resolver.Key]*resolver.Service, n)
	now := time.Now()
	for i := range n {
		k := Key(i)
		eps := make([]resolver.Endpoint, per)
		for j := range eps {
			eps[j] = resolver.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", i/250%250, i%250, j+1), Port: 8080,
				Ready: true, Serving: true, Zone: fmt.Sprintf("zone-%d", j%3), NodeName: fmt.Sprintf("node-%d", j)}
		}
		out[k] = &resolver.Service{Key: k, Ports: []resolver.Port{{Name: "http", Port: 80, Endpoints: eps}},
			Origin: resolver.Origin{ServiceVersion: fmt.Sprint(1000000 + i), ObservedAt: now,
				Slices: []resolver.ObjectVersion{{Name: k.Name + "-x7k2p", ResourceVersion: fmt.Sprint(2000000 + i)}}}}
	}
	return out
}
