package chart

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/test/certmanager"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// TestChartServerDryRun sends the rendering of every CI values file to a real apiserver that
// serves cert-manager's CRDs, as `kubectl apply --dry-run=server --validate=strict`: every
// object must pass the apiserver's own validation and strict field decoding (a misspelt field
// in a template is an error here, where `helm install --dry-run` would accept it). A rendering
// with one unknown field must be refused, so the check is shown able to fail.
func TestChartServerDryRun(t *testing.T) {
	cluster.RequireBinaries(t)
	files := ciValues(t)
	renderings := map[string]string{}
	for _, f := range files {
		renderings[f] = helmchart.Render(t, "", "--values", f)
	}

	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, certmanager.InstallCRDs(c))
	createReleaseNamespace(ctx, t, c)

	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		t.Run(name, func(t *testing.T) {
			// The Prometheus operator's ServiceMonitor is the one optional API this control
			// plane does not serve (its CRD is not available offline): those objects are
			// left out, and nothing else may be.
			var docs []string
			var served int
			for _, o := range helmchart.Objects(t, renderings[f]) {
				if groupOf(o.GetAPIVersion()) == "monitoring.coreos.com" {
					require.Equal(t, "ServiceMonitor", o.GetKind())
					t.Logf("not validated (API not served here): %s %s", o.GetKind(), o.GetName())
					continue
				}
				// A namespace the values name besides the release's (e.g. the monitoring
				// stack's) is the admin's to have created.
				if ns := o.GetNamespace(); ns != "" {
					_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
					require.NoError(t, cluster.IgnoreAlreadyExists(err))
				}
				data, err := yaml.Marshal(o.Object)
				require.NoError(t, err)
				docs = append(docs, string(data))
				served++
			}
			require.NotZero(t, served)
			out, err := c.KubectlInput(strings.Join(docs, "---\n"), "apply", "--dry-run=server", "--validate=strict", "-f", "-")
			require.NoError(t, err, "the apiserver refused the rendering of %s", f)
			assert.Equal(t, served, strings.Count(out, "(server dry run)"), "one dry-run line per rendered object:\n%s", out)
		})
	}

	t.Run("unknown field refused", func(t *testing.T) {
		objs := helmchart.Objects(t, renderings[ciValuesFile("default")])
		var docs []string
		broken := ""
		for _, o := range objs {
			if spec, ok := o.Object["spec"].(map[string]any); ok && broken == "" {
				spec["replicaz"] = 3
				broken = o.GetKind() + " " + o.GetName()
			}
			data, err := yaml.Marshal(o.Object)
			require.NoError(t, err)
			docs = append(docs, string(data))
		}
		require.NotEmpty(t, broken, "no rendered object has a spec to break")
		out, err := c.KubectlInput(strings.Join(docs, "---\n"), "apply", "--dry-run=server", "--validate=strict", "-f", "-")
		require.Error(t, err, "a rendering with spec.replicaz in %s must be refused:\n%s", broken, out)
		assert.Contains(t, out, `unknown field "spec.replicaz"`)
	})
}
