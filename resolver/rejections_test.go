package resolver

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRejectionsCountOncePerObjectVersion(t *testing.T) {
	var logs bytes.Buffer
	l, err := newRejectionLog(slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	v1 := Rejection{Kind: "EndpointSlice", Namespace: "ns", Name: "s", ResourceVersion: "1", Reason: ReasonAddressInvalid, Detail: `"x"`}
	v2 := v1
	v2.ResourceVersion = "2"
	other := v1
	other.Reason, other.Detail = ReasonDuplicateEndpoint, "10.0.0.1:80"
	for range 5 { // the same object seen by five rebuilds
		l.report([]Rejection{v1, other})
	}
	l.report([]Rejection{v2})
	if got := testutil.ToFloat64(l.counter.WithLabelValues(ReasonAddressInvalid)); got != 2 {
		t.Errorf("address_invalid counted %v times, want 2 (two object versions)", got)
	}
	if got := testutil.ToFloat64(l.counter.WithLabelValues(ReasonDuplicateEndpoint)); got != 1 {
		t.Errorf("duplicate_endpoint counted %v times, want 1", got)
	}
	if n := strings.Count(logs.String(), "object rejected"); n != 3 {
		t.Errorf("%d log lines, want 3:\n%s", n, logs.String())
	}
}
