package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/holdfast/holdfast/e2e/harness"
)

// waitStale waits until holdfast_source_stale for ns reads want.
func waitStale(ctx context.Context, t *testing.T, h *harness.Holdfast, ns string, want float64) {
	t.Helper()
	series := `holdfast_source_stale{source="` + ns + `"}`
	for {
		v, err := h.Metric(ctx, series)
		if err == nil && v == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never became %v (last %v, %v)", series, want, v, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readyWhileStale checks that /readyz says ready, and stale, with the source named.
func readyWhileStale(ctx context.Context, t *testing.T, h *harness.Holdfast, ns string) {
	t.Helper()
	code, body, err := h.Get(ctx, "/readyz")
	var r struct {
		Ready, Stale bool
		Sources      []struct{ Name, State string }
	}
	if err != nil || json.Unmarshal([]byte(body), &r) != nil {
		t.Fatalf("/readyz: %v %q", err, body)
	}
	if code != http.StatusOK || !r.Ready || !r.Stale || len(r.Sources) != 1 || r.Sources[0].Name != ns || r.Sources[0].State != "stale" {
		t.Errorf("/readyz while stale = %d %s; want 200, ready, stale, source %s stale", code, body, ns)
	}
}
