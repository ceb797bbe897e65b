package kubelete2e

import (
	"context"
	"github.com/petfabric/petfabric/test/fixtures"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/test/helmchart"
)

// TestKubeletRunsPets runs a StatefulSet of two pets on two real kubelet nodes and walks a
// pet's life through kubelet's own driver calls. The steps share one control plane (start-up
// dominates the cost) and run in order; each names what it proves.
func TestKubeletRunsPets(t *testing.T) {
	e := newEnv(t, 2)
	// kubelet and the drivers it runs clean up after pods with paths of their own; a file in
	// the processes' working directory (the cluster dir) and this package's sources must
	// survive every step.
	canary := filepath.Join(e.c.Dir, "canary")
	require.NoError(t, os.WriteFile(canary, []byte("kept"), 0o644))
	defer func() {
		assert.FileExists(t, canary, "nothing deletes files in the kubelet's working directory")
		assert.FileExists(t, "pets_test.go", "nothing deletes files in the package directory")
	}()
	_, err := e.cs.AppsV1().StatefulSets(appNS).Create(e.ctx, fixtures.PetSet(appNS, "db", 2, classXFS), metav1.CreateOptions{})
	require.NoError(t, err)
	pets := map[string]*corev1.Pod{}
	for _, name := range []string{"db-0", "db-1"} {
		pets[name] = e.waitRunning(t, name, "", 90*time.Second)
	}
	require.NotEqual(t, pets["db-0"].Spec.NodeName, pets["db-1"].Spec.NodeName, "the pets prefer distinct nodes")
	require.Positive(t, e.ext.metric(t, `petfabric_extender_filter_decisions_total{reason="pass"}`),
		"kube-scheduler asked the extender about the pets' nodes")
	other := func(node string) string {
		if node == "node-0" {
			return "node-1"
		}
		return "node-0"
	}

	t.Run("each pet's volume is created on Datera, formatted once and mounted by kubelet", func(t *testing.T) {
		for name, pod := range pets {
			claim := "data-" + name
			pv := e.pv(t, claim)
			require.NotNil(t, pv.Spec.FlexVolume)
			id := pv.Spec.FlexVolume.Options[pvoptions.OptVolumeID]
			_, err := e.nodes["node-0"].Client.GetAppInstance(e.ctx, id)
			require.NoError(t, err, "volume %s exists on Datera", id)
			assert.Equal(t, []string{e.nodes[pod.Spec.NodeName].InitiatorName}, e.nodes["node-0"].ACL(id), "only the pet's node is in the ACL")

			dir := e.volumeDir(t, pod, claim)
			m := mountOf(t, dir)
			require.NotNil(t, m, "kubelet had the driver mount %s", dir)
			assert.Equal(t, "xfs", m.FSType, "the class has no fsType: the default (xfs) applies")
			assert.Equal(t, 1, e.count(t, pod.Spec.NodeName, "formatted blank volume"), "formatted once on %s", pod.Spec.NodeName)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "pet"), []byte(name), 0o644))

			// What kubelet sent: the PV's options plus its own keys, the secret's keys
			// (values redacted by the driver's log), fsType from the PV.
			calls := e.calls(t, pod.Spec.NodeName, flex.VerbMount, dir)
			require.NotEmpty(t, calls)
			o := calls[0].Options
			assert.Equal(t, flex.StatusSuccess, calls[len(calls)-1].Reply.Status)
			for k, want := range map[string]string{
				"kubernetes.io/fsType": "xfs", "kubernetes.io/readwrite": "rw", "kubernetes.io/pod.name": name,
				"kubernetes.io/pod.namespace": appNS, "kubernetes.io/pod.uid": string(pod.UID), "kubernetes.io/pvOrVolumeName": pv.Name,
				"kubernetes.io/serviceAccount.name": "default", "kubernetes.io/secret/username": "(redacted)",
				"kubernetes.io/secret/password": "(redacted)", pvoptions.OptVolumeID: id,
				pvoptions.OptClaimName: claim, pvoptions.OptClaimNamespace: appNS,
			} {
				assert.Equal(t, want, o[k], "option %s", k)
			}
			assert.NotContains(t, o, "kubernetes.io/mounterArgs.FsGroup", "no fsGroup in the pod: kubelet sends none")
		}
	})

	t.Run("kubelet restarted with pets running: the re-issued mount is a no-op", func(t *testing.T) {
		// The restarted kubelet reconstructs the pet's volume from its pod directory as
		// "uncertain" and runs MountVolume for it again. kubelet's FlexVolume mounter finds the
		// directory already a mount point and returns without calling the driver: the no-op is
		// kubelet's own, and nothing on the node changes.
		pod := pets["db-0"]
		node, dir := pod.Spec.NodeName, e.volumeDir(t, pod, "data-db-0")
		pvName := e.pv(t, "data-db-0").Name
		before := mountOf(t, dir)
		require.NotNil(t, before)
		formats, attaches := e.count(t, node, "formatted blank volume"), e.count(t, node, "volume attached")
		calls := len(e.calls(t, node, flex.VerbMount, dir))
		restarted := time.Now()
		require.NoError(t, e.kubelets[node].Restart(e.ctx))
		t.Logf("kubelet %s restarted in %s", node, time.Since(restarted).Round(time.Millisecond))
		// The log file starts afresh with each kubelet process.
		remount := `MountVolume.SetUp succeeded for volume \"` + pvName + `\"`
		require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return strings.Contains(e.kubeletLog(t, node, "econstruct", "MountVolume"), remount), nil
		}), "the restarted kubelet never re-ran MountVolume for the running pet; its volume lines:\n%s",
			e.kubeletLog(t, node, "econstruct", "MountVolume"))
		assert.Contains(t, e.kubeletLog(t, node, "econstruct"), "Volume is marked as uncertain and added into the actual state")
		assert.Len(t, e.calls(t, node, flex.VerbMount, dir), calls, "kubelet did not run the driver for a volume already mounted")
		assert.Equal(t, before.ID, mountOf(t, dir).ID, "nothing was remounted")
		assert.Equal(t, formats, e.count(t, node, "formatted blank volume"), "nothing was reformatted")
		assert.Equal(t, attaches, e.count(t, node, "volume attached"), "nothing was attached again")
		b, err := os.ReadFile(filepath.Join(dir, "pet"))
		require.NoError(t, err)
		assert.Equal(t, "db-0", string(b))
		got, err := e.cs.CoreV1().Pods(appNS).Get(e.ctx, "db-0", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, pod.UID, got.UID)
		assert.Equal(t, corev1.PodRunning, got.Status.Phase)
	})

	t.Run("a pet re-created on the same node finds its file", func(t *testing.T) {
		old := pets["db-0"]
		node := old.Spec.NodeName
		e.cordon(t, other(node), true)
		defer e.cordon(t, other(node), false)
		oldDir := e.volumeDir(t, old, "data-db-0")
		e.deletePod(t, "db-0", nil)
		pod := e.waitRunning(t, "db-0", string(old.UID), 60*time.Second)
		require.Equal(t, node, pod.Spec.NodeName)
		b, err := os.ReadFile(filepath.Join(e.volumeDir(t, pod, "data-db-0"), "pet"))
		require.NoError(t, err)
		assert.Equal(t, "db-0", string(b))
		u := e.calls(t, node, flex.VerbUnmount, oldDir)
		require.NotEmpty(t, u, "kubelet unmounted the old pod's volume")
		assert.Equal(t, flex.StatusSuccess, u[len(u)-1].Reply.Status)
		assert.Nil(t, mountOf(t, oldDir))
		pets["db-0"] = pod
	})

	t.Run("a pet moves to the other node: the old node logs out and leaves the ACL before the new node attaches", func(t *testing.T) {
		old := pets["db-0"]
		from, to := old.Spec.NodeName, other(old.Spec.NodeName)
		fromIQN, toIQN := e.nodes[from].InitiatorName, e.nodes[to].InitiatorName
		id := e.pv(t, "data-db-0").Spec.FlexVolume.Options[pvoptions.OptVolumeID]
		iqn := e.nodes["node-0"].IQN(id)
		oldDir := e.volumeDir(t, old, "data-db-0")
		e.cordon(t, from, true)
		defer e.cordon(t, from, false)
		t0 := time.Now()
		e.deletePod(t, "db-0", nil)
		pod := e.waitRunning(t, "db-0", string(old.UID), 60*time.Second)
		require.Equal(t, to, pod.Spec.NodeName)
		dir := e.volumeDir(t, pod, "data-db-0")
		b, err := os.ReadFile(filepath.Join(dir, "pet"))
		require.NoError(t, err)
		assert.Equal(t, "db-0", string(b), "the file written on %s is read on %s", from, to)

		u := e.calls(t, from, flex.VerbUnmount, oldDir)
		require.NotEmpty(t, u)
		unmounted := u[len(u)-1].Reply
		require.Equal(t, flex.StatusSuccess, unmounted.Status)
		m := e.calls(t, to, flex.VerbMount, dir)
		require.NotEmpty(t, m)
		assert.True(t, m[0].At.After(unmounted.Time), "the new node's first mount (%s) comes after the old node's unmount finished (%s)",
			m[0].At.Format(time.StampMicro), unmounted.Time.Format(time.StampMicro))
		assertHandOver(t, e.acl.history(iqn, t0), fromIQN, toIQN)
		assert.Equal(t, []string{toIQN}, e.nodes["node-0"].ACL(id))
		assert.Empty(t, e.nodes[from].Mounts(), "nothing of the volume is left mounted on %s", from)
		pets["db-0"] = pod
	})

	t.Run("fence: the new node's mount waits while the old node still holds the volume", func(t *testing.T) {
		// db-1's node loses its kubelet with the volume still attached and mounted; the pod is
		// force-deleted, and its replacement lands on the other node.
		old := pets["db-1"]
		holder, next := old.Spec.NodeName, other(old.Spec.NodeName)
		holderIQN, nextIQN := e.nodes[holder].InitiatorName, e.nodes[next].InitiatorName
		id := e.pv(t, "data-db-1").Spec.FlexVolume.Options[pvoptions.OptVolumeID]
		iqn := e.nodes["node-0"].IQN(id)
		e.cordon(t, holder, true)
		defer e.cordon(t, holder, false)
		t0 := time.Now()
		e.kubelets[holder].StopKubelet()
		e.deletePod(t, "db-1", ptr.To[int64](0))

		// kubelet on the next node runs mount, and the driver refuses naming the holder, again
		// and again, while the holder stays in the ACL.
		var refused []call
		require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			pod, err := e.cs.CoreV1().Pods(appNS).Get(ctx, "db-1", metav1.GetOptions{})
			if err != nil || pod.UID == old.UID || pod.Spec.NodeName == "" {
				return false, nil
			}
			refused = nil
			for _, c := range e.calls(t, next, flex.VerbMount, e.kubelets[next].PodVolumeDir(string(pod.UID), pluginDir, e.pv(t, "data-db-1").Name)) {
				if c.Reply.Status == flex.StatusFailure {
					refused = append(refused, c)
				}
			}
			return len(refused) >= 2, nil
		}), "the next node's kubelet never had a mount refused")
		for _, c := range refused {
			assert.Contains(t, c.Reply.Message, holderIQN, "the refusal names the holder")
		}
		pod, err := e.cs.CoreV1().Pods(appNS).Get(e.ctx, "db-1", metav1.GetOptions{})
		require.NoError(t, err)
		assert.NotEqual(t, corev1.PodRunning, pod.Status.Phase)
		assert.Equal(t, []string{holderIQN}, e.nodes["node-0"].ACL(id), "the holder is still alone in the ACL")

		// The holder's kubelet comes back, finds the pod gone and unmounts its volume; then the
		// next node's retried mount succeeds.
		released := time.Now()
		require.NoError(t, e.kubelets[holder].StartKubelet(e.ctx))
		pod = e.waitRunning(t, "db-1", string(old.UID), 90*time.Second)
		require.Equal(t, next, pod.Spec.NodeName)
		t.Logf("holder's kubelet back → pet Running on %s in %s", next, time.Since(released).Round(100*time.Millisecond))
		b, err := os.ReadFile(filepath.Join(e.volumeDir(t, pod, "data-db-1"), "pet"))
		require.NoError(t, err)
		assert.Equal(t, "db-1", string(b))
		h := e.acl.history(iqn, t0)
		assertHandOver(t, h, holderIQN, nextIQN)
		left := slices.IndexFunc(h, func(c aclChange) bool { return !slices.Contains(c.Initiators, holderIQN) })
		require.GreaterOrEqual(t, left, 0)
		for _, c := range refused {
			assert.True(t, c.At.Before(h[left].At), "each refused mount ran while the holder held the volume")
		}
		pets["db-1"] = pod
	})

	t.Run("fsGroup and a class fsType reach the driver as kubelet sends them", func(t *testing.T) {
		sts := fixtures.PetSet(appNS, "opts", 1, classExt4)
		sts.Spec.Template.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: ptr.To[int64](2000)}
		_, err := e.cs.AppsV1().StatefulSets(appNS).Create(e.ctx, sts, metav1.CreateOptions{})
		require.NoError(t, err)
		pod := e.waitRunning(t, "opts-0", "", 60*time.Second)
		dir := e.volumeDir(t, pod, "data-opts-0")
		c := e.calls(t, pod.Spec.NodeName, flex.VerbMount, dir)
		require.NotEmpty(t, c)
		assert.Equal(t, "2000", c[0].Options["kubernetes.io/mounterArgs.FsGroup"])
		assert.Equal(t, "ext4", c[0].Options["kubernetes.io/fsType"], "the class's fsType, through the PV")
		m := mountOf(t, dir)
		require.NotNil(t, m)
		assert.Equal(t, "ext4", m.FSType)
		var st syscall.Stat_t
		require.NoError(t, syscall.Stat(dir, &st))
		assert.EqualValues(t, 2000, st.Gid, "kubelet applied fsGroup to the volume (the driver declares the fsGroup capability)")
		require.NoError(t, os.WriteFile(filepath.Join(dir, "pet"), []byte("opts-0"), 0o644))
	})

	t.Run("a readOnly claim is mounted read-only", func(t *testing.T) {
		_, err := e.cs.AppsV1().StatefulSets(appNS).Patch(e.ctx, "opts", "application/merge-patch+json", []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{})
		require.NoError(t, err)
		require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := e.cs.CoreV1().Pods(appNS).Get(ctx, "opts-0", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}))
		reader := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: appNS},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/db:1",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}}}},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
					ClaimName: "data-opts-0", ReadOnly: true}}}},
			},
		}
		_, err = e.cs.CoreV1().Pods(appNS).Create(e.ctx, reader, metav1.CreateOptions{})
		require.NoError(t, err)
		pod := e.waitRunning(t, "reader", "", 60*time.Second)
		dir := e.volumeDir(t, pod, "data-opts-0")
		c := e.calls(t, pod.Spec.NodeName, flex.VerbMount, dir)
		require.NotEmpty(t, c)
		assert.Equal(t, "ro", c[0].Options["kubernetes.io/readwrite"])
		m := mountOf(t, dir)
		require.NotNil(t, m)
		assert.Contains(t, m.Opts, "ro", "mounted read-only")
		b, err := os.ReadFile(filepath.Join(dir, "pet"))
		require.NoError(t, err)
		assert.Equal(t, "opts-0", string(b))
		assert.Error(t, os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o644), "a read-only mount refuses writes")
	})

	t.Run("an inline datera/iscsi volume is refused by the driver, and by the chart's admission policy", func(t *testing.T) {
		// The pod names a pet's volume and dresses itself up with the pet's claim options; with
		// no secret, only the node's credentials file could log in, and the driver serves that
		// to petfabric PersistentVolumes only. (Where the chart is installed, its admission
		// policy refuses such a pod before it exists.)
		pv := e.pv(t, "data-db-0")
		id := pv.Spec.FlexVolume.Options[pvoptions.OptVolumeID]
		aclBefore := e.nodes["node-0"].ACL(id)
		opts := map[string]string{}
		for k, v := range pv.Spec.FlexVolume.Options {
			opts[k] = v
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "inline", Namespace: appNS},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](0),
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/db:1",
					VolumeMounts: []corev1.VolumeMount{{Name: "stolen", MountPath: "/data"}}}},
				Volumes: []corev1.Volume{{Name: "stolen", VolumeSource: corev1.VolumeSource{FlexVolume: &corev1.FlexVolumeSource{
					Driver: pv.Spec.FlexVolume.Driver, FSType: "xfs", Options: opts}}}},
			},
		}
		_, err := e.cs.CoreV1().Pods(appNS).Create(e.ctx, pod, metav1.CreateOptions{})
		require.NoError(t, err)
		var refused []call
		require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			p, err := e.cs.CoreV1().Pods(appNS).Get(ctx, "inline", metav1.GetOptions{})
			if err != nil || p.Spec.NodeName == "" {
				return false, nil
			}
			refused = e.calls(t, p.Spec.NodeName, flex.VerbMount, e.kubelets[p.Spec.NodeName].PodVolumeDir(string(p.UID), pluginDir, "stolen"))
			return len(refused) > 0 && refused[0].Reply.Status != "", nil
		}), "kubelet never called the driver for the inline volume")
		assert.Equal(t, "stolen", refused[0].Options["kubernetes.io/pvOrVolumeName"], "kubelet names an inline volume by the pod's volume name")
		assert.Equal(t, flex.StatusFailure, refused[0].Reply.Status)
		assert.Contains(t, refused[0].Reply.Message, "serves only petfabric PersistentVolumes")
		p, err := e.cs.CoreV1().Pods(appNS).Get(e.ctx, "inline", metav1.GetOptions{})
		require.NoError(t, err)
		assert.NotEqual(t, corev1.PodRunning, p.Status.Phase)
		assert.Equal(t, aclBefore, e.nodes["node-0"].ACL(id), "the refusal changed nothing on Datera")
		assert.True(t, strings.Contains(e.events(t, "inline"), "FailedMount"), "kubelet reports the refusal on the pod")

		// Where the chart is installed, its admission policy refuses the pod before kubelet
		// ever sees it. (Last: the chart's policies also govern PersistentVolume writes.)
		policy := helmchart.Release + "-no-inline-datera-volumes"
		var docs []string
		for _, o := range helmchart.Objects(t, helmchart.Render(t, "")) {
			if o.GetKind() == "ValidatingAdmissionPolicy" || o.GetKind() == "ValidatingAdmissionPolicyBinding" {
				b, err := yaml.Marshal(o.Object)
				require.NoError(t, err)
				docs = append(docs, string(b))
			}
		}
		_, err = e.c.KubectlInput(strings.Join(docs, "---\n"), "apply", "-f", "-")
		require.NoError(t, err)
		pod.Name = "inline-admitted"
		var last error
		require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			_, last = e.cs.CoreV1().Pods(appNS).Create(ctx, pod.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return apierrors.IsForbidden(last) && strings.Contains(last.Error(), policy), nil
		}), "policy %s never enforced; last: %v", policy, last)
		_, err = e.cs.CoreV1().Pods(appNS).Create(e.ctx, pod.DeepCopy(), metav1.CreateOptions{})
		require.True(t, apierrors.IsForbidden(err), "the inline pod is refused at admission: %v", err)
		assert.Contains(t, err.Error(), policy)
	})
}

// assertHandOver checks a target's ACL history during a move: the two nodes are never in the ACL
// together, and the old node leaves it before the new node is added.
func assertHandOver(t *testing.T, h []aclChange, from, to string) {
	t.Helper()
	require.NotEmpty(t, h, "the target's ACL changed")
	for _, c := range h {
		assert.False(t, slices.Contains(c.Initiators, from) && slices.Contains(c.Initiators, to),
			"both nodes in the ACL at %s: %v", c.At.Format(time.StampMicro), c.Initiators)
	}
	left := slices.IndexFunc(h, func(c aclChange) bool { return !slices.Contains(c.Initiators, from) })
	added := slices.IndexFunc(h, func(c aclChange) bool { return slices.Contains(c.Initiators, to) })
	require.GreaterOrEqual(t, left, 0, "the old node never left the ACL: %v", h)
	require.GreaterOrEqual(t, added, 0, "the new node never joined the ACL: %v", h)
	assert.Less(t, left, added, "the old node left the ACL before the new node was added: %v", h)
}
