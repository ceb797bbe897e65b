// Command doccheck fails when a comment or a document cites a file the repository does not
// contain. Comments and docs are read by people who have only this repository: a pointer to
// a design note, a research file or a test that was never committed (or was renamed) leaves
// them with nothing, so the reasoning must be written here in our own words instead.
//
// It reads the comments of Go files, Markdown outside fenced code blocks (those hold
// commands and example files the reader writes), and the '#' comments of shell scripts,
// YAML files, env files and Makefiles, and reports:
//
//   - a relative path with a known extension (.go, .md, .yaml, …) that names no file, tried
//     against the repository root and the citing file's directory; and a bare Go or Markdown
//     file name (a renamed test, a design note) that names no file in any directory. Other bare
//     names (kubeconfig.yaml, guest.sh) are mostly files a program writes at run time, so
//     only their paths are checked;
//   - a citation of the research write-ups (the word research followed by a section sign
//     or by the word notes), which live outside the repository by definition.
//
// Paths that point elsewhere on purpose are left alone: absolute paths (a node's
// /etc/iscsi/…), paths under another module or host (k8s.io/kubernetes/pkg/…,
// github.com/…, URLs), and patterns (*_test.go, <name>.yaml, ${DIR}/x.sh).
//
// Usage: go run ./hack/doccheck [-root dir]; exit status 1 when anything dangles.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"go/scanner"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

func main() {
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	n, err := check(*root, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "doccheck:", err)
		os.Exit(2)
	}
	if n > 0 {
		fmt.Fprintf(os.Stderr, "doccheck: %d reference(s) to files the repository does not contain\n", n)
		os.Exit(1)
	}
}

// Finding is one dangling reference.
type Finding struct {
	File string // slash path relative to the root
	Line int
	Ref  string
	Why  string
}

func (f Finding) String() string { return fmt.Sprintf("%s:%d: %q %s", f.File, f.Line, f.Ref, f.Why) }

// check scans the tree under root, writes each finding to w and returns how many there were.
func check(root string, w io.Writer) (int, error) {
	findings, err := scan(root)
	if err != nil {
		return 0, err
	}
	for _, f := range findings {
		fmt.Fprintln(w, f)
	}
	return len(findings), nil
}

// tree is the set of files under the root.
type tree struct {
	paths     map[string]bool // slash paths relative to the root
	dirs      map[string]bool // every directory holding one of paths, at any depth
	basenames map[string]bool
}

// add records the file rel (a slash path relative to the root) and its directories.
func (t tree) add(rel string) {
	t.paths[rel] = true
	t.basenames[path.Base(rel)] = true
	for d := path.Dir(rel); d != "." && !t.dirs[d]; d = path.Dir(d) {
		t.dirs[d] = true
	}
}

func (t tree) has(p string) bool {
	p = path.Clean(p)
	// A directory counts too (a reference to testdata/fuzz/… or a chart directory).
	return t.paths[p] || t.dirs[p]
}

// skipDir: hidden directories (.git, .cache) and build output hold nothing we cite.
func skipDir(name string) bool { return strings.HasPrefix(name, ".") && name != "." || name == "bin" }

func scan(root string) ([]Finding, error) {
	t := tree{paths: map[string]bool{}, dirs: map[string]bool{}, basenames: map[string]bool{}}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && skipDir(d.Name()) {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		t.add(rel)
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walking %s: %w", root, err)
	}
	sort.Strings(files)
	var out []Finding
	for _, rel := range files {
		texts, err := commentText(filepath.Join(root, filepath.FromSlash(rel)), rel)
		if err != nil {
			return nil, err
		}
		for _, tx := range texts {
			out = append(out, t.dangling(rel, tx)...)
		}
	}
	return out, nil
}

// text is prose found at a line of a file.
type text struct {
	line int
	s    string
}

