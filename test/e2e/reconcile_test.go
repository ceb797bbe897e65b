package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestReconcileEndToEnd runs the reconcile loop against the real control plane (apiserver,
// kube-controller-manager's StatefulSet and PV controllers, scheduler, kwok nodes) and the
// Datera simulator over HTTP:
//
//  1. the real webhook is registered with failurePolicy Ignore and then stopped; a StatefulSet
//     naming a Datera class is admitted without it and its claims stay Pending, until the loop
//     creates the PVs: claims bind and pods run; a scale-up gets the new ordinals' PVs; an
//     Available orphan is deleted after the grace period;
//  2. reclaim policy Delete: a deleted claim's PV turns Released/Failed; while the simulator
//     answers 503 the PV is kept (warning event, error metric), then the Datera app_instance
//     and the PV are deleted;
//  3. leader election: of two reconcilers on one Lease only the leader acts; cancelling it
//     hands over and the other acts.
func TestReconcileEndToEnd(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(2)})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cs := c.Client

	sim, backstore := recSimulator(t)
	admin, err := datera.New(datera.Config{Endpoint: "http://" + backstore, Username: fake.DefaultUser, Password: fake.DefaultPassword})
	require.NoError(t, err)

	for _, ns := range []string{credsNamespace, "heal", "elect"} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err = cs.CoreV1().Secrets(credsNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: credsSecret},
		Type:       mutate.Driver,
		Data:       map[string][]byte{"username": []byte(fake.DefaultUser), "password": []byte(fake.DefaultPassword)},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", backstore, corev1.PersistentVolumeReclaimDelete, nil), metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := mutate.Config{ClusterID: "e2e"}
	// The webhook ran and was registered with failurePolicy Ignore; now it is down.
	w := startWebhook(t, c, cfg)
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Ignore)
	w.Stop(t)
	recWaitDown(t, w.URL)

	mainReg := prometheus.NewRegistry()
	var main *recRunning
	top := t

	ok := t.Run("webhook down under failurePolicy Ignore: the loop heals", func(t *testing.T) {
		_, err := cs.AppsV1().StatefulSets("heal").Create(ctx, statefulSet("heal", "web", 3, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err, "admitted although the webhook is down")
		sts, err := cs.AppsV1().StatefulSets("heal").Get(ctx, "web", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Empty(t, sts.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet], "the webhook did not mutate it")
		// The claims exist and stay Pending: nothing provisions petfabric.io/datera.
		recWaitClaimsPending(ctx, t, cs, "heal", "data", "web", 3)
		time.Sleep(2 * time.Second)
		recWaitClaimsPending(ctx, t, cs, "heal", "data", "web", 3)
		for n := range 3 {
			_, err := cs.CoreV1().PersistentVolumes().Get(ctx, mutate.PVName("heal", fmt.Sprintf("data-web-%d", n)), metav1.GetOptions{})
			require.True(t, apierrors.IsNotFound(err), "no PV before the loop runs")
		}

		main = recStart(top, c, cfg, "main", "petfabric-e2e-main", mainReg) // outlives this subtest
		waitClaimsBound(ctx, t, cs, "heal", "data", "web", 3)
		waitRunning(ctx, t, cs, "heal", "app=web", 3)
		for n := range 3 {
			pv := getPV(ctx, t, cs, "heal", fmt.Sprintf("data-web-%d", n))
			assert.Equal(t, fmt.Sprintf("e2e_heal_data-web-%d", n), pv.Spec.FlexVolume.Options["volumeID"])
			assert.Equal(t, backstore, pv.Spec.FlexVolume.Options["backstoreServer"])
			assert.Equal(t, mutate.ManagedByValue, pv.Labels[mutate.LabelManagedBy])
			assert.Equal(t, corev1.PersistentVolumeReclaimDelete, pv.Spec.PersistentVolumeReclaimPolicy)
		}
		recWaitEvent(ctx, t, cs, "heal", "web", reconcile.EventCreatedPV, "template data ordinals 0-2")
		assert.Equal(t, 3.0, recMetric(t, mainReg, "petfabric_reconcile_pvs_created_total"))
		assert.Equal(t, 1.0, recMetric(t, mainReg, "petfabric_reconcile_is_leader"))

		_, err = c.Kubectl("-n", "heal", "scale", "statefulset", "web", "--replicas=5")
		require.NoError(t, err)
		waitClaimsBound(ctx, t, cs, "heal", "data", "web", 5)
		waitRunning(ctx, t, cs, "heal", "app=web", 5)
		recWaitEvent(ctx, t, cs, "heal", "web", reconcile.EventCreatedPV, "template data ordinals 3-4")
		assert.Equal(t, 5.0, recMetric(t, mainReg, "petfabric_reconcile_pvs_created_total"))

		// An Available PV no StatefulSet needs (its StatefulSet "ghost" never existed) is
		// deleted once the grace period has passed; the needed ones stay.
		ghost := recPlannedPV(t, cs, cfg, statefulSet("heal", "ghost", 1, ptr.To("datera-gold")), 0)
		_, err = cs.CoreV1().PersistentVolumes().Create(ctx, ghost, metav1.CreateOptions{})
		require.NoError(t, err)
		created := time.Now()
		recWaitGone(ctx, t, cs, ghost.Name)
		assert.GreaterOrEqual(t, time.Since(created), recOrphanGrace-time.Second, "not before the grace period")
		assert.Equal(t, 1.0, recMetric(t, mainReg, "petfabric_reconcile_orphans_deleted_total"))
		assert.Equal(t, 5, recCountManaged(ctx, t, cs), "the bound PVs stay")
	})
	require.True(t, ok, "the later scenarios build on the first")

	t.Run("reclaim Delete: Datera volume deleted (after a 503 outage), then the PV", func(t *testing.T) {
		pv := getPV(ctx, t, cs, "heal", "data-web-4")
		volumeID := pv.Spec.FlexVolume.Options["volumeID"]
		// The flex driver creates the volume on first mount; kwok runs no kubelet, so do it here.
		_, err := admin.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: volumeID, SizeGiB: 1, ReplicaCount: 3})
		require.NoError(t, err)
		// Datera is unavailable: the first step of a deletion (forced offline) answers 503.
		const route = "PUT /app_instances/{ai}"
		sim.SetFault(route, fake.Fault{ErrorRate: 1, Status: 503})

		require.NoError(t, cs.AppsV1().StatefulSets("heal").Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}))
		require.NoError(t, cs.CoreV1().PersistentVolumeClaims("heal").Delete(ctx, "data-web-4", metav1.DeleteOptions{}))
		phase := recWaitPhase(ctx, t, cs, pv.Name, corev1.VolumeReleased, corev1.VolumeFailed)
		t.Logf("PV %s turned %s after its claim was deleted", pv.Name, phase)

		recWaitEvent(ctx, t, cs, "default", pv.Name, reconcile.EventDateraDeleteFailed, "deleting Datera volume "+volumeID+" failed (will retry)")
		require.Eventually(t, func() bool { return sim.Requests(route) >= 2 }, time.Minute, 100*time.Millisecond, "retried")
		assert.GreaterOrEqual(t, recMetric(t, mainReg, "petfabric_reconcile_errors_total", "reason", reconcile.ReasonDateraDelete), 1.0)
		_, err = cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		require.NoError(t, err, "the PV keeps track of the Datera volume while it cannot be deleted")
		_, err = admin.GetAppInstance(ctx, volumeID)
		require.NoError(t, err, "the Datera volume is still there")

		sim.ClearFaults()
		recWaitGone(ctx, t, cs, pv.Name)
		_, err = admin.GetAppInstance(ctx, volumeID)
		assert.ErrorIs(t, err, datera.ErrNotFound, "the Datera volume is deleted")
		assert.Equal(t, 1.0, recMetric(t, mainReg, "petfabric_reconcile_datera_volumes_deleted_total"))
		assert.Equal(t, 1.0, recMetric(t, mainReg, "petfabric_reconcile_released_pvs_deleted_total"))
		recWaitEvent(ctx, t, cs, "default", pv.Name, reconcile.EventDeletedDatera, volumeID)
		// The other claims still exist: their PVs (Bound) are untouched.
		assert.Equal(t, 4, recCountManaged(ctx, t, cs))
	})

	t.Run("leader election: only the leader acts; cancelling it hands over", func(t *testing.T) {
		main.Stop(t)
		regs := map[string]*prometheus.Registry{"a": prometheus.NewRegistry(), "b": prometheus.NewRegistry()}
		cands := map[string]*recRunning{}
		for id, reg := range regs {
			cands[id] = recStart(t, c, cfg, id, "petfabric-e2e-elect", reg)
		}
		var leader, follower string
		require.Eventually(t, func() bool {
			for id, r := range cands {
				if r.r.IsLeader() {
					leader = id
				}
			}
			return leader != ""
		}, time.Minute, 50*time.Millisecond)
		follower = map[string]string{"a": "b", "b": "a"}[leader]
		t.Logf("leader %s, follower %s", leader, follower)

		_, err := cs.AppsV1().StatefulSets("elect").Create(ctx, statefulSet("elect", "db", 2, ptr.To("datera-gold")), metav1.CreateOptions{})
		require.NoError(t, err)
		waitClaimsBound(ctx, t, cs, "elect", "data", "db", 2)
		assert.False(t, cands[follower].r.IsLeader(), "one leader at a time")
		assert.Equal(t, 2.0, recMetric(t, regs[leader], "petfabric_reconcile_pvs_created_total"))
		assert.Equal(t, 0.0, recMetric(t, regs[follower], "petfabric_reconcile_pvs_created_total"), "the follower does nothing")
		assert.Equal(t, 0.0, recMetric(t, regs[follower], "petfabric_reconcile_is_leader"))

		handover := time.Now()
		cands[leader].Stop(t)
		require.Eventually(t, cands[follower].r.IsLeader, time.Minute, 50*time.Millisecond, "the follower takes over")
		t.Logf("handed over in %s (lease released on cancel)", time.Since(handover).Round(time.Millisecond))
		lease, err := cs.CoordinationV1().Leases(credsNamespace).Get(ctx, "petfabric-e2e-elect", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "e2e-"+follower, ptr.Deref(lease.Spec.HolderIdentity, ""))

		_, err = c.Kubectl("-n", "elect", "scale", "statefulset", "db", "--replicas=3")
		require.NoError(t, err)
		waitClaimsBound(ctx, t, cs, "elect", "data", "db", 3)
		waitRunning(ctx, t, cs, "elect", "app=db", 3)
		assert.Equal(t, 1.0, recMetric(t, regs[follower], "petfabric_reconcile_pvs_created_total"), "the new leader acts")
		assert.Equal(t, 2.0, recMetric(t, regs[leader], "petfabric_reconcile_pvs_created_total"), "the old one no longer does")
	})
}

