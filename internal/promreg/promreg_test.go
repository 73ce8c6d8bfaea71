package promreg

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegister(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"})
	if err := Register(reg, "x", a); err != nil {
		t.Fatal(err)
	}
	err := Register(reg, "y", prometheus.NewCounter(prometheus.CounterOpts{Name: "a_total", Help: "a"}))
	if err == nil || !strings.HasPrefix(err.Error(), "y: register metrics: ") {
		t.Errorf("a duplicate: %v", err)
	}
}
