package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The dangling references the fixtures make, assembled from parts so that this file, which the
// repository check also reads, cites none of them itself.
var (
	designDoc       = "DESIGN" + ".md"
	researchDoc     = "shared/" + "research" + "/api.md"
	notesDoc        = "../notes/design" + ".md"
	researchSection = "research " + "§"
	researchNotes   = "research " + "notes"
)

// fixture writes files (slash paths → content) under a fresh root.
func fixture(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(content), 0o644))
	}
	return root
}

func TestCheck(t *testing.T) {
	base := map[string]string{
		"ARCHITECTURE.md":            "# Architecture\n",
		"pkg/a/a.go":                 "package a\n",
		"pkg/a/a_test.go":            "package a\n",
		"pkg/a/testdata/golden.json": "{}\n",
		"hack/run.sh":                "#!/bin/sh\n",
	}
	tests := []struct {
		name  string
		files map[string]string
		want  []string // findings, as printed
	}{
		{
			name: "references that exist",
			files: map[string]string{
				"pkg/b/b.go": "package b\n\n// See ARCHITECTURE.md, pkg/a/a.go, a_test.go (any directory),\n" +
					"// ../a/a.go, hack/run.sh, the directory pkg/a, and kubeconfig.yaml (a file written at run time).\n" +
					"func B() string { return \"" + designDoc + " in a string is code, not a comment\" }\n",
				"pkg/a/doc.go": "package a\n\n// The golden file is testdata/golden.json.\n",
				"README.md":    "Run `hack/run.sh`; read [the architecture](ARCHITECTURE.md).\n",
			},
		},
		{
			name: "references elsewhere and patterns are not checked",
			files: map[string]string{
				"pkg/b/b.go": "package b\n\n// Upstream: k8s.io/kubernetes/pkg/scheduler/extender.go, https://github.com/x/y/blob/main/z.go,\n" +
					"// /etc/kubernetes/admission.yaml, ~/.kube/config.yaml, *_test.go, <name>.yaml, ${DIR}/x.sh,\n" +
					"// the extensions .go and .md.\n",
				"README.md": "Text.\n\n```yaml\n# admission.yaml: a file the reader writes\n```\n",
			},
		},
		{
			name: "dangling references fail",
			files: map[string]string{
				"pkg/b/b.go": "package b\n\n// As " + designDoc + " says (and " + researchDoc + ").\n" +
					"/* wire_test.go checks it;\n   so does pkg/a/gone_test.go. */\n",
				"docs/x.md":                 "See [notes](" + notesDoc + ") and " + researchSection + "1.5.\n",
				"charts/c/values.yaml":      "# documented in docs/values.md\nkey: value # not in docs/other.md\n",
				"Makefile":                  "# see hack/lint.sh\nall:\n",
				"pkg/a/testdata/fixture.sh": "# the " + researchNotes + " say so\n",
			},
			want: []string{
				`Makefile:1: "hack/lint.sh" names a file the repository does not contain`,
				`charts/c/values.yaml:1: "docs/values.md" names a file the repository does not contain`,
				`charts/c/values.yaml:2: "docs/other.md" names a file the repository does not contain`,
				`docs/x.md:1: "` + researchSection + `" cites ` + researchNotes + ` the repository does not contain`,
				`docs/x.md:1: "` + notesDoc + `" names a file the repository does not contain`,
				`pkg/a/testdata/fixture.sh:1: "` + researchNotes + `" cites ` + researchNotes + ` the repository does not contain`,
				`pkg/b/b.go:3: "` + designDoc + `" names a file the repository does not contain`,
				`pkg/b/b.go:3: "` + researchDoc + `" names a file the repository does not contain`,
				`pkg/b/b.go:4: "wire_test.go" names a file the repository does not contain`,
				`pkg/b/b.go:5: "pkg/a/gone_test.go" names a file the repository does not contain`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			for p, c := range base {
				files[p] = c
			}
			for p, c := range tt.files {
				files[p] = c
			}
			var out bytes.Buffer
			n, err := check(fixture(t, files), &out)
			require.NoError(t, err)
			var got []string
			for _, l := range bytes.Split(bytes.TrimSpace(out.Bytes()), []byte("\n")) {
				if len(l) > 0 {
					got = append(got, string(l))
				}
			}
			assert.Equal(t, tt.want, got)
			assert.Equal(t, len(tt.want), n)
		})
	}
}

// TestHiddenAndBuildDirectoriesAreNotScanned: .git, .cache and bin hold nothing we cite, and
// a reference into them is dangling.
func TestHiddenAndBuildDirectoriesAreNotScanned(t *testing.T) {
	root := fixture(t, map[string]string{
		".cache/x.md": designDoc + "\n",
		"bin/y.md":    designDoc + "\n",
		"a.md":        "see .cache/x.md\n",
	})
	var out bytes.Buffer
	n, err := check(root, &out)
	require.NoError(t, err)
	assert.Equal(t, 1, n, out.String())
	assert.Contains(t, out.String(), `a.md:1: ".cache/x.md" names a file`)
}

// TestRepositoryHasNoDanglingReference runs the check on this repository (what make lint does).
func TestRepositoryHasNoDanglingReference(t *testing.T) {
	var out bytes.Buffer
	n, err := check(filepath.Join("..", ".."), &out)
	require.NoError(t, err)
	assert.Zero(t, n, "dangling references:\n%s", out.String())
}
