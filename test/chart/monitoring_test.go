package chart

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/petfabric/petfabric/test/helmchart"
)

var metricName = regexp.MustCompile(`petfabric_[a-z0-9_]+`)

// registeredMetrics are the metric names the programs' code names: every string literal
// "petfabric_..." in the non-test Go files of pkg/ and cmd/.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	literal := regexp.MustCompile(`"(petfabric_[a-z0-9_]+)"`)
	out := map[string]bool{}
	for _, dir := range []string{"pkg", "cmd"} {
		err := filepath.WalkDir(filepath.Join(helmchart.Root(), dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range literal.FindAllStringSubmatch(string(b), -1) {
				out[m[1]] = true
			}
			return nil
		})
		require.NoError(t, err)
	}
	require.Contains(t, out, "petfabric_webhook_admission_requests_total", "the scan finds the programs' metrics")
	return out
}

// TestDashboardMetricsExist: every metric a dashboard panel queries is one the programs
// register (a histogram's _bucket/_sum/_count series count as the histogram), and every panel
// has a query.
func TestDashboardMetricsExist(t *testing.T) {
	objs := render(t, "networkpolicy-monitoring", "")
	var cm corev1.ConfigMap
	decode(t, objs, "ConfigMap", "petfabric-dashboard", &cm)
	assert.Equal(t, "monitoring", cm.Namespace)
	assert.Equal(t, "1", cm.Labels["grafana_dashboard"])
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal([]byte(cm.Data["petfabric.json"]), &dash))
	require.NotEmpty(t, dash.Panels)
	known := registeredMetrics(t)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			names := metricName.FindAllString(tg.Expr, -1)
			require.NotEmpty(t, names, "panel %q queries no petfabric metric: %s", p.Title, tg.Expr)
			for _, n := range names {
				base := n
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && known[b] {
						base = b
					}
				}
				assert.True(t, known[base], "panel %q: metric %s is not registered by the code", p.Title, n)
				used[base] = true
			}
		}
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("dashboard metrics: %s", strings.Join(names, " "))
}

// TestServiceMonitor: it selects the release's Services, each of which names its metrics port
// "metrics"; the node agents get a headless Service for it.
func TestServiceMonitor(t *testing.T) {
	objs := render(t, "networkpolicy-monitoring", "")
	sm := helmchart.Find(objs, "ServiceMonitor", "petfabric")
	require.NotNil(t, sm)
	assert.Equal(t, "prometheus", sm.GetLabels()["release"])
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	require.Len(t, eps, 1)
	assert.Equal(t, "metrics", eps[0].(map[string]any)["port"])
	var selected []string
	for _, o := range helmchart.OfKind(objs, "Service") {
		var svc corev1.Service
		require.NoError(t, helmchart.Decode(o, &svc))
		if !labels.SelectorFromSet(sel).Matches(labels.Set(svc.Labels)) {
			continue
		}
		selected = append(selected, svc.Name)
		var port string
		for _, p := range svc.Spec.Ports {
			if p.Name == "metrics" {
				port = p.Name
			}
		}
		assert.Equal(t, "metrics", port, "Service %s has a metrics port", svc.Name)
	}
	assert.ElementsMatch(t, []string{"petfabric-webhook", "petfabric-extender", "petfabric-node-metrics"}, selected)

	objs = render(t, "default", "")
	assert.Empty(t, helmchart.OfKind(objs, "ServiceMonitor"), "off by default")
	assert.Nil(t, helmchart.Find(objs, "ConfigMap", "petfabric-dashboard"), "off by default")
}

// TestNetworkPolicies: the serving ports admit only the control plane's addresses (and the
// secondary scheduler's pods for the extender); the health ports only the metrics namespace
// and the listed node addresses; the policies select the right pods.
func TestNetworkPolicies(t *testing.T) {
	objs := render(t, "networkpolicy-monitoring", "")
	for _, tc := range []struct {
		name, component string
		schedulerPods   bool
	}{
		{webhookName, "webhook", false},
		{extenderName, "extender", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var np networkingv1.NetworkPolicy
			decode(t, objs, "NetworkPolicy", tc.name, &np)
			podSel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			require.NoError(t, err)
			assert.True(t, podSel.Matches(labels.Set{"app.kubernetes.io/name": "petfabric", "app.kubernetes.io/instance": "petfabric", "app.kubernetes.io/component": tc.component}))
			assert.False(t, podSel.Matches(labels.Set{"app.kubernetes.io/name": "petfabric", "app.kubernetes.io/instance": "petfabric", "app.kubernetes.io/component": "node"}))
			assert.Equal(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, np.Spec.PolicyTypes)
			require.Len(t, np.Spec.Ingress, 2)
			serving, health := np.Spec.Ingress[0], np.Spec.Ingress[1]
			assert.Equal(t, 8443, serving.Ports[0].Port.IntValue())
			assert.Equal(t, "10.0.0.0/24", serving.From[0].IPBlock.CIDR)
			if tc.schedulerPods {
				require.Len(t, serving.From, 2)
				assert.Equal(t, "scheduler", serving.From[1].PodSelector.MatchLabels["app.kubernetes.io/component"])
			} else {
				assert.Len(t, serving.From, 1)
			}
			assert.Equal(t, 8080, health.Ports[0].Port.IntValue())
			require.Len(t, health.From, 2)
			assert.Equal(t, map[string]string{"kubernetes.io/metadata.name": "monitoring"}, health.From[0].NamespaceSelector.MatchLabels)
			assert.Equal(t, "10.0.0.0/16", health.From[1].IPBlock.CIDR)
		})
	}
	t.Run("without controlPlaneCIDRs", func(t *testing.T) {
		_, err := helmchart.Template(t, "networkPolicy:\n  enabled: true\n")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "networkPolicy.controlPlaneCIDRs is required")
	})
	assert.Empty(t, helmchart.OfKind(render(t, "default", ""), "NetworkPolicy"), "off by default")
}
