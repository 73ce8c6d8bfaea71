package resolver

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	k8stesting "k8s.io/client-go/testing"
)

// exportsClient answers ServiceExport lists and watches: with exports (created at the given
// times, by service name), or, with installed false, as an API server without the CRD does.
func exportsClient(installed bool, exports map[string]time.Time) *metadatafake.FakeMetadataClient {
	c := metadatafake.NewSimpleMetadataClient(runtime.NewScheme())
	c.PrependReactor("list", "serviceexports", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if !installed {
			return true, nil, apierrors.NewNotFound(ServiceExportResource.GroupResource(), "")
		}
		// The fake hands a metav1.List of PartialObjectMetadata on as a PartialObjectMetadataList.
		l := &metav1.List{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
		for name, at := range exports {
			l.Items = append(l.Items, runtime.RawExtension{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{
				Namespace: a.GetNamespace(), Name: name, CreationTimestamp: metav1.NewTime(at), ResourceVersion: "1"}}})
		}
		return true, l, nil
	})
	c.PrependWatchReactor("serviceexports", func(k8stesting.Action) (bool, watch.Interface, error) {
		if !installed {
			return true, nil, apierrors.NewNotFound(ServiceExportResource.GroupResource(), "")
		}
		return true, watch.NewFake(), nil
	})
	return c
}

// TestResolverExports: a Service with a ServiceExport is exported (as of the export's
// creation), one without is not; a cluster without the CRD syncs all the same, exports
// nothing, and says so (log, holdfast_source_serviceexports_missing).
func TestResolverExports(t *testing.T) {
	a, b := Key{Namespace: "ns", Name: "a"}, Key{Namespace: "ns", Name: "b"}
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name      string
		installed bool
		exported  map[Key]bool
		missing   float64
	}{
		{"CRD installed", true, map[Key]bool{a: true, b: false}, 0},
		{"no CRD", false, map[Key]bool{a: false, b: false}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			out := make(resolutions, 100)
			r, err := New(Options{Client: fake.NewClientset(svcNamed("a"), sliceFor("a", "10.0.0.1"), svcNamed("b"), sliceFor("b", "10.0.0.2")),
				Exports: exportsClient(tt.installed, map[string]time.Time{"a": at}), Namespaces: []string{"ns"}, Registry: reg}, out)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = r.Run(ctx) }()
			res := out.next(t, func(res Resolution) bool { return res.Synced && len(res.Services) == 2 })
			for k, want := range tt.exported {
				if got := res.Services[k].Exported(); got != want {
					t.Errorf("%v exported %v, want %v", k, got, want)
				}
			}
			if want := tt.exported[a]; want && !res.Services[a].ExportedAt.Equal(at) {
				t.Errorf("exported at %v, want the ServiceExport's creation %v", res.Services[a].ExportedAt, at)
			}
			if got := testutil.ToFloat64(r.metrics.exportsMissing.WithLabelValues("ns")); got != tt.missing {
				t.Errorf("holdfast_source_serviceexports_missing = %v, want %v", got, tt.missing)
			}
		})
	}
}

// TestResolverExportsCRDInstalledLater: a cluster that had no ServiceExport CRD when its
// source synced sees exports once the CRD is installed, without a restart: the watch of a
// resource the API server does not serve ends at the watch timeout and is tried again.
func TestResolverExportsCRDInstalledLater(t *testing.T) {
	a := Key{Namespace: "ns", Name: "a"}
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var installed atomic.Bool
	watchers := make(chan *watch.FakeWatcher, 10)
	md := metadatafake.NewSimpleMetadataClient(runtime.NewScheme())
	notFound := apierrors.NewNotFound(ServiceExportResource.GroupResource(), "")
	md.PrependReactor("list", "serviceexports", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !installed.Load() {
			return true, nil, notFound
		}
		return true, &metav1.List{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}, nil
	})
	md.PrependWatchReactor("serviceexports", func(k8stesting.Action) (bool, watch.Interface, error) {
		if !installed.Load() {
			return true, nil, notFound
		}
		w := watch.NewFake()
		watchers <- w
		return true, w, nil
	})
	out := make(resolutions, 100)
	r, err := New(Options{Client: fake.NewClientset(svcNamed("a"), sliceFor("a", "10.0.0.1")), Exports: md,
		Namespaces: []string{"ns"}, WatchTimeout: 2 * time.Second}, out)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	res := out.next(t, func(res Resolution) bool { return res.Synced && res.Services[a] != nil })
	if res.Services[a].Exported() || testutil.ToFloat64(r.metrics.exportsMissing.WithLabelValues("ns")) != 1 {
		t.Fatalf("without the CRD: a exported %v, missing gauge %v", res.Services[a].Exported(), testutil.ToFloat64(r.metrics.exportsMissing.WithLabelValues("ns")))
	}

	installed.Store(true)
	go func() { // the CRD is there, and someone exports a
		select {
		case w := <-watchers:
			w.Add(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", CreationTimestamp: metav1.NewTime(at), ResourceVersion: "2"}})
		case <-ctx.Done():
		}
	}()
	res = out.next(t, func(res Resolution) bool { return res.Services[a] != nil && res.Services[a].Exported() })
	if !res.Services[a].ExportedAt.Equal(at) {
		t.Errorf("exported at %v, want %v", res.Services[a].ExportedAt, at)
	}
	if got := testutil.ToFloat64(r.metrics.exportsMissing.WithLabelValues("ns")); got != 0 {
		t.Errorf("holdfast_source_serviceexports_missing = %v once the CRD is installed, want 0", got)
	}
}
