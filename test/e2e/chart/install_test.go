package chart

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/petfabric/petfabric/test/certmanager"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// TestChartInstallUpgradeUninstall installs the chart (charts/petfabric/ci/default-values.yaml) with
// `helm install --wait` on kwok nodes, with cert-manager running in-process so its chain is
// really issued; upgrades it changing the webhook's replicas and API QPS and sees both
// applied; uninstalls it and lists every object of every resource the apiserver serves
// against the list taken before the install. What may stay is what cert-manager leaves by
// design: the Secrets it wrote for the chart's Certificates (it owns them only when run with
// --enable-certificate-owner-ref), named exactly; PVs with reclaim Retain would stay too, but
// this install creates none.
func TestChartInstallUpgradeUninstall(t *testing.T) {
	cluster.RequireBinaries(t)
	values := ciValuesFile("default")
	objs := helmchart.Objects(t, helmchart.Render(t, "", "--values", values))
	var certSecrets []string
	for _, cert := range helmchart.OfKind(objs, "Certificate") {
		name, _, _ := unstructuredString(cert.Object, "spec", "secretName")
		require.NotEmpty(t, name, "Certificate %s has no secretName", cert.GetName())
		certSecrets = append(certSecrets, "secrets "+helmchart.Namespace+"/"+name)
	}
	require.NotEmpty(t, certSecrets, "the default rendering has cert-manager Certificates")
	slices.Sort(certSecrets)

	c := cluster.Start(t, cluster.Options{Nodes: []cluster.NodeSpec{{Name: "node-0"}, {Name: "node-1"}, {Name: "node-2"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	certmanager.Start(t, c)
	createReleaseNamespace(ctx, t, c)
	before := inventory(ctx, t, c)

	began := time.Now()
	out, err := helm(t, c, "", "install", helmchart.Release, helmchart.ChartDir(), "--namespace", helmchart.Namespace,
		"--values", values, "--wait", "--timeout", "2m")
	require.NoError(t, err, "helm install --wait:\n%s", out)
	installTime := time.Since(began)
	t.Logf("helm install --wait took %s (%d objects rendered)", installTime.Round(time.Millisecond), len(objs))

	// Everything rendered exists, and cert-manager issued the chain.
	for _, o := range objs {
		_, err := c.Kubectl("get", strings.ToLower(o.GetKind())+"."+groupOf(o.GetAPIVersion()), o.GetName(), "--namespace", helmchart.Namespace)
		assert.NoError(t, err, "rendered %s %s not installed", o.GetKind(), o.GetName())
	}
	for _, cert := range helmchart.OfKind(objs, "Certificate") {
		_, err := c.Kubectl("wait", "--for=condition=Ready", "--timeout=60s", "certificate/"+cert.GetName(), "--namespace", helmchart.Namespace)
		require.NoError(t, err, "Certificate %s never Ready", cert.GetName())
	}

	// Upgrade: one more webhook replica and a higher admission QPS.
	webhookName := helmchart.OfKind(objs, "Deployment")[0].GetName()
	for _, d := range helmchart.OfKind(objs, "Deployment") {
		if strings.HasSuffix(d.GetName(), "-webhook") {
			webhookName = d.GetName()
		}
	}
	out, err = helm(t, c, "", "upgrade", helmchart.Release, helmchart.ChartDir(), "--namespace", helmchart.Namespace,
		"--values", values, "--set", "webhook.replicas=3", "--set", "webhook.kubeAPI.qps=75", "--wait", "--timeout", "2m")
	require.NoError(t, err, "helm upgrade --wait:\n%s", out)
	d, err := c.Client.AppsV1().Deployments(helmchart.Namespace).Get(ctx, webhookName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, int32(3), *d.Spec.Replicas)
	assert.Equal(t, int32(3), d.Status.ReadyReplicas, "helm upgrade --wait returned before the third replica was ready")
	assert.Contains(t, webhookArgs(d), "--kube-api-qps=75")
	assert.NotContains(t, webhookArgs(d), "--kube-api-qps=50")

	// Uninstall: wait for the garbage collector to take the dependents (ReplicaSets, pods,
	// CertificateRequests, EndpointSlices), then diff.
	out, err = helm(t, c, "", "uninstall", helmchart.Release, "--namespace", helmchart.Namespace, "--wait", "--timeout", "2m")
	require.NoError(t, err, "helm uninstall:\n%s", out)
	var left []string
	err = wait.PollUntilContextTimeout(ctx, time.Second, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		left = added(before, inventory(ctx, t, c))
		return slices.Equal(left, certSecrets), nil
	})
	assert.NoError(t, err, "after helm uninstall, left behind:\n%s\nexpected only cert-manager's Secrets:\n%s",
		strings.Join(left, "\n"), strings.Join(certSecrets, "\n"))
	t.Logf("left behind after helm uninstall: %s", strings.Join(left, ", "))
}

// webhookArgs is the first container's args of d.
func webhookArgs(d *appsv1.Deployment) []string {
	return d.Spec.Template.Spec.Containers[0].Args
}

// groupOf is the group of an apiVersion ("" for core v1).
func groupOf(apiVersion string) string {
	if g, _, ok := strings.Cut(apiVersion, "/"); ok {
		return g
	}
	return ""
}

// unstructuredString reads a string at path in obj.
func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	cur := any(obj)
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[p]
	}
	s, ok := cur.(string)
	return s, ok, nil
}
