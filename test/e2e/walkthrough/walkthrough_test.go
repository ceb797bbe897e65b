// Package walkthrough runs the 2016 Datera/PetSet blog walkthrough — the steps `make demo`
// narrates (test/product) — on the whole product: three real kubelet nodes (one without a
// route to the portal), the Datera simulator exporting tgtd targets, petfabric installed with
// its chart and its programs run from the installed rendering. It asserts on what every step
// observed, then that nothing leaked. TestDemoInterrupted runs the demo program itself and
// interrupts it.
package walkthrough

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petfabric/petfabric/internal/testenv"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/product"
)

// binDir is where the programs are built, shared with `make demo` (a warm build is a link).
func binDir(t *testing.T) string {
	t.Helper()
	home, err := os.UserHomeDir()
	require.NoError(t, err)
	if d := os.Getenv("PETFABRIC_CACHE"); d != "" {
		return filepath.Join(d, "demo", "bin")
	}
	return filepath.Join(home, ".cache", "petfabric", "demo", "bin")
}

func requireHost(t *testing.T) {
	t.Helper()
	cluster.RequireKubelet(t)
	for _, c := range []string{"tgtd", "tgtadm", "losetup", "mkfs.xfs", "ip"} {
		testenv.LookPath(t, c)
	}
}

// hostState is what the environment must leave as it found it.
type hostState struct {
	sysctls map[string]string
	route   string
}

// readHost reads the host state under the host-wide kubelet lock, so that no other test's
// kubelets (which set the same sysctls) run meanwhile.
func readHost(t *testing.T) hostState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	unlock, err := cluster.LockKubeletHost(ctx)
	require.NoError(t, err)
	defer unlock()
	s, err := cluster.ReadSysctls()
	require.NoError(t, err)
	return hostState{sysctls: s, route: unreachableRoute(t)}
}

func unreachableRoute(t *testing.T) string {
	t.Helper()
	addr, _, _ := strings.Cut(product.UnreachablePortal, ":")
	out, err := exec.Command("ip", "route", "show", addr+"/32").CombinedOutput()
	require.NoError(t, err, "%s", out)
	return strings.TrimSpace(string(out))
}

func TestWalkthrough(t *testing.T) {
	requireHost(t)
	before := readHost(t)
	// Generous: the start waits for the host-wide kubelet lock while another package's
	// kubelets run, and a loaded machine slows every step; the walkthrough itself takes ~1 min.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	began := time.Now()
	env, err := product.Start(ctx, product.Options{BinDir: binDir(t), KeepDir: true, Logf: t.Logf})
	require.NoError(t, err, "start the product")
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = env.Close()
		}
		if !t.Failed() {
			_ = os.RemoveAll(env.Dir)
		} else {
			t.Logf("kept %s for inspection", env.Dir)
		}
	})
	t.Logf("product ready in %s", time.Since(began).Round(100*time.Millisecond))
	// What the running product holds before the walkthrough: its processes, kubelet's own
	// mounts, tgtd's placeholder target; the walkthrough must leave nothing beyond it.
	base, err := product.TakeSnapshot(ctx, env.LeakProbes())
	require.NoError(t, err)
	require.Equal(t, []string{product.PortalTarget}, base.TgtTargets)
	require.Empty(t, base.PVs)
	require.Empty(t, base.DateraVolumes)

	ini := map[string]string{}
	reachable := map[string]bool{}
	for _, n := range env.Nodes {
		ini[n.Name], reachable[n.Name] = n.Initiator, n.Reachable
	}
	require.Equal(t, map[string]bool{"node-0": true, "node-1": true, "node-2": false}, reachable)

	w := product.NewWalk(env)
	for _, step := range product.Steps() {
		o, err := step.Run(ctx, w)
		if err != nil && o != nil {
			for _, sh := range o.Shown {
				t.Logf("$ %s\n%s", sh.Command, sh.Output)
			}
		}
		require.NoError(t, err, "step %s", step.Name)
		t.Run(step.Name, func(t *testing.T) { checkStep(t, env, w, step.Name, o, ini, reachable) })
		if t.Failed() {
			for _, sh := range o.Shown {
				t.Logf("$ %s\n%s", sh.Command, sh.Output)
			}
			t.FailNow()
		}
	}
	t.Logf("first `kubectl get pv` %s after the start", w.FirstPV.Sub(began).Round(100*time.Millisecond))

	// Nothing left in the cluster, on Datera (volumes, ACL entries), in tgtd, mounted, attached
	// or running beyond what the product itself holds.
	// kubelet tears a deleted pod's volumes down asynchronously: give it a few seconds.
	var leaked []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		now, err := product.TakeSnapshot(ctx, env.LeakProbes())
		require.NoError(t, err)
		if leaked = base.Leaked(now); len(leaked) == 0 || time.Now().After(deadline) {
			break
		}
	}
	assert.Empty(t, leaked, "left by the walkthrough")

	pids := env.PIDs()
	require.NotEmpty(t, pids)
	port := env.TgtControlPort
	require.NoError(t, env.Close())
	closed = true
	checkNothingLeft(t, env.Dir, pids, port, before)
}

