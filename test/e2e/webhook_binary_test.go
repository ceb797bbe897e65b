package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookBinary runs the built cmd/webhook as a process, configured by flags as the chart
// configures it: it must become ready, mutate and pre-create PVs through the apiserver, run
// the reconcile loop (its metrics show), and exit cleanly on SIGTERM.
func TestWebhookBinary(t *testing.T) {
	cluster.RequireBinaries(t)
	bin := buildWebhook(t)

	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(1)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	setupDateraNamespaces(ctx, t, c.Client, map[string]map[string]string{"apps": nil})

	p := startWebhookProcess(t, c, bin, "webhook-binary",
		"--cluster-id=bin", "--lease-namespace="+credsNamespace, "--identity=webhook-0")
	assert.Equal(t, http.StatusOK, httpStatus(p.health+"/healthz"))

	registerWebhook(ctx, t, c, p.webhook, admissionregistrationv1.Fail)
	_, err := c.Client.AppsV1().StatefulSets("apps").Create(ctx, statefulSet("apps", "db", 2, ptr.To("datera-gold")), metav1.CreateOptions{})
	require.NoError(t, err)
	for n := range 2 {
		pv := getPV(ctx, t, c.Client, "apps", fmt.Sprintf("data-db-%d", n))
		assert.Equal(t, fmt.Sprintf("bin_apps_data-db-%d", n), pv.Spec.FlexVolume.Options["volumeID"])
	}
	waitClaimsBound(ctx, t, c.Client, "apps", "data", "db", 2)

	metrics := httpBody(t, p.health+"/metrics")
	assert.Contains(t, metrics, `petfabric_webhook_admission_requests_total{result="patched",route="statefulsets"}`)
	assert.Contains(t, metrics, "petfabric_webhook_persistentvolumes_created_total 2")
	assert.Contains(t, metrics, "petfabric_reconcile_is_leader 1", "the single replica leads the reconcile loop")
	lease, err := c.Client.CoordinationV1().Leases(credsNamespace).Get(ctx, "petfabric-webhook-reconcile", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "webhook-0", *lease.Spec.HolderIdentity)

	p.stop(t)
	// It released its lease on the way out, so a successor leads at once.
	lease, err = c.Client.CoordinationV1().Leases(credsNamespace).Get(ctx, "petfabric-webhook-reconcile", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""), "lease released on shutdown")
}
