package chart

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/test/helmchart"
)

// ciValues are the chart's ci/*-values.yaml files: each is a supported configuration.
func ciValues(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(helmchart.ChartDir(), "ci", "*-values.yaml"))
	require.NoError(t, err)
	return files
}

// TestLintStrict: helm lint --strict finds nothing with the default values and with each
// ci/*-values.yaml.
func TestLintStrict(t *testing.T) {
	cases := append([]string{""}, ciValues(t)...)
	for _, f := range cases {
		name := "default"
		var args []string
		if f != "" {
			name = filepath.Base(f)
			args = []string{"--values", f}
		}
		t.Run(name, func(t *testing.T) {
			out, err := helmchart.Lint(t, "", args...)
			require.NoError(t, err, "helm lint --strict %v:\n%s", args, out)
		})
	}
}