// recOrphanGrace is the loop's grace period in these tests.
const recOrphanGrace = 4 * time.Second

// recRunning is a reconciler running Run (with leader election) in this process.
type recRunning struct {
	r      *reconcile.Reconciler
	cancel context.CancelFunc
	done   chan error
	log    string
}

// Stop cancels it and waits until it has stopped its loop and released the lease.
func (x *recRunning) Stop(t *testing.T) {
	t.Helper()
	x.cancel()
	select {
	case err := <-x.done:
		require.NoError(t, err)
		x.done <- nil // for the cleanup
	case <-time.After(time.Minute):
		t.Fatal("reconciler did not stop")
	}
}

func recStart(t *testing.T, c *cluster.Cluster, cfg mutate.Config, id, lease string, reg prometheus.Registerer) *recRunning {
	t.Helper()
	path := filepath.Join(c.Dir, "reconcile-"+id+".log")
	f, err := os.Create(path)
	require.NoError(t, err)
	cs, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	r, err := reconcile.New(reconcile.Options{
		Client: cs, Mutate: cfg,
		LeaseNamespace: credsNamespace, LeaseName: lease, Identity: "e2e-" + id,
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 250 * time.Millisecond,
		OrphanGrace: recOrphanGrace, Resync: 5 * time.Second,
		RetryBase: 200 * time.Millisecond, RetryMax: 2 * time.Second,
		Logger:  slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: reg,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	x := &recRunning{r: r, cancel: cancel, done: make(chan error, 1), log: path}
	go func() { x.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-x.done
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("reconciler %s log (last 40 lines):\n%s", id, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
	return x
}

// recSimulator serves the Datera simulator over HTTP on port 7717 (a backstoreServer must name
// 7717 or 7718; 7717 means http) of a random loopback address, so parallel tests do not collide.
func recSimulator(t *testing.T) (*fake.Server, string) {
	t.Helper()
	sim, err := fake.New(fake.Options{})
	require.NoError(t, err)
	return sim, fake.ServeBackstore(t, sim)
}

// recWaitDown waits until nothing accepts connections at the webhook's address.
func recWaitDown(t *testing.T, rawURL string) {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		conn, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err != nil {
			return true
		}
		conn.Close()
		return false
	}, 30*time.Second, 100*time.Millisecond, "webhook still listening")
}

func recWaitClaimsPending(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, template, sts string, n int) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for i := range n {
			pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, mutate.ClaimName(template, sts, i), metav1.GetOptions{})
			if err != nil || pvc.Status.Phase != corev1.ClaimPending {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(t, err, "claims of %s/%s not Pending", ns, sts)
}

// recWaitEvent waits for an event with reason on the named object whose message contains substr.
func recWaitEvent(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, object, reason, substr string) {
	t.Helper()
	var seen []string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{"involvedObject.name": object}.String()})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, ev := range list.Items {
			seen = append(seen, ev.Reason+": "+ev.Message)
			if ev.Reason == reason && strings.Contains(ev.Message, substr) && ev.Source.Component == reconcile.Component {
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "no %s event on %s/%s containing %q; events: %q", reason, ns, object, substr, seen)
}

func recWaitPhase(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, phases ...corev1.PersistentVolumePhase) corev1.PersistentVolumePhase {
	t.Helper()
	var phase corev1.PersistentVolumePhase
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		phase = pv.Status.Phase
		for _, p := range phases {
			if phase == p {
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "PV %s stayed %s, want one of %v", name, phase, phases)
	return phase
}

func recWaitGone(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	require.NoError(t, err, "PV %s not deleted", name)
}

func recCountManaged(ctx context.Context, t *testing.T, cs kubernetes.Interface) int {
	t.Helper()
	list, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: mutate.LabelManagedBy + "=" + mutate.ManagedByValue})
	require.NoError(t, err)
	return len(list.Items)
}

