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
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/test/e2e/extenderenv"
)

// TestSchedulingGateNoFailedScheduling: with the webhook's pod hook and its reconcile loop
// (--scheduling-gate), a StatefulSet of pets whose PVs the webhook pre-binds is placed by the
// real kube-scheduler with the extender in its path, in both binding modes of the class, with
// no FailedScheduling event at all: the pets reach the scheduler only once the PV controller
// has bound their claims (no binding race at Reserve/PreBind under WaitForFirstConsumer, no
// "unbound immediate PersistentVolumeClaims" under Immediate). Every pet runs on a node whose
// report reaches the backstore (one node's does not), no pod keeps the gate, and the loop did
// remove gates (the pets were gated, not merely lucky).
func TestSchedulingGateNoFailedScheduling(t *testing.T) {
	const pets, nodes = 20, 8
	const bs = "127.0.0.1:7717"
	const bad = "node-0"
	e := extenderenv.Start(t, extenderenv.Options{Nodes: kwokNodes(nodes), Namespace: credsNamespace,
		Requeue: extender.RequeueConfig{Enabled: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cs := e.Client
	for i := range nodes {
		portals := map[string]placement.PortalReport{"127.0.0.1:3260": {OK: true, RTTMicros: 150}}
		if name := fmt.Sprintf("node-%d", i); name == bad {
			portals = map[string]placement.PortalReport{"127.0.0.1:3260": {Error: "connection refused"}}
		}
		e.Report(t, fmt.Sprintf("node-%d", i), bs, portals, time.Hour)
	}
	setupDateraNamespaces(ctx, t, cs, map[string]map[string]string{"gate-wffc": nil, "gate-immediate": nil})
	wffc := dateraClass("datera-wffc", bs, corev1.PersistentVolumeReclaimRetain, nil)
	wffc.VolumeBindingMode = ptr.To(storagev1.VolumeBindingWaitForFirstConsumer)
	_, err := cs.StorageV1().StorageClasses().Create(ctx, wffc, metav1.CreateOptions{})
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	w := startGatingWebhook(t, e.C, mutate.Config{ClusterID: "gate"}, reg)
	registerWebhook(ctx, t, e.C, w, admissionregistrationv1.Fail)
	// The chart's configuration carries the pod hook (webhook.schedulingGate, default on).
	waitPodHook(ctx, t, cs, "gate-wffc", true)

	for _, tc := range []struct{ ns, class string }{{"gate-wffc", "datera-wffc"}, {"gate-immediate", "datera-gold"}} {
		t.Run(tc.class, func(t *testing.T) {
			start := time.Now()
			_, err := cs.AppsV1().StatefulSets(tc.ns).Create(ctx, statefulSet(tc.ns, "pets", pets, ptr.To(tc.class)), metav1.CreateOptions{})
			require.NoError(t, err)
			took := waitPetsRunning(ctx, t, cs, tc.ns, pets, start)
			podList, err := cs.CoreV1().Pods(tc.ns).List(ctx, metav1.ListOptions{})
			require.NoError(t, err)
			for _, p := range podList.Items {
				assert.NotEqual(t, bad, p.Spec.NodeName, "pod %s on the node that cannot reach the backstore", p.Name)
				assert.Less(t, mutate.GateIndex(&p), 0, "pod %s still gated", p.Name)
			}
			for i := range pets {
				claim := mutate.ClaimName("data", "pets", i)
				c, err := cs.CoreV1().PersistentVolumeClaims(tc.ns).Get(ctx, claim, metav1.GetOptions{})
				require.NoError(t, err)
				assert.Equal(t, corev1.ClaimBound, c.Status.Phase, claim)
				assert.Equal(t, mutate.PVName(tc.ns, claim), c.Spec.VolumeName, "%s bound to its pre-bound PV", claim)
			}
			failed, msgs := failedSchedulingMessages(ctx, t, cs, tc.ns)
			removed := recMetric(t, reg, "petfabric_reconcile_scheduling_gates_removed_total")
			t.Logf("%s: %d pets Running in %s, %d FailedScheduling events, %v gates removed so far", tc.class, pets, took.Round(time.Millisecond), failed, removed)
			assert.Zero(t, failed, "FailedScheduling events: %v", msgs)
		})
	}
	assert.Positive(t, recMetric(t, reg, "petfabric_reconcile_scheduling_gates_removed_total"), "the pets were gated and the loop removed the gates")
}
