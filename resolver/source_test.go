package resolver

import (
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/holdfast/holdfast/internal/testkit"
)

// Every watch event is a sign of life; a bookmark is also recorded as such, for the admin API.
func TestObservedWatchRecordsEventsAndBookmarks(t *testing.T) {
	s := &source{name: "ns"}
	fake := watch.NewFake()
	w := s.observe(fake)
	defer w.Stop()
	recv := func(send func()) {
		t.Helper()
		go send()
		select {
		case <-w.ResultChan():
		case <-time.After(10 * time.Second):
			t.Fatal("event not passed through")
		}
	}
	recv(func() { fake.Add(&corev1.Service{}) })
	st := s.Status()
	if st.LastEvent.IsZero() || !st.LastBookmark.IsZero() {
		t.Fatalf("after an add: %+v", st)
	}
	recv(func() { fake.Action(watch.Bookmark, &corev1.Service{}) })
	if st2 := s.Status(); st2.LastBookmark.IsZero() || st2.LastBookmark.Before(st.LastEvent) {
		t.Fatalf("after a bookmark: %+v", st2)
	}
}

// A watch stopped while an event waits to be taken does not leave its forwarding goroutine
// behind (the 30-minute soak showed one more goroutine per restarted watch).
func TestObservedWatchStopEndsForwarding(t *testing.T) {
	s := &source{name: "ns"}
	before := runtime.NumGoroutine()
	for range 50 {
		fw := watch.NewFakeWithChanSize(1, false)
		w := s.observe(fw)
		fw.Add(&corev1.Service{}) // nobody reads it
		testkit.Eventually(t, "the event taken by the forwarding goroutine", func() bool { return len(fw.ResultChan()) == 0 })
		w.Stop()
	}
	testkit.Eventually(t, "the goroutines of 50 stopped watches gone", func() bool { return runtime.NumGoroutine() <= before+5 })
}