// commentText returns the prose of a file worth checking: Go comments, Markdown, and '#'
// comments of scripts and configuration. Other files return nothing.
func commentText(file, rel string) ([]text, error) {
	base := path.Base(rel)
	ext := path.Ext(rel)
	switch {
	case ext == ".go":
		src, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", rel, err)
		}
		return goComments(rel, src), nil
	case ext == ".md":
		fenced := false
		return lines(file, rel, func(l string) (string, bool) {
			if t := strings.TrimSpace(l); strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
				fenced = !fenced
				return "", false
			}
			return l, !fenced
		})
	case ext == ".sh" || ext == ".yaml" || ext == ".yml" || ext == ".env" || base == "Makefile":
		return lines(file, rel, func(l string) (string, bool) {
			i := strings.Index(l, "#")
			if i < 0 {
				return "", false
			}
			return l[i+1:], true
		})
	}
	return nil, nil
}

func goComments(rel string, src []byte) []text {
	fset := token.NewFileSet()
	f := fset.AddFile(rel, -1, len(src))
	var s scanner.Scanner
	// Syntax errors do not matter here: gofmt and vet report them.
	s.Init(f, src, func(token.Position, string) {}, scanner.ScanComments)
	var out []text
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			return out
		}
		if tok != token.COMMENT {
			continue
		}
		line := fset.Position(pos).Line
		for i, l := range strings.Split(lit, "\n") {
			out = append(out, text{line + i, l})
		}
	}
}

func lines(file, rel string, pick func(string) (string, bool)) ([]text, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	var out []text
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		if s, ok := pick(sc.Text()); ok {
			out = append(out, text{n, s})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	return out, nil
}

// citedExts are the extensions of the files a comment cites.
var citedExts = map[string]bool{
	".go": true, ".md": true, ".yaml": true, ".yml": true, ".json": true, ".sh": true,
	".txt": true, ".env": true, ".mod": true, ".sum": true, ".tpl": true, ".py": true, ".toml": true,
}

// researchCitation matches citations of the research write-ups: the word research followed
// by a section sign, or by the word notes.
var researchCitation = regexp.MustCompile(`(?i)\bresearch(\s*§|\s+notes?\b)`)

// pathChar are the bytes a path token is made of; anything else separates tokens.
func pathChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("_./~*{}<>$@+-", r)
}

// dangling returns the references in one line of prose of file rel that name nothing.
func (t tree) dangling(rel string, tx text) []Finding {
	var out []Finding
	if m := researchCitation.FindString(tx.s); m != "" {
		out = append(out, Finding{rel, tx.line, m, "cites research notes the repository does not contain"})
	}
	for _, tok := range strings.FieldsFunc(tx.s, func(r rune) bool { return !pathChar(r) }) {
		ref := strings.TrimRight(tok, ".")
		ext := path.Ext(ref)
		if !citedExts[ext] || path.Base(ref) == ext || isElsewhere(ref) {
			continue
		}
		if t.resolves(rel, ref) {
			continue
		}
		out = append(out, Finding{rel, tx.line, ref, "names a file the repository does not contain"})
	}
	return out
}

// isElsewhere reports references that do not point into this repository, or patterns.
func isElsewhere(ref string) bool {
	if strings.ContainsAny(ref, "*{}<>$@~+") || strings.HasPrefix(ref, "/") {
		return true
	}
	// A first segment with a dot inside is a host or module path (k8s.io/…, github.com/…).
	if first, _, ok := strings.Cut(ref, "/"); ok && strings.Contains(strings.TrimLeft(first, "."), ".") {
		return true
	}
	return false
}

func (t tree) resolves(rel, ref string) bool {
	if !strings.Contains(ref, "/") {
		if ext := path.Ext(ref); ext != ".go" && ext != ".md" {
			return true // a bare name of a file written at run time, not a citation
		}
		return t.basenames[ref]
	}
	return t.has(ref) || t.has(path.Join(path.Dir(rel), ref))
}