// checkNothingLeft asserts that the environment under dir left no process (of pids or any
// whose command line names dir), tgtd (process or control socket), mount, loop device, route or
// sysctl change behind.
func checkNothingLeft(t *testing.T, dir string, pids []int, tgtPort int, before hostState) {
	t.Helper()
	after, err := product.TakeSnapshot(context.Background(), product.LeakProbes{
		MountRoots: []string{dir}, LoopRoots: []string{dir}, PIDs: pids,
		CmdlineMarkers: []string{dir, "-C " + strconv.Itoa(tgtPort) + " "},
	})
	require.NoError(t, err)
	assert.Empty(t, product.Snapshot{}.Leaked(after), "left on the host")
	assert.NoFileExists(t, "/var/run/tgtd/socket."+strconv.Itoa(tgtPort), "tgtd's control socket")
	host := readHost(t)
	assert.Equal(t, before.sysctls, host.sysctls, "sysctls kubelet touched")
	assert.Equal(t, before.route, host.route, "the unreachable route")
}

func checkStep(t *testing.T, env *product.Env, w *product.Walk, name string, o *product.Observed, ini map[string]string, reachable map[string]bool) {
	ctx := context.Background()
	// checkPets: n pets Running on reachable nodes, each with its webhook-made PV, a mount by
	// kubelet through the driver, and a Datera volume online whose ACL is exactly its node.
	checkPets := func(n int) {
		require.Len(t, o.Pets, n)
		require.Len(t, o.AppInstances, n)
		for _, p := range o.Pets {
			assert.Equal(t, string(corev1.PodRunning), p.Phase, p.Name)
			assert.True(t, reachable[p.Node], "%s placed on %s, which cannot reach the portal", p.Name, p.Node)
			assert.Equal(t, "datera-blog.data-"+p.Name, p.PV, "%s's claim is bound to the PV the webhook made", p.Name)
			assert.NotEmpty(t, p.VolumeID, p.Name)
			assert.Contains(t, p.MountLine, " - xfs /dev/loop", "%s: kubelet's mount of the volume (xfs on the attached device)", p.Name)
			assert.Contains(t, p.DriverLine, `"status":"Success"`, "%s: the driver's reply to kubelet's mount", p.Name)
			var ai *product.AppInstance
			for i := range o.AppInstances {
				if o.AppInstances[i].Name == p.VolumeID {
					ai = &o.AppInstances[i]
				}
			}
			if assert.NotNil(t, ai, "%s: Datera volume %s", p.Name, p.VolumeID) {
				assert.Equal(t, "online", ai.AdminState)
				assert.Equal(t, "available", ai.OpState)
				assert.Equal(t, []string{ini[p.Node]}, ai.ACL, "%s: the ACL is exactly its node's initiator", p.Name)
				assert.Contains(t, o.Targets, ai.IQN, "%s: tgtd exports the volume's target", p.Name)
			}
		}
	}
	switch name {
	case "storageclass":
		sc, err := env.Client.StorageV1().StorageClasses().Get(ctx, product.WalkClass, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "petfabric.io/datera", sc.Provisioner)
		assert.Equal(t, corev1.PersistentVolumeReclaimDelete, *sc.ReclaimPolicy)
		assert.Equal(t, env.Backstore, sc.Parameters["backstoreServer"])
	case "service":
		svc, err := env.Client.CoreV1().Services(product.WalkNamespace).Get(ctx, product.WalkSet, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP)
	case "statefulset":
		checkPets(2)
		assert.False(t, w.FirstPV.IsZero())
		assert.Contains(t, o.Shown[1].Output, "datera-blog.data-db-0", "kubectl get pv shows the pets' volumes")
	case "scale":
		checkPets(3)
	case "unreachable":
		require.Len(t, o.Reports["node-2"], 1)
		assert.Contains(t, o.Reports["node-2"][0], product.UnreachablePortal+" UNREACHABLE")
		assert.Contains(t, o.Reports["node-2"][0], "no route to host")
		for _, n := range []string{"node-0", "node-1"} {
			assert.Equal(t, []string{env.Portal + " reachable"}, o.Reports[n])
		}
		assert.Contains(t, o.SchedulerEvent, "0/3 nodes are available")
		assert.Regexp(t, regexp.MustCompile(`1 cannot reach portal `+regexp.QuoteMeta(product.UnreachablePortal)), o.SchedulerEvent)
		assert.Contains(t, o.SchedulerEvent, "2 node(s) were unschedulable")
		require.Len(t, o.Pets, 3)
		for _, p := range o.Pets {
			assert.True(t, reachable[p.Node], "%s on %s", p.Name, p.Node)
		}
	case "mounts":
		checkPets(3)
		for _, p := range o.Pets {
			assert.Contains(t, p.MountLine, env.Node(p.Node).Kubelet.RootDir, "%s is mounted under its own node's kubelet", p.Name)
		}
	case "move":
		m := o.Move
		require.NotNil(t, m)
		assert.NotEqual(t, m.From, m.To)
		assert.True(t, reachable[m.From] && reachable[m.To])
		assert.False(t, m.OldStillMounted, "the old node unmounted %s", m.OldMountDir)
		assert.Contains(t, m.NewMountLine, env.Node(m.To).Kubelet.RootDir, "the new node mounted the volume")
		assert.Equal(t, m.Marker, m.ReadBack, "the data written on the old node is there on the new one")
		assert.Equal(t, []string{ini[m.From]}, m.ACLBefore)
		assert.Equal(t, []string{ini[m.To]}, m.ACLAfter, "the old node left the ACL, the new one joined")
		// The old node leaves the ACL before the new one is granted.
		left, joined := -1, -1
		for i, c := range m.History {
			if left < 0 && !slices.Contains(c.Initiators, ini[m.From]) {
				left = i
			}
			if joined < 0 && slices.Contains(c.Initiators, ini[m.To]) {
				joined = i
			}
		}
		assert.True(t, left >= 0 && joined > left, "ACL history %+v: old node removed before the new one is added", m.History)
	case "recreate":
		require.Len(t, o.Pets, 3)
		for _, p := range o.Pets {
			assert.Equal(t, o.PVsBefore[p.Claim], p.PV, "%s got its volume back", p.Name)
			assert.Equal(t, w.Marker(p.Name), o.DataBack[p.Name], "%s got its data back", p.Name)
		}
		checkPets(3)
	case "cleanup":
		assert.Empty(t, o.PVs, "reclaim Delete removed the PersistentVolumes")
		assert.Empty(t, o.AppInstances, "reclaim Delete removed the Datera volumes")
		assert.Equal(t, []string{product.PortalTarget}, o.Targets, "the volumes' tgtd targets are gone")
	default:
		t.Fatalf("no assertions for step %s", name)
	}
}

