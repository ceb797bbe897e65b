package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestReconcileIsolationFencesDeadHolder is issue 9 #4 end to end: the real control plane
// (apiserver, PV controller, kwok nodes), the reconcile loop, the Datera simulator exporting
// loop-backed targets, and the real FlexVolume driver binary on two "nodes" (node-0, node-1).
//
//   - node-0 mounts a ReadWriteOnce volume; its agent keeps reporting;
//   - a new pod of the claim waits; node-1's driver mount fails naming node-0 (slice A's fence);
//   - node-0's pod is deleted but its report stays fresh: a live holder is never fenced;
//   - node-0 dies (its report stops changing): only after FenceAfter does the loop remove
//     node-0's initiator from the ACL, and only then does node-1's driver mount succeed, with
//     node-0's data.
func TestReconcileIsolationFencesDeadHolder(t *testing.T) {
	cluster.RequireBinaries(t)
	driver := buildFlexDriver(t)
	n0 := flextest.NewEnv(t, flextest.EnvOptions{NodeName: "node-0", InitiatorName: "iqn.1993-08.org.debian:01:e2e-node-0"})
	n1 := flextest.NewEnv(t, flextest.EnvOptions{Share: n0, NodeName: "node-1", InitiatorName: "iqn.1993-08.org.debian:01:e2e-node-1"})
	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(2)})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cs := c.Client

	const (
		ns         = "fence"
		claim      = "data-db-0"
		fenceAfter = 5 * time.Second
	)
	for _, name := range []string{credsNamespace, ns} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	nsObj, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	require.NoError(t, err)
	backstore := strings.TrimPrefix(n0.SimURL, "http://")
	_, err = cs.StorageV1().StorageClasses().Create(ctx, dateraClass("datera-gold", backstore, corev1.PersistentVolumeReclaimRetain, nil), metav1.CreateOptions{})
	require.NoError(t, err)

	// The claim and its pre-bound PV, as the webhook writes them; the PV controller binds them.
	owner := pvoptions.Owner{ClusterID: "e2e", Namespace: ns, Claim: claim, NamespaceUID: string(nsObj.UID)}
	volumeID, err := mutate.VolumeID("e2e", ns, claim)
	require.NoError(t, err)
	driverOpts := map[string]string{pvoptions.OptAccessMode: pvoptions.AccessReadWriteOnce, "kubernetes.io/pvOrVolumeName": pvoptions.PVName(ns, claim)}
	for k, v := range owner.Options() {
		driverOpts[k] = v
	}
	pvOpts := map[string]string{"volumeID": volumeID, "size": "1", "replica": "1", "backstoreServer": backstore}
	for k, v := range driverOpts {
		if !strings.HasPrefix(k, "kubernetes.io/") {
			pvOpts[k] = v
		}
	}
	fsMode := corev1.PersistentVolumeFilesystem
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvoptions.PVName(ns, claim), Labels: map[string]string{mutate.LabelManagedBy: mutate.ManagedByValue, mutate.LabelNamespace: ns}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "datera-gold",
			VolumeMode:                    &fsMode,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver: mutate.Driver, FSType: "xfs", SecretRef: &corev1.SecretReference{Name: credsSecret, Namespace: credsNamespace}, Options: pvOpts,
			}},
		},
	}
	_, err = cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: claim},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To("datera-gold"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	waitClaimsBound(ctx, t, cs, ns, "data", "db", 1)

	// Both nodes' agents report (a new Lease version every 500 ms) until stopped.
	agents := map[string]*fenceAgent{}
	for _, n := range []*flextest.Env{n0, n1} {
		agents[n.NodeName] = startFenceAgent(ctx, t, cs, n.NodeName, n.InitiatorName)
	}

	reg := prometheus.NewRegistry()
	startFenceLoop(t, c, reg, fenceAfter, n0)

	// node-0's pet mounts the volume (kubelet runs the driver) and writes.
	_, err = cs.CoreV1().Pods(ns).Create(ctx, fencePod("db-0", "node-0", claim), metav1.CreateOptions{})
	require.NoError(t, err)
	dir0 := n0.PodDir("db-0")
	r := runFlex(t, driver, n0, "mount", dir0, n0.Options(volumeID, driverOpts))
	require.Equal(t, flex.StatusSuccess, r.Status, "node-0 mount: %s", r.Message)
	require.NoError(t, os.WriteFile(filepath.Join(dir0, "f"), []byte("written on node-0"), 0o644))
	require.NoError(t, exec.Command("sync").Run())
	require.Equal(t, []string{n0.InitiatorName}, n0.ACL(volumeID))

	// The replacement pet waits (unschedulable here; in a cluster it waits on the extender or
	// in ContainerCreating on node-1).
	waiting := fencePod("db-0-new", "", claim)
	waiting.Spec.NodeSelector = map[string]string{"petfabric.io/e2e-nowhere": "true"}
	_, err = cs.CoreV1().Pods(ns).Create(ctx, waiting, metav1.CreateOptions{})
	require.NoError(t, err)
	dir1 := n1.PodDir("db-0-new")
	r = runFlex(t, driver, n1, "mount", dir1, n1.Options(volumeID, driverOpts))
	require.Equal(t, flex.StatusFailure, r.Status, "node-1 must not mount while node-0 holds the volume")
	assert.Contains(t, r.Message, n0.InitiatorName)

	t.Run("a live holder is never fenced, even without its pod", func(t *testing.T) {
		require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, "db-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
		time.Sleep(3 * fenceAfter)
		assert.Equal(t, []string{n0.InitiatorName}, n0.ACL(volumeID), "node-0 still reports: its initiator stays")
		assert.Zero(t, recMetric(t, reg, "petfabric_reconcile_fences_total"))
	})

	t.Run("a dead holder is fenced after the timeout, and only then node-1 mounts", func(t *testing.T) {
		// node-0 dies: its agent stops and its mounts vanish with it (the ACL is left as it was).
		stopped := agents["node-0"].stop()
		for _, m := range []string{dir0, filepath.Join(n0.GlobalDir, volumeID)} {
			require.NoError(t, exec.Command("umount", "-l", m).Run(), "umount %s", m)
		}
		var mountedAt, fencedAt time.Time
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			attempt := time.Now()
			held := slices.Contains(n0.ACL(volumeID), n0.InitiatorName)
			if !held && fencedAt.IsZero() {
				fencedAt = attempt
			}
			r := runFlex(t, driver, n1, "mount", dir1, n1.Options(volumeID, driverOpts))
			switch {
			case r.Status == flex.StatusSuccess:
				if held { // the fence landed while this attempt ran
					require.NotContains(t, n0.ACL(volumeID), n0.InitiatorName)
					fencedAt = attempt
				}
				mountedAt = time.Now()
				return true, nil
			case held:
				require.Contains(t, r.Message, n0.InitiatorName, "until the fence, node-1's mount names the holder")
			default:
				t.Logf("mount after the fence failed (retried): %s", r.Message)
			}
			return false, nil
		})
		require.NoError(t, err, "node-1 never mounted")
		require.False(t, fencedAt.IsZero(), "node-1 mounted although node-0 was never fenced")
		assert.False(t, mountedAt.Before(fencedAt), "node-1 mounted only after the fence")
		assert.GreaterOrEqual(t, fencedAt.Sub(stopped), fenceAfter, "not before the report was unchanged for FenceAfter")
		t.Logf("report stopped → fenced in %s (fence-after %s); mounted on node-1 %s later",
			fencedAt.Sub(stopped).Round(100*time.Millisecond), fenceAfter, mountedAt.Sub(fencedAt).Round(100*time.Millisecond))

		assert.Equal(t, []string{n1.InitiatorName}, n1.ACL(volumeID))
		b, err := os.ReadFile(filepath.Join(dir1, "f"))
		require.NoError(t, err)
		assert.Equal(t, "written on node-0", string(b))
		assert.Equal(t, 1.0, recMetric(t, reg, "petfabric_reconcile_fences_total"))
		recWaitEvent(ctx, t, cs, "default", pv.Name, reconcile.EventFenced, "fenced node node-0 (initiator "+n0.InitiatorName+") out of volume "+volumeID)
		recWaitEvent(ctx, t, cs, ns, "db-0-new", reconcile.EventFenced, "waiting to be scheduled")
		r := runFlex(t, driver, n1, "unmount", dir1)
		require.Equal(t, flex.StatusSuccess, r.Status, r.Message)
	})
}

