package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookEndToEnd drives the real apiserver, StatefulSet and PV controllers and scheduler
// against the real webhook server: every user-facing path of issue 4 in one control plane.
func TestWebhookEndToEnd(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(3)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := c.Client

	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: credsNamespace}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "blog", Labels: map[string]string{mutate.InjectLabel: "enabled"}}},
	} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err := cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", "127.0.0.1:7717", corev1.PersistentVolumeReclaimRetain, nil), metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := mutate.Config{ClusterID: "e2e", DefaultClass: "datera-gold"}
	w := startWebhook(t, c, cfg)
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)
	// The reconcile loop hands a Released Retain PV to its re-created claim (the PVC hook no
	// longer does: it cannot trust the review it is given).
	recStart(t, c, cfg, "webhook-e2e", "petfabric-webhook-e2e", nil)

	t.Run("create pins the templates and pre-creates one PV per ordinal", func(t *testing.T) {
		_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, statefulSet("shop", "web", 2, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		// The PVs exist as soon as the create returns: they were made inside the admission call.
		for n := range 2 {
			pv := getPV(ctx, t, cs, "shop", fmt.Sprintf("data-web-%d", n))
			assert.Equal(t, mutate.Driver, pv.Spec.FlexVolume.Driver)
			assert.Equal(t, fmt.Sprintf("e2e_shop_data-web-%d", n), pv.Spec.FlexVolume.Options["volumeID"])
			assert.Equal(t, "web", pv.Labels[mutate.LabelStatefulSet])
			assert.Equal(t, fmt.Sprint(n), pv.Labels[mutate.LabelOrdinal])
		}
		sts, err := cs.AppsV1().StatefulSets("shop").Get(ctx, "web", metav1.GetOptions{})
		require.NoError(t, err)
		tpl := sts.Spec.VolumeClaimTemplates[0]
		assert.Equal(t, "datera-gold", *tpl.Spec.StorageClassName)
		assert.Equal(t, "3", tpl.Annotations["petfabric.io/replica"])
		assert.Equal(t, "web", tpl.Annotations[mutate.AnnStatefulSet])
		waitClaimsBound(ctx, t, cs, "shop", "data", "web", 2)
		waitRunning(ctx, t, cs, "shop", "app=web", 2)
	})

	pvUIDs := map[string]types.UID{}
	t.Run("kubectl patch and kubectl scale pre-create PVs for new ordinals", func(t *testing.T) {
		_, err := c.Kubectl("-n", "shop", "patch", "statefulset", "web", "--type=merge", "-p", `{"spec":{"replicas":3}}`)
		require.NoError(t, err)
		getPV(ctx, t, cs, "shop", "data-web-2")
		_, err = c.Kubectl("-n", "shop", "scale", "statefulset", "web", "--replicas=5")
		require.NoError(t, err)
		for _, n := range []int{3, 4} {
			getPV(ctx, t, cs, "shop", fmt.Sprintf("data-web-%d", n))
		}
		waitClaimsBound(ctx, t, cs, "shop", "data", "web", 5)
		waitRunning(ctx, t, cs, "shop", "app=web", 5)
		for n := range 5 {
			pvUIDs[mutate.PVName("shop", fmt.Sprintf("data-web-%d", n))] = getPV(ctx, t, cs, "shop", fmt.Sprintf("data-web-%d", n)).UID
		}
	})

	t.Run("scale down then up reuses the same PVs", func(t *testing.T) {
		_, err := c.Kubectl("-n", "shop", "scale", "statefulset", "web", "--replicas=2")
		require.NoError(t, err)
		waitRunning(ctx, t, cs, "shop", "app=web", 2)
		_, err = c.Kubectl("-n", "shop", "scale", "statefulset", "web", "--replicas=5")
		require.NoError(t, err)
		waitRunning(ctx, t, cs, "shop", "app=web", 5)
		waitClaimsBound(ctx, t, cs, "shop", "data", "web", 5)
		for n := range 5 {
			claim := fmt.Sprintf("data-web-%d", n)
			pv := getPV(ctx, t, cs, "shop", claim)
			assert.Equal(t, pvUIDs[pv.Name], pv.UID, "%s must be the same PV object as before", pv.Name)
			pvc, err := cs.CoreV1().PersistentVolumeClaims("shop").Get(ctx, claim, metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, pv.Name, pvc.Spec.VolumeName)
		}
	})

	t.Run("a re-created StatefulSet finds its Retain PVs (and data) again", func(t *testing.T) {
		require.NoError(t, cs.AppsV1().StatefulSets("shop").Delete(ctx, "web", metav1.DeleteOptions{}))
		for n := range 5 {
			require.NoError(t, cs.CoreV1().PersistentVolumeClaims("shop").Delete(ctx, fmt.Sprintf("data-web-%d", n), metav1.DeleteOptions{}))
		}
		// kubelet (kwok) is gone with the pods; the PV controller then releases the PVs.
		require.Eventually(t, func() bool {
			for n := range 5 {
				if getPV(ctx, t, cs, "shop", fmt.Sprintf("data-web-%d", n)).Status.Phase != corev1.VolumeReleased {
					return false
				}
			}
			return true
		}, time.Minute, 250*time.Millisecond, "PVs must turn Released")
		_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, statefulSet("shop", "web", 5, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		waitClaimsBound(ctx, t, cs, "shop", "data", "web", 5)
		waitRunning(ctx, t, cs, "shop", "app=web", 5)
		for n := range 5 {
			pv := getPV(ctx, t, cs, "shop", fmt.Sprintf("data-web-%d", n))
			assert.Equal(t, pvUIDs[pv.Name], pv.UID, "%s is the same PV (same volume ID %s)", pv.Name, pv.Spec.FlexVolume.Options["volumeID"])
		}
	})

	t.Run("kubectl apply --dry-run=server creates nothing", func(t *testing.T) {
		before := countPVs(ctx, t, cs)
		out, err := c.KubectlInput(`
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: dry, namespace: shop}
spec:
  replicas: 4
  serviceName: dry
  selector: {matchLabels: {app: dry}}
  template:
    metadata: {labels: {app: dry}}
    spec: {containers: [{name: app, image: nginx}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      storageClassName: datera-gold
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
`, "apply", "--dry-run=server", "-o", "yaml", "-f", "-")
		require.NoError(t, err)
		assert.Contains(t, out, "petfabric.io/statefulset: dry", "the dry run shows the mutation")
		assert.Equal(t, before, countPVs(ctx, t, cs), "a dry run must not create PVs")
		_, err = cs.AppsV1().StatefulSets("shop").Get(ctx, "dry", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err))
	})

	t.Run("the 2016 PetSet blog manifest works unchanged in an opted-in namespace", func(t *testing.T) {
		// The blog's claim template: the alpha class annotation with the value "anything".
		_, err := c.KubectlInput(`
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cockroachdb, namespace: blog}
spec:
  serviceName: cockroachdb
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: cockroachdb}}
  template:
    metadata: {labels: {app: cockroachdb}}
    spec:
      containers:
      - name: cockroachdb
        image: cockroachdb/cockroach
        volumeMounts: [{name: datadir, mountPath: /cockroach/cockroach-data}]
  volumeClaimTemplates:
  - metadata:
      name: datadir
      annotations:
        volume.alpha.kubernetes.io/storage-class: anything
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
`, "apply", "-f", "-")
		require.NoError(t, err)
		waitClaimsBound(ctx, t, cs, "blog", "datadir", "cockroachdb", 3)
		waitRunning(ctx, t, cs, "blog", "app=cockroachdb", 3)
		pvc, err := cs.CoreV1().PersistentVolumeClaims("blog").Get(ctx, "datadir-cockroachdb-0", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "datera-gold", *pvc.Spec.StorageClassName)
	})

	t.Run("invalid options are denied naming the field and the allowed values", func(t *testing.T) {
		sts := statefulSet("shop", "bad", 1, ptr.To("datera-gold"))
		sts.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{"petfabric.io/replica": "6"}
		_, err := cs.AppsV1().StatefulSets("shop").Create(ctx, sts, metav1.CreateOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), `spec.volumeClaimTemplates[0].metadata.annotations[petfabric.io/replica]`)
		assert.Contains(t, err.Error(), "from 1 to 5")
		_, err = cs.CoreV1().PersistentVolumes().Get(ctx, mutate.PVName("shop", "data-bad-0"), metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "a denied StatefulSet leaves no PV behind")
	})

	t.Run("a PV name held by another claim is a denial that says which", func(t *testing.T) {
		squatter := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: mutate.PVName("shop", "data-taken-0")},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:               corev1.ResourceList{corev1.ResourceStorage: *getQuantity("1Gi")},
				AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				ClaimRef:               &corev1.ObjectReference{Namespace: "other", Name: "someone-else"},
				PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/x"}},
			},
		}
		_, err := cs.CoreV1().PersistentVolumes().Create(ctx, squatter, metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = cs.AppsV1().StatefulSets("shop").Create(ctx, statefulSet("shop", "taken", 1, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "belongs to claim other/someone-else")
		got, err := cs.CoreV1().PersistentVolumes().Get(ctx, squatter.Name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "someone-else", got.Spec.ClaimRef.Name, "the other claim's PV is untouched")
	})
}

