package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const events = `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:1: quiet\n"}
{"Action":"pass","Package":"p","Test":"TestA","Elapsed":1.5}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: it broke\n"}
{"Action":"output","Package":"p","Test":"TestB/sub","Output":"    b_test.go:12: sub broke\n"}
{"Action":"fail","Package":"p","Test":"TestB/sub","Elapsed":0.2}
{"Action":"fail","Package":"p","Test":"TestB","Elapsed":12.25}
{"Action":"skip","Package":"p","Test":"TestC","Elapsed":0}
{"Action":"pass","Package":"q","Test":"TestD","Elapsed":30}
{"Action":"output","Package":"p","Output":"FAIL\tp\t14.0s\n"}
{"Action":"fail","Package":"p","Elapsed":14}
# github.com/x/y [build failed]
`

func TestStreamPrintsFailuresOnly(t *testing.T) {
	var out, keep bytes.Buffer
	if err := stream(strings.NewReader(events), &out, &keep); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"it broke", "sub broke", "FAIL\tp\t14.0s", "# github.com/x/y [build failed]"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "quiet") || strings.Contains(got, "=== RUN") {
		t.Errorf("a passing test's output was printed:\n%s", got)
	}
	if keep.String() != events {
		t.Errorf("kept events differ from the input:\n%s", keep.String())
	}
}

func TestReportSlowestAndCounts(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	if err := os.WriteFile(p, []byte(events), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := reportFiles([]string{p}, 2, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{
		"The 2 slowest tests:",
		"      30.0s  q TestD  PASS",
		"      12.2s  p TestB  FAIL",
		"tests: 2 passed, 2 failed, 1 skipped",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("report:\n%s\nwant:\n%s", out.String(), strings.Join(want, "\n"))
	}
}

func TestTailKeepsTheEnd(t *testing.T) {
	var tl tail
	line := strings.Repeat("x", 1023) + "\n"
	for range 2 * maxOutput / len(line) {
		tl.add(line)
	}
	tl.add("the failure\n")
	s := tl.String()
	if !strings.HasSuffix(s, "the failure\n") || len(s) > maxOutput+100 || !strings.Contains(s, "earlier lines left out") {
		t.Errorf("tail kept %d bytes, ends %q", len(s), s[len(s)-20:])
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-log", "x", "-report"}, {"-log", "x", "extra"}, {"-nope"}} {
		if err := run(args, strings.NewReader(""), &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) accepted", args)
		}
	}
}
