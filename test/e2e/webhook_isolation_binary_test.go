package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookIsolationBinaryDefaults runs the built cmd/webhook without --cluster-id: it derives
// the cluster ID from the kube-system namespace's UID (never an empty prefix, which let two
// clusters on one backstore share volumes), applies --max-ordinals, takes the client limits
// by flag, and refuses a limit that cannot work, naming the flag.
func TestWebhookIsolationBinaryDefaults(t *testing.T) {
	cluster.RequireBinaries(t)
	bin := buildWebhook(t)

	out, err := exec.Command(bin, "--kube-api-burst=0").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "--kube-api-burst 0: want at least 1")

	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(1)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	setupDateraNamespaces(ctx, t, c.Client, map[string]map[string]string{"apps": nil})
	ks, err := c.Client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	require.NoError(t, err)
	wantID, err := pvoptions.DefaultClusterID(string(ks.UID))
	require.NoError(t, err)

	p := startWebhookProcess(t, c, bin, "webhook-isolation-binary",
		"--lease-namespace="+credsNamespace, "--identity=webhook-iso",
		"--max-ordinals=3", "--kube-api-qps=20", "--kube-api-burst=40",
		"--reconcile-kube-api-qps=10", "--reconcile-kube-api-burst=20",
		"--read-header-timeout=3s", "--idle-timeout=10s",
	)
	registerWebhook(ctx, t, c, p.webhook, admissionregistrationv1.Fail)

	_, err = c.Client.AppsV1().StatefulSets("apps").Create(ctx, statefulSet("apps", "db", 3, ptr.To("datera-gold")), metav1.CreateOptions{})
	require.NoError(t, err)
	pv := getPV(ctx, t, c.Client, "apps", "data-db-0")
	assert.Equal(t, wantID+"_apps_data-db-0", pv.Spec.FlexVolume.Options["volumeID"])
	assert.Equal(t, wantID, pv.Spec.FlexVolume.Options[pvoptions.OptClusterID])
	assert.True(t, strings.HasPrefix(wantID, "k"))

	_, err = c.Kubectl("-n", "apps", "scale", "statefulset", "db", "--replicas=4")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at most 3")

	p.stop(t)
}
