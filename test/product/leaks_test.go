package product

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/petfabric/petfabric/internal/testenv"
)

// TestLeakSnapshot makes one of each kind of leak for real where the host allows it (a tmpfs
// mount, a loop device on a file, a process carrying a marker, one started by pid), and a PV,
// a Datera volume with an ACL entry and a tgtd target through the probes' listing functions,
// then checks that Leaked names exactly those, and nothing once they are gone.
func TestLeakSnapshot(t *testing.T) {
	testenv.Root(t) // mounts and loop devices
	testenv.LookPath(t, "losetup")
	ctx := context.Background()
	root := t.TempDir()
	marker := "petfabric-leak-test-" + strconv.Itoa(os.Getpid())
	cs := fake.NewClientset(&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "kept"}})
	var ais []AppInstance
	var targets []string
	probes := LeakProbes{
		Client:         cs,
		AppInstances:   func(context.Context) ([]AppInstance, error) { return ais, nil },
		TgtTargets:     func(context.Context) ([]string, error) { return targets, nil },
		MountRoots:     []string{root},
		LoopRoots:      []string{root},
		CmdlineMarkers: []string{marker},
	}
	before, err := TakeSnapshot(ctx, probes)
	require.NoError(t, err)
	assert.Empty(t, before.Leaked(before))

	// One of each.
	_, err = cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-1"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	ais = []AppInstance{{Name: "ai-1", ACL: []string{"iqn.2016-01.io.petfabric:node-0"}}}
	targets = []string{"iqn.2013-05.com.daterainc:tc:01:sn:ai-1"}
	mnt := filepath.Join(root, "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	require.NoError(t, syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	img := filepath.Join(root, "vol.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 1<<20), 0o600))
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	require.NoError(t, err, "%s", out)
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", loop).Run() })
	marked := exec.Command("sh", "-c", "sleep 60 # "+marker)
	require.NoError(t, marked.Start())
	t.Cleanup(func() { _ = marked.Process.Kill(); _ = marked.Wait() })
	// sh forks to run sleep, and until the child execs it carries sh's command line, marker
	// included: wait for the one marked process the snapshot below must find.
	require.Eventually(t, func() bool {
		s, err := TakeSnapshot(ctx, LeakProbes{CmdlineMarkers: []string{marker}})
		return err == nil && len(s.Processes) == 1
	}, 5*time.Second, 10*time.Millisecond, "sh's child never exec'd sleep")
	byPid := exec.Command("sleep", "61")
	require.NoError(t, byPid.Start())
	t.Cleanup(func() { _ = byPid.Process.Kill(); _ = byPid.Wait() })
	probes.PIDs = []int{byPid.Process.Pid}

	after, err := TakeSnapshot(ctx, probes)
	require.NoError(t, err)
	pid := func(c *exec.Cmd) string { return strconv.Itoa(c.Process.Pid) }
	assert.Empty(t, after.Leaked(after), "a snapshot leaks nothing against itself")
	leaked := before.Leaked(after)
	require.Len(t, leaked, 8, "%q", leaked)
	assert.Equal(t, []string{
		"PersistentVolume: pv-1",
		"Datera volume: ai-1",
		"Datera ACL entry: ai-1 iqn.2016-01.io.petfabric:node-0",
		"tgtd target: iqn.2013-05.com.daterainc:tc:01:sn:ai-1",
		"mount: " + mnt,
		"loop device: " + loop + " " + img,
	}, leaked[:6])
	assert.ElementsMatch(t, []string{
		"process: " + pid(marked) + " sh -c sleep 60 # " + marker,
		"process: " + pid(byPid) + " sleep 61",
	}, leaked[6:])

	// The loop device's backing file deleted: still a leak, named with its old path.
	require.NoError(t, os.Remove(img))
	s, err := TakeSnapshot(ctx, probes)
	require.NoError(t, err)
	assert.Contains(t, before.Leaked(s), "loop device: "+loop+" "+img+" (deleted)")

	// All gone, the exited processes not yet reaped (zombies) included.
	require.NoError(t, cs.CoreV1().PersistentVolumes().Delete(ctx, "pv-1", metav1.DeleteOptions{}))
	ais, targets = nil, nil
	require.NoError(t, syscall.Unmount(mnt, 0))
	out, err = exec.Command("losetup", "-d", loop).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.NoError(t, marked.Process.Kill())
	require.NoError(t, byPid.Process.Kill())
	require.Eventually(t, func() bool { return zombie(marked.Process.Pid) && zombie(byPid.Process.Pid) }, 5*time.Second, 10*time.Millisecond)
	s, err = TakeSnapshot(ctx, probes)
	require.NoError(t, err)
	assert.Empty(t, before.Leaked(s))
}

// TestLeakProbeErrors: a failing probe's error names it, and the others still report.
func TestLeakProbeErrors(t *testing.T) {
	root := t.TempDir()
	s, err := TakeSnapshot(context.Background(), LeakProbes{
		AppInstances: DateraAt("http://127.0.0.1:1"),
		TgtTargets:   func(context.Context) ([]string, error) { return []string{"iqn.x"}, nil },
		MountRoots:   []string{root},
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "list Datera app_instances")
	assert.Equal(t, []string{"iqn.x"}, s.TgtTargets)
}
