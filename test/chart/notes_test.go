package chart

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/test/helmchart"
)

// notes renders NOTES.txt (helm template skips it) from a copy of the chart with one more
// template that holds the notes' text, the petfabric.notes template NOTES.txt includes.
func notes(t *testing.T, ci, values string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "petfabric")
	require.NoError(t, os.CopyFS(dir, os.DirFS(helmchart.ChartDir())))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "templates", "notes-preview.yaml"),
		[]byte(`notes: {{ include "petfabric.notes" . | toJson }}`+"\n"), 0o600))
	args := []string{"template", helmchart.Release, dir, "--namespace", helmchart.Namespace, "--kube-version", helmchart.KubeVersion(t),
		"--show-only", "templates/notes-preview.yaml"}
	if ci != "" {
		args = append(args, "--values", ciFile(ci))
	}
	out, err := helmchart.Run(t, values, args...)
	require.NoError(t, err)
	var doc struct{ Notes string }
	require.NoError(t, yaml.Unmarshal([]byte(out), &doc))
	require.NotEmpty(t, doc.Notes)
	return doc.Notes
}

// TestNotes: NOTES.txt tells the admin what to do next for each configuration: wire the
// scheduler (and why pets stay Pending until then), or check the secondary scheduler; create
// a test StatefulSet; what uninstalling leaves behind.
func TestNotes(t *testing.T) {
	for _, tc := range []struct {
		name, ci, values string
		want, not        []string
	}{
		{name: "default scheduler", ci: "default",
			want: []string{"scheduler-config\\.yaml", "/etc/kubernetes/petfabric/extender-ca.crt", "Insufficient petfabric.io/datera",
				"storageClassName: datera-gold", "kubectl get pv datera-default.data-petfabric-smoke-0",
				"petfabric-ca, petfabric-webhook-tls", "petfabric-extender-tls", "--enable-certificate-owner-ref", "reclaim policy Retain",
				"rollout status daemonset/petfabric-node"},
			not: []string{"secondary scheduler"}},
		{name: "secondary scheduler", ci: "secondary-scheduler",
			want: []string{"The secondary scheduler petfabric-scheduler", "schedulerName: petfabric-scheduler", "No StorageClass was rendered", "No node DaemonSet"},
			not:  []string{"Wire the scheduler configuration"}},
		{name: "no managed resource", ci: "default", values: "scheduler:\n  managedResource: ''\n", not: []string{"Insufficient"}},
		{name: "provided CA", ci: "provided-cabundle", want: []string{"carries your tls.caBundle", "petfabric-extender-serving"}, not: []string{"get certificates"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := notes(t, tc.ci, tc.values)
			for _, w := range tc.want {
				assert.Contains(t, text, w)
			}
			for _, n := range tc.not {
				assert.NotContains(t, text, n)
			}
		})
	}
}
