package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/holdfast/holdfast/xds/admin"
)

// TestStatusPage: the status page in a real browser (Debian's chromium, headless, driven over
// the DevTools protocol) on the admin scene. The overview lists the held change and the stale
// source; the client page shows the same causes as the admin API's Why; the service page its
// state; nothing logs an error in the browser's console. Screenshots go to
// $HOLDFAST_SCREENSHOTS (make screenshots: docs/screenshots) or a temporary directory.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	sc := newAdminScene(t)
	ctx := testContext(t)
	shots := os.Getenv("HOLDFAST_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	var (
		mu       sync.Mutex
		problems []string // console errors, exceptions, error log entries
	)
	if err := chromedp.Do(browser); err != nil { // starts the browser: Listen needs its target
		t.Fatalf("start chromium: %v", err)
	}
	err := chromedp.Listen(browser, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				problems = append(problems, fmt.Sprintf("console error: %v", e.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				problems = append(problems, fmt.Sprintf("%s: %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(browser, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enable the browser's log: %v", err)
	}
	base := "http://" + sc.h.StatusAddr
	page := func(name, path string) string {
		t.Helper()
		if err := chromedp.Do(browser, chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS("body"))); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		text, err := chromedp.Run(browser, chromedp.Text(chromedp.CSS("body")))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		shot, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := os.WriteFile(filepath.Join(shots, "status-"+name+".png"), shot, 0o644); err != nil { //nolint:gosec // a screenshot
			t.Fatal(err)
		}
		return text
	}

	overview := page("overview", "/")
	for _, want := range []string{"hold 1", "would withdraw", "stale", sc.ns + "/flaky", "degraded", "picky", "rejecting"} {
		if !strings.Contains(overview, want) {
			t.Errorf("overview lacks %q:\n%s", want, overview)
		}
	}
	// Capacity, as the admin API has it (the browser's text of the table: tab-separated cells).
	capacity, err := sc.admin.GetCapacity(ctx, &admin.GetCapacityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("services\t%d\t%d\t", capacity.GetServices(), capacity.GetMaxServices()),
		fmt.Sprintf("endpoints\t%d\t%d\t", capacity.GetEndpoints(), capacity.GetMaxEndpoints()),
		fmt.Sprintf("clients\t%d\t%d\t", capacity.GetClients(), capacity.GetMaxClients()),
	} {
		if !strings.Contains(overview, want) {
			t.Errorf("overview's capacity lacks %q:\n%s", want, overview)
		}
	}

	echo := sc.ns + "/echo"
	var why *admin.WhyResponse
	why, err = sc.admin.Why(ctx, &admin.WhyRequest{NodeId: "picky", Service: echo})
	if err != nil {
		t.Fatal(err)
	}
	client := page("client", "/client?node=picky&service="+echo)
	for _, r := range why.GetReasons() {
		if !strings.Contains(client, r.GetCause()) || !strings.Contains(client, r.GetDetail()[:min(40, len(r.GetDetail()))]) {
			t.Errorf("the client page lacks the admin API's reason %s (%q):\n%s", r.GetCause(), r.GetDetail(), client)
		}
	}
	if len(why.GetReasons()) == 0 {
		t.Error("the admin API gave picky no reason for echo: the scene is not what the test needs")
	}

	service := page("service", "/service?name="+echo)
	for _, want := range []string{"Service " + echo, "stale", "ClusterLoadAssignment"} {
		if !strings.Contains(service, want) {
			t.Errorf("service page lacks %q:\n%s", want, service)
		}
	}

	// Let late console messages arrive (the page has no script: there should be none at all).
	if err := chromedp.Do(browser, chromedp.Sleep(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the browser reported: %s", strings.Join(problems, "\n"))
	}
	t.Logf("screenshots in %s", shots)
}