func getPV(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, claim string) *corev1.PersistentVolume {
	t.Helper()
	pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, mutate.PVName(ns, claim), metav1.GetOptions{})
	require.NoError(t, err, "PV for claim %s/%s", ns, claim)
	require.NotNil(t, pv.Spec.ClaimRef)
	assert.Equal(t, claim, pv.Spec.ClaimRef.Name)
	assert.Equal(t, ns, pv.Spec.ClaimRef.Namespace)
	return pv
}

func countPVs(ctx context.Context, t *testing.T, cs kubernetes.Interface) int {
	t.Helper()
	list, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	return len(list.Items)
}

// waitClaimsBound waits until claims <template>-<sts>-0..n-1 are Bound to their petfabric PVs.
func waitClaimsBound(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, template, sts string, n int) {
	t.Helper()
	var pending []string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pending = pending[:0]
		for i := range n {
			claim := mutate.ClaimName(template, sts, i)
			pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
			if err != nil || pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName != mutate.PVName(ns, claim) {
				pending = append(pending, claim)
			}
		}
		return len(pending) == 0, nil
	})
	require.NoError(t, err, "claims not bound to their PVs: %s", strings.Join(pending, ", "))
}

func waitRunning(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector string, n int) {
	t.Helper()
	var states []string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		states = states[:0]
		running := 0
		for _, p := range list.Items {
			states = append(states, fmt.Sprintf("%s=%s", p.Name, p.Status.Phase))
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				running++
			}
		}
		return running == n && len(list.Items) == n, nil
	})
	require.NoError(t, err, "want %d Running pods for %s: %v", n, selector, states)
}