// TestDemoInterrupted runs the demo program, interrupts it (SIGINT to its process group, as
// Ctrl-C) once the pets run, and checks that it left nothing running, mounted or changed.
func TestDemoInterrupted(t *testing.T) {
	requireHost(t)
	before := readHost(t)
	bin := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", bin, "github.com/petfabric/petfabric/test/product/cmd/demo")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	cmd := exec.Command(bin, "--bin-dir", binDir(t))
	// Its own process group, signalled as a whole below: a terminal's Ctrl-C reaches every
	// process of the foreground group, the control plane's too, not just the demo.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	var dir string
	var port int
	reDir := regexp.MustCompile(`state, logs and kubeconfig under (\S+)`)
	rePort := regexp.MustCompile(`control port (\d+)\)`)
	var transcript strings.Builder
	sc := bufio.NewScanner(stdout)
	interrupted := false
	for sc.Scan() {
		line := sc.Text()
		transcript.WriteString(line + "\n")
		if m := reDir.FindStringSubmatch(line); m != nil {
			dir = m[1]
		}
		if m := rePort.FindStringSubmatch(line); m != nil {
			port, _ = strconv.Atoi(m[1])
		}
		// Mid-way: the pets of the first StatefulSet run and their volumes are mounted.
		if !interrupted && strings.Contains(line, "── 4.") {
			require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGINT))
			interrupted = true
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	require.True(t, interrupted, "the demo never reached step 4:\n%s", transcript.String())
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the interrupted demo exits non-zero:\n%s", transcript.String())
	assert.Equal(t, 130, exit.ExitCode(), transcript.String())
	assert.Contains(t, transcript.String(), "interrupted: cleaning up")
	assert.Contains(t, transcript.String(), "cleaned up in")
	assert.NotContains(t, transcript.String(), "\x1b[", "no colour when stdout is not a terminal")
	require.NotEmpty(t, dir, "the demo names its directory")
	require.NotZero(t, port, "the demo names tgtd's control port")
	assert.NoDirExists(t, dir, "the demo removes its directory")
	checkNothingLeft(t, dir, nil, port, before)
	if t.Failed() {
		t.Logf("demo transcript:\n%s", transcript.String())
	}
}