// recPlannedPV is the PV the webhook would write for ordinal n of the StatefulSet.
func recPlannedPV(t *testing.T, cs kubernetes.Interface, cfg mutate.Config, sts *appsv1.StatefulSet, n int) *corev1.PersistentVolume {
	t.Helper()
	sc, err := cs.StorageV1().StorageClasses().Get(context.Background(), *sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName, metav1.GetOptions{})
	require.NoError(t, err)
	class, ok := mutate.ClassFromStorageClass(sc)
	require.True(t, ok)
	ns, err := cs.CoreV1().Namespaces().Get(context.Background(), sts.Namespace, metav1.GetOptions{})
	require.NoError(t, err)
	plan, err := mutate.Decide(cfg, mutate.Input{StatefulSet: sts, NamespaceUID: string(ns.UID), Classes: map[string]mutate.Class{class.Name: class}})
	require.NoError(t, err)
	require.Len(t, plan.Templates, 1)
	pv, err := plan.Ordinal(plan.Templates[0], n).PersistentVolume(cfg)
	require.NoError(t, err)
	return pv
}

// recMetric sums the samples of a metric family, optionally only those with a label value.
func recMetric(t *testing.T, reg *prometheus.Registry, name string, label ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(label) == 2 {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label[0] && lp.GetValue() != label[1] {
						continue metrics
					}
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
