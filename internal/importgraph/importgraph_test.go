package importgraph

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/holdfast/holdfast"

// pkg is one directory's Go package: what its production files and its test files import of
// Holdfast's own packages, as paths relative to the module root.
type pkg struct {
	imports, testImports []string
}

// scan parses the imports of every Go package under root, skipping testdata and node_modules.
func scan(t *testing.T, root string) map[string]*pkg {
	t.Helper()
	pkgs := map[string]*pkg{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "testdata", "node_modules", ".git":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		p := pkgs[rel]
		if p == nil {
			p = &pkg{}
			pkgs[rel] = p
		}
		for _, spec := range f.Imports {
			imp, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			own, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				if imp == module {
					own = "."
				} else if strings.HasPrefix(imp, "google.golang.org/grpc") && !strings.HasSuffix(path, "_test.go") {
					own = "@grpc" // translation must not use gRPC
				} else {
					continue
				}
			}
			if strings.HasSuffix(path, "_test.go") {
				p.testImports = append(p.testImports, own)
			} else {
				p.imports = append(p.imports, own)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkgs {
		slices.Sort(p.imports)
		p.imports = slices.Compact(p.imports)
		slices.Sort(p.testImports)
		p.testImports = slices.Compact(p.testImports)
	}
	return pkgs
}

// table reads the package table of docs/design.md: package → the Holdfast packages it may
// import ("any" for e2e/...).
func table(t *testing.T, root string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "docs", "design.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## Packages and imports":
			in = true
			continue
		case in && strings.HasPrefix(line, "## "):
			in = false
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 3 {
			t.Fatalf("design.md: a package row has %d cells, want 3: %s", len(cells), line)
		}
		name := strings.Trim(strings.TrimSpace(cells[0]), "`")
		var imports []string
		for _, c := range strings.Split(cells[2], ",") {
			c = strings.Trim(strings.TrimSpace(c), "`")
			if c != "—" && c != "" {
				imports = append(imports, c)
			}
		}
		slices.Sort(imports)
		if _, dup := rows[name]; dup {
			t.Errorf("design.md lists %s twice", name)
		}
		rows[name] = imports
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("design.md has no package table under \"## Packages and imports\"")
	}
	return rows
}

// under says whether pkg is dir or inside it.
func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// flow is the direction of the data, whatever the table says: an import from a package
// under from of a package under to is against it. Test files are held to the first two rules.
var flow = []struct {
	from, to, why string
	tests         bool
}{
	{"", "e2e", "only the end-to-end tests import their harness", true},
	{"", "cmd", "programs are not libraries", true},
	{"", "internal/testkit", "a test helper in production code", false},
	{"", "internal/testpki", "a test helper in production code", false},
	{"", "xds/internal/xdstest", "a test helper in production code", false},
	{"xds/resource", "", "the shared vocabulary imports nothing of Holdfast", false},
	{"xds/translate", "xds/serve", "translation does not know serving", false},
	{"xds/translate", "xds/publish", "translation does not know publishing", false},
	{"xds/translate", "cache", "translation is a function of the model, not of the store", false},
	{"xds/translate", "@grpc", "translation is pure: no gRPC", false},
	{"xds/serve", "xds/translate", "serving does not know translation", false},
	{"xds/serve", "xds/publish", "serving does not know publishing", false},
	{"xds/serve", "cache", "serving does not know the store", false},
	{"xds/serve", "resolver", "serving does not know the model", false},
	{"resolver", "cache", "the resolver feeds the cache, not the reverse", false},
	{"resolver", "xds", "the resolver knows nothing of xDS", false},
	{"cache", "xds", "the cache knows nothing of xDS", false},
	{"xds", "internal/adminserver", "process-wide parts import xds, not the reverse", false},
	{"xds", "internal/agent", "process-wide parts import xds, not the reverse", false},
}

// against returns why an import of imp by a file of package from goes against the flow, or ""
// if it does not. inTest says the file is a test file.
func against(from, imp string, inTest bool) string {
	for _, r := range flow {
		switch {
		case r.from != "" && !under(from, r.from),
			inTest && !r.tests,
			(imp == "@grpc") != (r.to == "@grpc"),
			r.to != "" && !under(imp, r.to),
			r.to == "e2e" && under(from, "e2e"):
			continue
		}
		return r.why
	}
	return ""
}

// TestImportGraph: every package is in docs/design.md's table, imports exactly what its row
// lists, and nothing imports against the flow.
func TestImportGraph(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	pkgs := scan(t, root)
	rows := table(t, root)
	names := make([]string, 0, len(pkgs))
	for name := range pkgs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := pkgs[name]
		for _, imp := range p.imports {
			if why := against(name, imp, false); why != "" {
				t.Errorf("%s imports %s: %s", name, imp, why)
			}
		}
		for _, imp := range p.testImports {
			if why := against(name, imp, true); why != "" {
				t.Errorf("%s's tests import %s: %s", name, imp, why)
			}
		}
		if under(name, "e2e") {
			continue
		}
		want, listed := rows[name]
		if !listed {
			t.Errorf("%s is not in docs/design.md's package table", name)
			continue
		}
		got := slices.DeleteFunc(slices.Clone(p.imports), func(s string) bool { return s == "@grpc" })
		if !slices.Equal(got, want) {
			t.Errorf("%s imports %v; docs/design.md says %v", name, got, want)
		}
	}
	for name := range rows {
		if _, ok := pkgs[name]; !ok && name != "e2e/..." {
			t.Errorf("docs/design.md lists %s, which is not a package", name)
		}
	}
}

// TestFlowRules: the rules reject the imports they name and let the flow's own imports
// through; a rule that matches nothing would let the graph drift unseen.
func TestFlowRules(t *testing.T) {
	cases := []struct {
		from, imp string
		inTest    bool
		against   bool
	}{
		{"xds/translate", "xds/serve", false, true},
		{"xds/translate", "xds/serve/internal/wire", false, true},
		{"xds/translate", "@grpc", false, true},
		{"xds/translate", "cache", false, true},
		{"xds/serve", "xds/translate", false, true},
		{"xds/serve/internal/wire", "resolver", false, true},
		{"xds/resource", "resolver", false, true},
		{"cache", "xds/resource", false, true},
		{"resolver", "cache", false, true},
		{"internal/agent", "e2e/harness", true, true},
		{"cache", "cmd/holdfast", false, true},
		{"xds/publish", "internal/testkit", false, true},
		{"xds/serve", "internal/agent", false, true},
		{"xds/publish", "internal/testkit", true, false},
		{"e2e/node", "e2e/harness", true, false},
		{"xds/publish", "xds/translate", false, false},
		{"xds/serve", "xds/resource", false, false},
		{"xds/serve", "@grpc", false, false},
		{"internal/adminserver", "xds/serve", false, false},
		{"cmd/holdfast", "@grpc", false, false},
	}
	for _, c := range cases {
		if got := against(c.from, c.imp, c.inTest) != ""; got != c.against {
			t.Errorf("%s importing %s (in a test: %v): against the flow %v, want %v", c.from, c.imp, c.inTest, got, c.against)
		}
	}
}
