package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/mount-utils"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/test/cluster"
)

// kubeletSetsSysctls are the values kubelet writes at start.
var kubeletSetsSysctls = map[string]string{"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}

// hostSnapshot is the host state a kubelet node changes while it runs.
type hostSnapshot struct {
	sysctls map[string]string
	paths   map[string]bool     // host paths kubelet creates outside its root dir
	mounts  []string            // mount points under the watched dirs
	procs   []string            // processes whose command line names the watched dirs
	cgroups map[string][]string // per cgroup controller, the kube*/pod* groups at its top
}

func snapshotHost(t *testing.T, dirs ...string) hostSnapshot {
	t.Helper()
	s := hostSnapshot{paths: map[string]bool{}, cgroups: map[string][]string{}}
	var err error
	s.sysctls, err = cluster.ReadSysctls()
	require.NoError(t, err)
	for _, p := range append(cluster.KubeletHostPaths, "/var/lib/kubelet/device-plugins/kubelet.sock") {
		_, err := os.Lstat(p)
		s.paths[p] = err == nil
	}
	mi, err := mount.ParseMountInfo("/proc/self/mountinfo")
	require.NoError(t, err)
	for _, m := range mi {
		for _, d := range dirs {
			if m.MountPoint == d || strings.HasPrefix(m.MountPoint, d+"/") {
				s.mounts = append(s.mounts, m.MountPoint+" ("+m.FsType+")")
			}
		}
	}
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // exited meanwhile
		}
		cl := strings.ReplaceAll(string(cmdline), "\x00", " ")
		for _, d := range dirs {
			if strings.Contains(cl, d) {
				s.procs = append(s.procs, e.Name()+": "+cl)
			}
		}
	}
	controllers, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, c := range controllers {
		groups, _ := os.ReadDir(c)
		for _, g := range groups {
			if g.IsDir() && (strings.HasPrefix(g.Name(), "kube") || strings.HasPrefix(g.Name(), "pod")) {
				s.cgroups[filepath.Base(c)] = append(s.cgroups[filepath.Base(c)], g.Name())
			}
		}
	}
	return s
}

// TestKubeletNodeLeavesHostAsFound starts a control plane with a kwok node and a real kubelet
// node, runs a pod with volumes on the kubelet node (emptyDir and the service-account token's
// tmpfs), and stops everything. While kubelet runs, the host changes in the ways the harness
// must undo (sysctls, mounts, the device-plugin socket, processes); after Stop each is as it
// was before the test. It also checks the node is a real kubelet registered through the Node
// authorizer, and that the kwok node now keeps a node Lease (the NotReady flapping fix).
func TestKubeletNodeLeavesHostAsFound(t *testing.T) {
	cluster.RequireKubelet(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Snapshots outside this cluster's run are taken under the host lock: kubelets of another
	// test binary (test/e2e/kubelet) may run in parallel and change the same host state.
	underHostLock := func() hostSnapshot {
		unlock, err := cluster.LockKubeletHost(ctx)
		require.NoError(t, err)
		defer unlock()
		return snapshotHost(t, dir)
	}
	before := underHostLock()
	for k, v := range kubeletSetsSysctls {
		if before.sysctls[k] == v {
			t.Logf("sysctl %s is %s before the test, the value kubelet sets: its restore cannot be told apart here", k, v)
		}
	}

	began := time.Now()
	c := cluster.Start(t, cluster.Options{Dir: dir, Nodes: kwokNodes("kwok-a"), Kubelets: []cluster.KubeletSpec{{Name: "real-a", Labels: map[string]string{"petfabric.io/e2e": "kubelet"}}}})
	t.Logf("control plane + 1 kubelet node ready in %s", time.Since(began).Round(time.Millisecond))
	require.Len(t, c.Kubelets, 1)
	k := c.Kubelets[0]

	node, err := c.Client.CoreV1().Nodes().Get(ctx, "real-a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "v1.36.3", node.Status.NodeInfo.KubeletVersion, "a real kubelet registered the node")
	assert.Equal(t, "kubelet", node.Labels["petfabric.io/e2e"])

	// The kwok node's heartbeat now rides on a node Lease, as a kubelet's does.
	leaseWait := time.Now()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, "kwok-a", metav1.GetOptions{})
		return err == nil, nil
	}), "kwok keeps no Lease for its node")
	t.Logf("kwok node Lease present %s after the cluster was ready", time.Since(leaseWait).Round(time.Millisecond))

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "vols", Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": "real-a"},
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
				VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}}},
			Volumes: []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}},
		},
	}
	created := time.Now()
	_, err = c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods("default").Get(ctx, "vols", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	}), "the pod never ran on the kubelet node")
	t.Logf("pod Running %s after create", time.Since(created).Round(time.Millisecond))

	during := snapshotHost(t, dir)
	assert.Equal(t, kubeletSetsSysctls, during.sysctls, "kubelet sets these sysctls while it runs")
	assert.True(t, during.paths["/var/lib/kubelet/device-plugins/kubelet.sock"], "kubelet serves the device-plugin socket at its fixed path")
	assert.True(t, during.paths["/var/log/containers"])
	mounts, err := k.Mounts()
	require.NoError(t, err)
	assert.Contains(t, mounts, k.RootDir, "kubelet bind-mounts its root dir onto itself")
	var tmpfs int
	for _, m := range during.mounts {
		if strings.HasSuffix(m, "(tmpfs)") && strings.Contains(m, "/pods/") {
			tmpfs++
		}
	}
	assert.GreaterOrEqual(t, tmpfs, 2, "the pod's memory emptyDir and service-account token are tmpfs mounts: %v", during.mounts)
	assert.NotZero(t, k.Pid())
	assert.NotEmpty(t, during.procs)

	// Deleting the pod removes its container: kubelet then deletes the container's log files
	// ("<log path>*"), so the fake runtime must report a log path, or kubelet deletes every file
	// in its working directory (the cluster dir). When exactly kubelet removes the container is
	// its own business; test/e2e/kubelet checks the same after many pods came and went.
	canary := filepath.Join(dir, "canary")
	require.NoError(t, os.WriteFile(canary, []byte("kept"), 0o644))
	deleted := time.Now()
	// A grace period makes kubelet stop and remove the container before the pod is gone.
	require.NoError(t, c.Client.CoreV1().Pods("default").Delete(ctx, "vols", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](1)}))
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Pods("default").Get(ctx, "vols", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}), "the pod was never deleted")
	t.Logf("pod gone %s after delete", time.Since(deleted).Round(time.Millisecond))
	assert.FileExists(t, canary, "kubelet removed the container's logs only")
	assert.FileExists(t, filepath.Join(dir, "admin.kubeconfig"))

	stopped := time.Now()
	require.NoError(t, c.Stop())
	t.Logf("cluster with 1 kubelet node stopped in %s", time.Since(stopped).Round(time.Millisecond))
	after := underHostLock()
	assert.Equal(t, before.sysctls, after.sysctls, "sysctls restored")
	assert.Equal(t, before.paths, after.paths, "host paths kubelet created are removed")
	assert.Empty(t, after.mounts, "no mount left under the cluster dir")
	assert.Empty(t, after.procs, "no process left")
	assert.Equal(t, before.cgroups, after.cgroups, "no cgroup left")
	assert.NoDirExists(t, k.CRISocketDir, "the CRI socket dir is removed")
}
