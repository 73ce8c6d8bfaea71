package resolver

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
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