func fencePod(name, node, claim string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "nginx", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
}

// fenceAgent stands in for a node agent: it rewrites the node's report Lease every 500 ms.
type fenceAgent struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	last   time.Time // last successful write
}

func startFenceAgent(ctx context.Context, t *testing.T, cs kubernetes.Interface, node, initiator string) *fenceAgent {
	t.Helper()
	actx, cancel := context.WithCancel(ctx)
	a := &fenceAgent{cancel: cancel, done: make(chan struct{})}
	leases := cs.CoordinationV1().Leases(credsNamespace)
	write := func() error {
		now := time.Now()
		raw, err := (&placement.Report{Version: placement.ReportVersion, Initiator: initiator, ProbedAt: now, Backstores: map[string]placement.BackstoreReport{}}).Encode()
		if err != nil {
			return err
		}
		l, err := leases.Get(actx, placement.LeaseName(node), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName(node), Labels: map[string]string{
				placement.LeaseManagedByLabel: placement.LeaseManagedByValue, placement.LeaseComponentLabel: placement.LeaseComponentValue}}}
		} else if err != nil {
			return err
		}
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[placement.ReportAnnotation] = raw
		l.Spec.HolderIdentity = ptr.To(node)
		l.Spec.LeaseDurationSeconds = ptr.To[int32](2)
		l.Spec.RenewTime = &metav1.MicroTime{Time: now}
		if l.ResourceVersion == "" {
			_, err = leases.Create(actx, l, metav1.CreateOptions{})
		} else {
			_, err = leases.Update(actx, l, metav1.UpdateOptions{})
		}
		if err == nil {
			a.mu.Lock()
			a.last = now
			a.mu.Unlock()
		}
		return err
	}
	require.NoError(t, write())
	go func() {
		defer close(a.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-actx.Done():
				return
			case <-tick.C:
				_ = write()
			}
		}
	}()
	t.Cleanup(func() { a.stop() })
	return a
}

