package chart

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// ciValues lists the chart's CI values files (charts/petfabric/ci/*-values.yaml).
func ciValues(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(helmchart.ChartDir(), "ci", "*-values.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "the chart has no ci/*-values.yaml")
	sort.Strings(files)
	return files
}

// ciValuesFile is one CI values file by its short name (e.g. "default").
func ciValuesFile(name string) string {
	return filepath.Join(helmchart.ChartDir(), "ci", name+"-values.yaml")
}

// createReleaseNamespace creates the release namespace and waits for what the control plane
// puts in every namespace (the default ServiceAccount, the kube-root-ca.crt ConfigMap), so a
// snapshot taken afterwards already holds them.
func createReleaseNamespace(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	t.Helper()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: helmchart.Namespace}}, metav1.CreateOptions{})
	require.NoError(t, cluster.IgnoreAlreadyExists(err))
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if _, err := c.Client.CoreV1().ServiceAccounts(helmchart.Namespace).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false, nil
		}
		if _, err := c.Client.CoreV1().ConfigMaps(helmchart.Namespace).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
			return false, nil
		}
		return true, nil
	}), "the release namespace never got its default ServiceAccount and kube-root-ca.crt")
}

// helm runs the pinned helm against c with valuesYAML (may be empty) and args.
func helm(t *testing.T, c *cluster.Cluster, valuesYAML string, args ...string) (string, error) {
	t.Helper()
	return helmchart.Run(t, valuesYAML, append(args, "--kubeconfig", c.Kubeconfig)...)
}

// ephemeral are the resources whose objects come and go with the cluster's own activity, not
// with the chart: events.
var ephemeral = map[string]bool{"events": true, "events.events.k8s.io": true}

// inventory lists every object of every resource the apiserver serves (discovery: all groups
// at their preferred version, namespaced and cluster-scoped, every resource that can be
// listed), as "resource.group namespace/name" keys. Events are left out.
func inventory(ctx context.Context, t *testing.T, c *cluster.Cluster) map[string]bool {
	t.Helper()
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = rest.NoWarnings{} // listing deprecated resources (Endpoints, ComponentStatus) warns
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(cfg)
	require.NoError(t, err)
	lists, err := disc.ServerPreferredResources()
	require.NoError(t, err, "discovery")
	out := map[string]bool{}
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		require.NoError(t, err)
		for _, r := range list.APIResources {
			if strings.Contains(r.Name, "/") || !hasVerb(r.Verbs, "list") {
				continue
			}
			resource := r.Name
			if gv.Group != "" {
				resource += "." + gv.Group
			}
			if ephemeral[resource] {
				continue
			}
			items, err := dyn.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{})
			require.NoError(t, err, "list %s", resource)
			for _, it := range items.Items {
				out[fmt.Sprintf("%s %s/%s", resource, it.GetNamespace(), it.GetName())] = true
			}
		}
	}
	return out
}

func hasVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// added lists the keys of after that before lacks, sorted.
func added(before, after map[string]bool) []string {
	var out []string
	for k := range after {
		if !before[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
