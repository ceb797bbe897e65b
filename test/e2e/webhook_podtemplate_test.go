package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookPodTemplate: on the real control plane, a StatefulSet created through the webhook
// with --scheduler-name and --managed-resource has pods (made by the StatefulSet controller)
// that name the secondary scheduler and request the managed resource. And with the resource
// alone, while no scheduler configuration lists it for the extender, the default scheduler
// keeps the pets Pending with "Insufficient petfabric.io/datera": fail closed, never placed
// without the extender.
func TestWebhookPodTemplate(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(2)})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cs := c.Client
	const (
		ns        = "pets"
		scheduler = "petfabric-scheduler"
		managed   = "petfabric.io/datera"
	)
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", "127.0.0.1:7717", corev1.PersistentVolumeReclaimDelete, nil), metav1.CreateOptions{})
	require.NoError(t, err)

	// pods waits for n pods of the StatefulSet and returns them.
	pods := func(t *testing.T, name string, n int) []corev1.Pod {
		t.Helper()
		var out []corev1.Pod
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
			if err != nil {
				return false, err
			}
			out = l.Items
			return len(out) == n, nil
		}), "the StatefulSet controller made %d pods of %s", n, name)
		return out
	}
	one := resource.MustParse("1")

	w := startWebhook(t, c, mutate.Config{ClusterID: "e2e", SchedulerName: scheduler, ManagedResource: managed})
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)

	t.Run("pods of a mutated StatefulSet name the scheduler and request the resource", func(t *testing.T) {
		_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, statefulSet(ns, "db", 2, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		sts, err := cs.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, scheduler, sts.Spec.Template.Spec.SchedulerName)
		for _, p := range pods(t, "db", 2) {
			assert.Equal(t, scheduler, p.Spec.SchedulerName, p.Name)
			app := p.Spec.Containers[0]
			assert.Zero(t, one.Cmp(app.Resources.Requests[corev1.ResourceName(managed)]), "%s requests 1 %s: %v", p.Name, managed, app.Resources.Requests)
			assert.Zero(t, one.Cmp(app.Resources.Limits[corev1.ResourceName(managed)]), "%s limits 1 %s: %v", p.Name, managed, app.Resources.Limits)
			// No scheduler of that name runs here: the pods wait, unplaced.
			assert.Empty(t, p.Spec.NodeName, "%s was placed by a scheduler that is not %s", p.Name, scheduler)
		}

		// A StatefulSet that is not mutated (no Datera template) keeps its pod template.
		plain := statefulSet(ns, "cache", 1, ptr.To("standard"))
		_, err = cs.AppsV1().StatefulSets(ns).Create(ctx, plain, metav1.CreateOptions{})
		require.NoError(t, err)
		p := pods(t, "cache", 1)[0]
		assert.Equal(t, corev1.DefaultSchedulerName, p.Spec.SchedulerName)
		assert.NotContains(t, p.Spec.Containers[0].Resources.Requests, corev1.ResourceName(managed))

		// A template naming another scheduler is left alone.
		other := statefulSet(ns, "batch", 1, ptr.To("datera-gold"))
		other.Spec.Template.Spec.SchedulerName = "volcano"
		_, err = cs.AppsV1().StatefulSets(ns).Create(ctx, other, metav1.CreateOptions{})
		require.NoError(t, err)
		p = pods(t, "batch", 1)[0]
		assert.Equal(t, "volcano", p.Spec.SchedulerName)
		assert.Zero(t, one.Cmp(p.Spec.Containers[0].Resources.Requests[corev1.ResourceName(managed)]), "the resource is still requested")
	})

	// The webhook with --managed-resource only: the default scheduler, whose configuration has
	// no extender managing the resource, schedules the pets.
	w.Stop(t)
	require.NoError(t, cs.AdmissionregistrationV1().MutatingWebhookConfigurations().DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}))
	w = startWebhook(t, c, mutate.Config{ClusterID: "e2e", ManagedResource: managed})
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)

	t.Run("without the scheduler configuration the pets stay Pending: Insufficient petfabric.io/datera", func(t *testing.T) {
		_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, statefulSet(ns, "wait", 1, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		first := pods(t, "wait", 1)[0]
		assert.Equal(t, corev1.DefaultSchedulerName, first.Spec.SchedulerName)
		// The scheduler may see the pod before its claim is bound to the PV the webhook made
		// ("unbound immediate PersistentVolumeClaims") and hold it for minutes: once the claim
		// is Bound, a new pod of the same StatefulSet shows the resource check alone.
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-wait-0", metav1.GetOptions{})
			return err == nil && pvc.Status.Phase == corev1.ClaimBound, nil
		}), "the claim binds to the webhook's PV")
		require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, first.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
		var p corev1.Pod
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := cs.CoreV1().Pods(ns).Get(ctx, first.Name, metav1.GetOptions{})
			if err != nil || got.UID == first.UID {
				return false, nil
			}
			p = *got
			return true, nil
		}), "the StatefulSet controller re-creates the pod")
		assert.Zero(t, one.Cmp(p.Spec.Containers[0].Resources.Requests[corev1.ResourceName(managed)]), "the new pod requests the resource too")
		t.Cleanup(func() {
			if !t.Failed() {
				return
			}
			pvcs, _ := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
			for _, c := range pvcs.Items {
				t.Logf("claim %s: %s volume %q class %v", c.Name, c.Status.Phase, c.Spec.VolumeName, c.Spec.StorageClassName)
			}
			pvs, _ := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
			for _, v := range pvs.Items {
				t.Logf("pv %s: %s claimRef %v", v.Name, v.Status.Phase, v.Spec.ClaimRef)
			}
			b, _ := os.ReadFile(filepath.Join(c.Dir, "webhook.log"))
			t.Logf("webhook log:\n%s", b)
		})
		var msg string
		var seen []string
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(p.UID)})
			if err != nil {
				return false, err
			}
			seen = seen[:0]
			for _, e := range evs.Items {
				seen = append(seen, e.Reason+": "+e.Message)
				if e.Reason == "FailedScheduling" && strings.Contains(e.Message, "Insufficient "+managed) {
					msg = e.Message
					return true, nil
				}
			}
			return false, nil
		}), "a FailedScheduling event naming Insufficient %s for %s; events: %q", managed, p.Name, seen)
		t.Logf("event: FailedScheduling: %s", msg)
		got, err := cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Empty(t, got.Spec.NodeName, "never placed without the extender")
		assert.Equal(t, corev1.PodPending, got.Status.Phase)
	})
}
