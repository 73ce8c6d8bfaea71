// Command testsummary reads `go test -json` and makes it readable, in two modes:
//
//	go test -json ./... | testsummary -log .testlog/unit.json
//	testsummary -report .testlog/*.json
//
// The first prints what a plain `go test` run would print for a package (its ok/FAIL line and the
// output of every failed test, not of the passing ones) and keeps the events in a file. The
// second reads the kept files of every run of a `make test` and prints the slowest top-level
// tests with their durations, then a closing count of passed, failed and skipped tests.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// maxOutput bounds what is kept of one test's output until it ends: a test that fails prints
// its last maxOutput bytes, which hold the failure (the logs of e2e tests can be megabytes).
const maxOutput = 1 << 20

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("testsummary", flag.ContinueOnError)
	logPath := fs.String("log", "", "stream mode: read go test -json from standard input, print it as go test would, and keep the events in this file")
	report := fs.Bool("report", false, "report mode: read the files named as arguments and print the slowest tests and the counts")
	slowest := fs.Int("slowest", 15, "report mode: how many of the slowest tests to print")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	switch {
	case *report && *logPath == "":
		return reportFiles(fs.Args(), *slowest, stdout)
	case !*report && *logPath != "" && fs.NArg() == 0:
		f, err := os.Create(*logPath)
		if err != nil {
			return err
		}
		if err := stream(stdin, stdout, f); err != nil {
			_ = f.Close()
			return err
		}
		return f.Close()
	default:
		return usageError{errors.New("use either -log FILE (reading standard input) or -report FILES")}
	}
}

// stream copies events to keep and prints package results and failed tests' output to out.
func stream(in io.Reader, out, keep io.Writer) error {
	outputs := map[string]*tail{} // package + " " + test → its output so far
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if _, err := keep.Write(append(line, '\n')); err != nil {
			return err
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// Not an event: the build's own output (a compile error), as go test prints it.
			fmt.Fprintln(out, string(line))
			continue
		}
		key := e.Package + " " + e.Test
		switch {
		case e.Action == "output" && e.Test == "":
			// The package's own lines: ok/FAIL, panics outside a test, TestMain's output.
			if !strings.HasPrefix(e.Output, "=== ") && e.Output != "PASS\n" {
				fmt.Fprint(out, e.Output)
			}
		case e.Action == "output":
			t := outputs[key]
			if t == nil {
				t = &tail{}
				outputs[key] = t
			}
			t.add(e.Output)
		case e.Action == "fail" && e.Test != "":
			if t := outputs[key]; t != nil {
				fmt.Fprint(out, t.String())
			}
			delete(outputs, key)
		case e.Action == "pass" || e.Action == "skip":
			delete(outputs, key)
		}
	}
	return sc.Err()
}

// tail keeps the last maxOutput bytes written to it, whole lines.
type tail struct {
	lines   []string
	size    int
	dropped int
}

func (t *tail) add(s string) {
	t.lines = append(t.lines, s)
	t.size += len(s)
	for t.size > maxOutput && len(t.lines) > 1 {
		t.size -= len(t.lines[0])
		t.lines = t.lines[1:]
		t.dropped++
	}
}

func (t *tail) String() string {
	var b strings.Builder
	if t.dropped > 0 {
		fmt.Fprintf(&b, "    [%d earlier lines left out]\n", t.dropped)
	}
	for _, l := range t.lines {
		b.WriteString(l)
	}
	return b.String()
}

// result is one test's end.
type result struct {
	pkg, test, action string
	elapsed           time.Duration
}

func reportFiles(paths []string, slowest int, out io.Writer) error {
	var results []result
	for _, p := range paths {
		rs, err := readResults(p)
		if err != nil {
			return err
		}
		results = append(results, rs...)
	}
	if len(results) == 0 {
		return fmt.Errorf("no test results in %v", paths)
	}
	var passed, failed, skipped int
	var top []result
	for _, r := range results {
		switch r.action {
		case "pass":
			passed++
		case "fail":
			failed++
		case "skip":
			skipped++
		}
		if !strings.Contains(r.test, "/") {
			top = append(top, r)
		}
	}
	slices.SortStableFunc(top, func(a, b result) int { return cmp.Compare(b.elapsed, a.elapsed) })
	fmt.Fprintf(out, "The %d slowest tests:\n", min(slowest, len(top)))
	for _, r := range top[:min(slowest, len(top))] {
		fmt.Fprintf(out, "  %8.1fs  %s %s  %s\n", r.elapsed.Seconds(), r.pkg, r.test, strings.ToUpper(r.action))
	}
	fmt.Fprintf(out, "tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	return nil
}

// readResults reads the end of every test (subtests included) in one kept file.
func readResults(path string) ([]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Test == "" {
			continue
		}
		if e.Action == "pass" || e.Action == "fail" || e.Action == "skip" {
			out = append(out, result{pkg: e.Package, test: e.Test, action: e.Action, elapsed: time.Duration(e.Elapsed * float64(time.Second))})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
