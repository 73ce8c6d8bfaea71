// Package promreg registers a component's Prometheus collectors on the registry it was given.
package promreg

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers every collector on reg, stopping at the first failure, which it reports
// as the component's.
func Register(reg prometheus.Registerer, component string, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("%s: register metrics: %w", component, err)
		}
	}
	return nil
}
