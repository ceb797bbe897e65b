package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestReconcileIsolationReleasedPVFollowsOwner runs the webhook and the reconcile loop against
// the real control plane (namespace, StatefulSet and PV controllers):
//
//  1. a StatefulSet deleted with its claims and re-created in the same namespace gets its
//     Released Retain PVs (and so its data) back: the loop hands each to its re-created claim;
//  2. issue 9 #2/#5 attack: namespace "t" is deleted and re-created under the same name by a
//     new tenant, whose StatefulSet claims data-db-0 again. The old tenant's Released PV
//     records the old namespace UID: it is NOT handed over (the claim stays Pending), and the
//     refusal is reported (event on the PV and the claim, owner-mismatch metric).
func TestReconcileIsolationReleasedPVFollowsOwner(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(2)})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cs := c.Client

	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: credsNamespace}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", "127.0.0.1:7717", corev1.PersistentVolumeReclaimRetain, nil), metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := mutate.Config{ClusterID: "e2e"}
	w := startWebhook(t, c, cfg)
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)
	reg := prometheus.NewRegistry()
	recStart(t, c, cfg, "iso-free", "petfabric-e2e-iso-free", reg)

	// bindAndRelease creates namespace ns (if asked) and StatefulSet db with one pet, waits
	// until its claim is bound, and returns the PV.
	create := func(t *testing.T, ns string) *corev1.PersistentVolume {
		t.Helper()
		_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, statefulSet(ns, "db", 1, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		waitClaimsBound(ctx, t, cs, ns, "data", "db", 1)
		return getPV(ctx, t, cs, ns, "data-db-0")
	}

	t.Run("same namespace: a re-created StatefulSet gets its Released PV back", func(t *testing.T) {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "same"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		pv := create(t, "same")
		require.NoError(t, cs.AppsV1().StatefulSets("same").Delete(ctx, "db", metav1.DeleteOptions{}))
		require.NoError(t, cs.CoreV1().PersistentVolumeClaims("same").Delete(ctx, "data-db-0", metav1.DeleteOptions{}))
		recWaitPhase(ctx, t, cs, pv.Name, corev1.VolumeReleased)

		again := create(t, "same")
		assert.Equal(t, pv.UID, again.UID, "the same PV object, so the same Datera volume %s", pv.Spec.FlexVolume.Options["volumeID"])
		recWaitEvent(ctx, t, cs, "same", "data-db-0", reconcile.EventFreedPV, "handed to the re-created claim same/data-db-0")
		assert.Equal(t, 1.0, recMetric(t, reg, "petfabric_reconcile_released_pvs_freed_total"))
	})

	t.Run("namespace deleted and re-created: the new tenant does not get the old tenant's PV", func(t *testing.T) {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		pv := create(t, "t")
		oldOwner, ok := pvoptions.OwnerFromOptions(pv.Spec.FlexVolume.Options)
		require.True(t, ok, "the webhook records the owner on the PV")

		require.NoError(t, cs.CoreV1().Namespaces().Delete(ctx, "t", metav1.DeleteOptions{}))
		isoWaitNamespaceGone(ctx, t, cs, "t")
		recWaitPhase(ctx, t, cs, pv.Name, corev1.VolumeReleased)

		newNS, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "t"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		require.NotEqual(t, oldOwner.NamespaceUID, string(newNS.UID))
		_, err = cs.AppsV1().StatefulSets("t").Create(ctx, statefulSet("t", "db", 1, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err, "the new tenant may create its StatefulSet")

		want := fmt.Sprintf("it belongs to namespace t with UID %s, and namespace t now has UID %s (deleted and re-created)", oldOwner.NamespaceUID, newNS.UID)
		recWaitEvent(ctx, t, cs, "t", "data-db-0", reconcile.EventNotFreed, want)
		recWaitEvent(ctx, t, cs, "default", pv.Name, reconcile.EventNotFreed, want)
		assert.Equal(t, 1.0, recMetric(t, reg, "petfabric_reconcile_owner_mismatch_total", "action", reconcile.OwnerRefusedFree))

		// Give the PV controller and the loop (resync 5 s) time to do anything they would.
		deadline := time.Now().Add(8 * time.Second)
		for time.Now().Before(deadline) {
			pvc, err := cs.CoreV1().PersistentVolumeClaims("t").Get(ctx, "data-db-0", metav1.GetOptions{})
			require.NoError(t, err)
			require.Equal(t, corev1.ClaimPending, pvc.Status.Phase, "the new tenant's claim must not bind the old tenant's volume")
			require.Empty(t, pvc.Spec.VolumeName)
			time.Sleep(500 * time.Millisecond)
		}
		got, err := cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, corev1.VolumeReleased, got.Status.Phase, "kept, Released, for an administrator")
		assert.Equal(t, pv.Spec.ClaimRef.UID, got.Spec.ClaimRef.UID, "still the old tenant's claim")
		assert.Equal(t, 1.0, recMetric(t, reg, "petfabric_reconcile_owner_mismatch_total", "action", reconcile.OwnerRefusedFree), "reported once")
	})
}

func isoWaitNamespaceGone(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	require.NoError(t, err, "namespace %s not deleted", name)
}
