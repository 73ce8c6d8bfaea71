package resolver

import (
	"log/slog"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// rejectionLog counts and logs every rejection once per object version: a rebuild that sees
// the same bad slice again, or a re-list, adds nothing.
type rejectionLog struct {
	// set at construction, read-only; lru.Cache is safe for concurrent use
	log     *slog.Logger
	seen    *lru.Cache[Rejection, struct{}]
	counter *prometheus.CounterVec
}

// rejectionMemory bounds how many (object version, reason, detail) triples are remembered.
const rejectionMemory = 16384

func newRejectionLog(log *slog.Logger) (*rejectionLog, error) {
	seen, err := lru.New[Rejection, struct{}](rejectionMemory)
	if err != nil {
		return nil, err
	}
	return &rejectionLog{
		log:  log,
		seen: seen,
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_objects_rejected_total",
			Help: "Elements of Kubernetes objects left out of discovery, by reason; each object version counts once.",
		}, []string{"reason"}),
	}, nil
}

func (l *rejectionLog) report(rs []Rejection) {
	for _, r := range rs {
		if ok, _ := l.seen.ContainsOrAdd(r, struct{}{}); ok {
			continue
		}
		l.counter.WithLabelValues(r.Reason).Inc()
		l.log.Warn("object rejected", "decision", "object_rejected", "subject", r.Namespace+"/"+r.Name, "kind", r.Kind, "namespace", r.Namespace, "name", r.Name,
			"resource_version", r.ResourceVersion, "reason", r.Reason, "detail", r.Detail)
	}
}
