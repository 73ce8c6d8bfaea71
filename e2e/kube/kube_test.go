package kube

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The fault hooks later tests rely on: a paused API server answers nothing, a resumed one answers
// again, and etcd and the API server can be restarted in place. This test breaks its API server,
// so it has its own.
func TestFaultHooks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	list := func(timeout time.Duration) error {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := c.Client.CoreV1().Namespaces().List(lctx, metav1.ListOptions{})
		return err
	}
	if err := list(10 * time.Second); err != nil {
		t.Fatalf("fresh cluster: %v", err)
	}

	if err := c.APIServer.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := list(time.Second); err == nil {
		t.Error("a paused API server answered")
	}
	if err := c.APIServer.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := list(10 * time.Second); err != nil {
		t.Errorf("after resume: %v", err)
	}

	if err := c.Etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := c.APIServer.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := list(10 * time.Second); err != nil {
		t.Errorf("after restarts: %v", err)
	}
}