// stop ends the agent and returns when it last wrote its report.
func (a *fenceAgent) stop() time.Time {
	a.cancel()
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// startFenceLoop runs the reconcile loop (no leader election) with fencing on, reading the
// simulator through node-0's Datera client (the simulator listens on a port no backstoreServer
// mapping knows).
func startFenceLoop(t *testing.T, c *cluster.Cluster, reg prometheus.Registerer, fenceAfter time.Duration, n *flextest.Env) {
	t.Helper()
	f, err := os.Create(filepath.Join(c.Dir, "reconcile-fence.log"))
	require.NoError(t, err)
	cs, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	r, err := reconcile.New(reconcile.Options{
		Client: cs, Mutate: mutate.Config{ClusterID: "e2e"},
		ReportNamespace: credsNamespace, FenceAfter: fenceAfter,
		Resync: 5 * time.Second, RetryBase: 200 * time.Millisecond, RetryMax: 2 * time.Second,
		DateraFor: func(context.Context, *corev1.PersistentVolume) (reconcile.DateraAPI, error) { return n.Client, nil },
		Logger:    slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:   reg,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.RunController(ctx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("reconcile loop log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})
}

// buildFlexDriver builds the FlexVolume driver with the loop-device stand-in initiator (this
// kernel has no iscsi_tcp), as cmd/flex's tests do.
func buildFlexDriver(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iscsi")
	out, err := exec.Command("go", "build", "-tags", "petfabric_standin", "-o", bin, "../../cmd/flex").CombinedOutput()
	require.NoError(t, err, "building the driver: %s", out)
	return bin
}

// runFlex runs one driver call on node n and returns its reply.
func runFlex(t *testing.T, bin string, n *flextest.Env, args ...string) flex.Reply {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), flex.EnvConfig+"="+n.ConfigFile)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	_ = cmd.Run() // the reply says what happened; the exit code follows it
	var reply flex.Reply
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &reply), "driver %v printed %q", args[0], stdout.String())
	return reply
}
