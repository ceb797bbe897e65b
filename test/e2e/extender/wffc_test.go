package extendere2e

import (
	"context"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/e2e/extenderenv"
)

// bindingRace matches kube-scheduler's FailedScheduling messages when the PV controller's
// write of a pre-bound PV overtakes the scheduler's own binding of it: at Reserve (the PV
// changed since the scheduler chose it) or at PreBind (its write of the PV conflicts).
var bindingRace = regexp.MustCompile(`running PreBind plugin "VolumeBinding": Operation cannot be fulfilled on persistentvolumes "[^"]+": the object has been modified|running Reserve plugin "VolumeBinding": "[^"]+" is out of sync`)

// TestBindingModesPlacePets runs a StatefulSet of pets whose PVs are pre-bound by claimRef
// (namespace and name, no UID: what the webhook creates) through the real scheduler and the
// extender, once per volumeBindingMode of the class, on one control plane: two nodes reach the
// backstore's portals, one does not.
//
// WaitForFirstConsumer: the scheduler takes the delayed-binding path, so the extender may be
// asked while a claim is still unbound and must resolve its pre-bound PV as the PV controller
// does; every pet lands on a reachable node with no FailedScheduling event but the binding race
// with the PV controller explained below, and each PV ends bound to its claim (claimRef UID = the
// claim's), with no provisioning attempted. Immediate keeps working (pets
// placed the same way; FailedScheduling events for not-yet-bound claims are allowed there).
// Both modes' event counts are logged; BenchmarkBindingModes100 measures them at scale.
func TestBindingModesPlacePets(t *testing.T) {
	const pets = 6
	good := []string{"wf-good-1", "wf-good-2"}
	nodes := []cluster.NodeSpec{{Name: good[0]}, {Name: good[1]}, {Name: "wf-bad"}}
	e := extenderenv.Start(t, extenderenv.Options{Nodes: nodes, Namespace: releaseNS, Requeue: extender.RequeueConfig{Enabled: true}})
	ctx := context.Background()
	for _, n := range good {
		e.Report(t, n, backstore, reachable, time.Hour)
	}
	e.Report(t, "wf-bad", backstore, map[string]placement.PortalReport{portalA: {Error: "connection refused"}, portalB: {Error: "no route to host"}}, time.Hour)

	for _, tc := range []struct {
		mode    storagev1.VolumeBindingMode
		ns, cls string
	}{
		{storagev1.VolumeBindingWaitForFirstConsumer, "pets-wffc", "datera-wffc"},
		{storagev1.VolumeBindingImmediate, "pets-immediate", "datera-immediate"},
	} {
		mode, ns, cls := tc.mode, tc.ns, tc.cls
		t.Run(string(mode), func(t *testing.T) {
			_, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			require.NoError(t, err)
			_, err = e.Client.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
				ObjectMeta: metav1.ObjectMeta{Name: cls}, Provisioner: "petfabric.io/datera", VolumeBindingMode: ptr.To(mode),
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			for i := range pets {
				claim := fmt.Sprintf("data-pets-%d", i)
				_, err := e.Client.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
					ObjectMeta: metav1.ObjectMeta{Name: "datera-" + ns + "." + claim,
						Labels: map[string]string{placement.LabelStatefulSet: "pets", placement.LabelOrdinal: fmt.Sprint(i)}},
					Spec: corev1.PersistentVolumeSpec{
						Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
						AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
						ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: claim},
						StorageClassName:              cls,
						PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
						PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
							Driver: placement.FlexDriver, Options: map[string]string{pvoptions.OptVolumeID: ns + "-" + claim, pvoptions.OptBackstoreServer: backstore},
						}},
					},
				}, metav1.CreateOptions{})
				require.NoError(t, err)
			}
			// The extender decides on its informer caches: wait until they hold the reports and
			// these PVs (each pet's pod is kept off wf-bad), so that what follows measures the
			// binding mode, not an informer's lag on a loaded machine.
			for i := range pets {
				probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("pets-%d", i)},
					Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
						PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: fmt.Sprintf("data-pets-%d", i)}}}}}}
				e.WaitFilter(t, probe, []string{good[0], good[1], "wf-bad"}, good)
			}
			sts := statefulSet("pets", pets)
			sts.Namespace = ns
			sts.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
			sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName = ptr.To(cls)
			_, err = e.Client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
			require.NoError(t, err)

			fixtures.WaitPodsRunning(ctx, t, e.Client, ns, pets, 2*time.Minute)

			pods, err := e.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			require.NoError(t, err)
			for _, p := range pods.Items {
				require.Contains(t, good, p.Spec.NodeName, "pod %s on a node that cannot reach the backstore", p.Name)
			}
			for i := range pets {
				claim := fmt.Sprintf("data-pets-%d", i)
				c, err := e.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
				require.NoError(t, err)
				require.Equal(t, corev1.ClaimBound, c.Status.Phase)
				require.Equal(t, "datera-"+ns+"."+claim, c.Spec.VolumeName, "claim bound to its pre-bound PV")
				require.Empty(t, c.Annotations["volume.kubernetes.io/selected-node"], "no provisioning was attempted")
				pv, err := e.Client.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
				require.NoError(t, err)
				require.Equal(t, c.UID, pv.Spec.ClaimRef.UID)
			}
			evs, err := e.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FailedScheduling"})
			require.NoError(t, err)
			failed, races := 0, 0
			var msgs []string
			for _, ev := range evs.Items {
				msgs = append(msgs, ev.InvolvedObject.Name+": "+ev.Message)
				n := int(max(ev.Count, 1))
				failed += n
				if bindingRace.MatchString(ev.Message) {
					races += n
				}
				t.Logf("FailedScheduling %s: %s", ev.InvolvedObject.Name, ev.Message)
			}
			t.Logf("%s: %d pets Running, %d FailedScheduling events (%d of them binding races with the PV controller)", mode, pets, failed, races)
			if mode == storagev1.VolumeBindingWaitForFirstConsumer {
				// The one failure WaitForFirstConsumer leaves: the PV controller binds a
				// claimRef-pre-bound PV at once, WaitForFirstConsumer or not, so when its
				// write lands between the scheduler's choice of the PV and its own write of
				// it, Reserve or PreBind fails and the pod is retried (about a second later,
				// then it finds the claim bound). No "unbound immediate" failure, and no
				// extender rejection, may appear.
				require.Equal(t, races, failed, "WaitForFirstConsumer: only binding races with the PV controller may fail a pet; events: %q", msgs)
			}
		})
	}
}
