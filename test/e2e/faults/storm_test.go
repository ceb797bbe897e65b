package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/test/cluster"
)

// stormFor is how long every Datera route answers 503 once the first mount has failed.
const stormFor = 5 * time.Second

// TestDateraStormDuringMounts: real kubelet nodes (test/cluster, fake CRI) run the built
// driver (loop-device stand-in initiator) against the Datera simulator, the built webhook
// makes the PVs. While the pets' volumes are being mounted every Datera route answers 503;
// the driver's own retries give up, kubelet fails the mount and retries with its backoff.
// Once the storm ends the mounts converge: every pet Running with its volume mounted, one
// Datera volume per claim, each volume's ACL exactly its pet's node (no duplicate entry).
func TestDateraStormDuringMounts(t *testing.T) {
	cluster.RequireKubelet(t)
	began := time.Now()
	dir := t.TempDir()
	flexBin, webhookBin := filepath.Join(dir, "flex"), filepath.Join(dir, "webhook")
	for _, args := range [][]string{
		{"build", "-tags", "petfabric_standin", "-o", flexBin, "github.com/petfabric/petfabric/cmd/flex"},
		{"build", "-o", webhookBin, "github.com/petfabric/petfabric/cmd/webhook"},
	} {
		out, err := exec.Command("go", args...).CombinedOutput()
		require.NoError(t, err, "go %s: %s", strings.Join(args, " "), out)
	}

	// A StorageClass's backstoreServer names Datera's management port; a proxy on a loopback
	// address's port 7717 fronts the simulator.
	proxy := listenBackstore(t)
	nodeEnvs := map[string]*flextest.Env{}
	var specs []cluster.KubeletSpec
	for i, name := range []string{"node-0", "node-1"} {
		opts := flextest.EnvOptions{NodeName: name, InitiatorName: "iqn.1993-08.org.debian:01:storm-" + name,
			Config: map[string]any{"allowedBackstores": []string{proxy.Addr().String()}}}
		if i > 0 {
			opts.Share = nodeEnvs["node-0"]
		}
		nodeEnvs[name] = flextest.NewEnv(t, opts)
		specs = append(specs, cluster.KubeletSpec{Name: name, FlexDriver: flexBin,
			Env: []string{flex.EnvConfig + "=" + nodeEnvs[name].ConfigFile, flex.EnvStateDir + "=" + nodeEnvs[name].StateDir}})
	}
	owner := nodeEnvs["node-0"]
	serveBackstore(t, proxy, owner.SimURL)
	c := cluster.Start(t, cluster.Options{Kubelets: specs})
	e := &env{c: c, cs: c.Client, ctx: context.Background(), webhooks: map[string]*proc{}}
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Minute)
	defer cancel()

	for _, ns := range []string{releaseNS, appNS} {
		_, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	// kubelet hands a FlexVolume driver only secrets of the driver's own type.
	_, err := e.cs.CoreV1().Secrets(releaseNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: credsSecret}, Type: corev1.SecretType(mutate.Driver),
		StringData: map[string]string{"username": flextest.User, "password": flextest.Password},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = e.cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: class}, Provisioner: mutate.Provisioner,
		Parameters:    map[string]string{"replica": "1", "backstoreServer": proxy.Addr().String(), "secretName": credsSecret, "secretNamespace": releaseNS},
		ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimRetain), VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	ca, err := testpki.NewCA("petfabric-storm-ca")
	require.NoError(t, err)
	serving, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := serving.WriteFiles(t.TempDir(), "serving")
	require.NoError(t, err)
	port, health := fixtures.FreePort(t), fixtures.FreePort(t)
	w := newProc(t, c.Dir, "webhook", webhookBin, "--kubeconfig="+c.Kubeconfig,
		fmt.Sprintf("--listen=127.0.0.1:%d", port), fmt.Sprintf("--health-listen=127.0.0.1:%d", health),
		"--tls-cert-file="+certFile, "--tls-key-file="+keyFile, "--cluster-id="+clusterID,
		"--lease-namespace="+releaseNS, "--identity=webhook-0", "--resync=10s")
	w.readyURL = fmt.Sprintf("http://127.0.0.1:%d/readyz", health)
	w.start(t)
	e.webhooks["webhook-0"] = w
	e.register(t, fmt.Sprintf("https://127.0.0.1:%d", port), ca.CertPEM)
	t.Logf("environment with %d kubelet nodes ready in %s", len(specs), time.Since(began).Round(time.Millisecond))

	// The storm: every route answers 503 from before the pets exist.
	routes := owner.Sim.Routes()
	for _, r := range routes {
		owner.Sim.SetFault(r, fake.Fault{ErrorRate: 1, Status: http.StatusServiceUnavailable})
	}
	owner.Sim.ResetRequests()
	stormBegan := time.Now()
	_, err = e.cs.AppsV1().StatefulSets(appNS).Create(ctx, fixtures.PetSet(appNS, "db", 2, class), metav1.CreateOptions{})
	require.NoError(t, err)
	// Wait until kubelet has had a mount fail on a node, then keep the storm going.
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return failedMounts(t, nodeEnvs["node-0"])+failedMounts(t, nodeEnvs["node-1"]) > 0, nil
	}), "no mount failed during the storm")
	firstFailure := time.Now()
	time.Sleep(stormFor)
	requests := 0
	for _, r := range routes {
		requests += owner.Sim.Requests(r)
	}
	owner.Sim.ClearFaults()
	stormEnded := time.Now()
	failedDuring := map[string]int{}
	for name, ne := range nodeEnvs {
		failedDuring[name] = failedMounts(t, ne)
	}
	t.Logf("storm: %s long (first failed mount %s after it began); %d Datera requests answered 503; failed mounts per node %v",
		stormEnded.Sub(stormBegan).Round(time.Millisecond), firstFailure.Sub(stormBegan).Round(time.Millisecond), requests, failedDuring)
	assert.Positive(t, requests, "the driver reached Datera during the storm")

	pods := e.steady(t, "db", 2, 3*time.Minute)
	t.Logf("mounts converged %s after the storm ended", time.Since(stormEnded).Round(time.Millisecond))
	volumes := map[string]bool{}
	for name, p := range pods {
		claim := "data-" + name
		pv, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, mutate.PVName(appNS, claim), metav1.GetOptions{})
		require.NoError(t, err)
		id := pv.Spec.FlexVolume.Options["volumeID"]
		volumes[id] = true
		k := kubeletOf(c, p.Spec.NodeName)
		require.NotNil(t, k, "pet %s on a kubelet node", name)
		volDir := k.PodVolumeDir(string(p.UID), "datera~iscsi", pv.Name)
		mounts, err := k.Mounts()
		require.NoError(t, err)
		assert.Contains(t, mounts, volDir, "kubelet mounted %s's volume", name)
		// The ACL is exactly the pet's node: the retried mounts added no duplicate entry.
		assert.Equal(t, []string{nodeEnvs[p.Spec.NodeName].InitiatorName}, owner.ACL(id), "ACL of %s", id)
		t.Logf("%s on %s: %s mounted at %s; failed mount replies on the node: %d", name, p.Spec.NodeName, id, volDir, failedMounts(t, nodeEnvs[p.Spec.NodeName]))
	}
	exported := exportedTargets(t, owner.TargetsDir)
	assert.Len(t, exported, len(volumes), "one exported Datera volume per claim, no more: %v", exported)
	for id := range volumes {
		_, err := owner.Client.GetAppInstance(ctx, id)
		require.NoError(t, err, "Datera volume %s", id)
	}

	// Leave the nodes as found: kubelet unmounts the pets' volumes.
	e.scale(t, "db", 0)
	var last string
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pl, err := e.cs.CoreV1().Pods(appNS).List(ctx, metav1.ListOptions{LabelSelector: "app=db"})
		if err != nil || len(pl.Items) > 0 {
			last = fmt.Sprintf("pods left: %d (%v)", len(pl.Items), err)
			if err == nil {
				last = fmt.Sprintf("pods left: %s %s", pl.Items[0].Name, pl.Items[0].Status.Phase)
			}
			return false, nil
		}
		for _, k := range c.Kubelets {
			// kubelet keeps its root directory itself mounted (a shared bind mount); what a
			// pod leaves is under pods/.
			m, err := k.Mounts()
			m = slices.DeleteFunc(m, func(p string) bool { return !strings.HasPrefix(p, filepath.Join(k.RootDir, "pods")+"/") })
			if err != nil || len(m) > 0 {
				last = fmt.Sprintf("mounts left on %s: %v (%v)", k.Name, m, err)
				return false, nil
			}
		}
		return true, nil
	}), "pets not gone and unmounted: %s", last)
}

// failedMounts counts the driver's failure replies on a node (each one a call kubelet will
// retry).
func failedMounts(t *testing.T, ne *flextest.Env) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(ne.LogText(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var le struct{ Msg, Status string }
		if json.Unmarshal([]byte(line), &le) == nil && le.Msg == "reply" && le.Status == "Failure" {
			n++
		}
	}
	return n
}

// exportedTargets lists the targets the simulator exports (the loop targets' records).
func exportedTargets(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "targets", "*.json"))
	require.NoError(t, err)
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var tg struct {
			IQN      string
			Exported bool
		}
		require.NoError(t, json.Unmarshal(b, &tg))
		if tg.Exported {
			out = append(out, tg.IQN)
		}
	}
	slices.Sort(out)
	return out
}

func kubeletOf(c *cluster.Cluster, node string) *cluster.Kubelet {
	for _, k := range c.Kubelets {
		if k.Name == node {
			return k
		}
	}
	return nil
}

// listenBackstore listens on port 7717 of a loopback address of its own (127.78.x.y).
func listenBackstore(t *testing.T) net.Listener {
	t.Helper()
	var err error
	for range 20 {
		var l net.Listener
		if l, err = net.Listen("tcp", fmt.Sprintf("127.78.%d.%d:7717", rand.IntN(250)+1, rand.IntN(250)+1)); err == nil {
			return l
		}
	}
	t.Fatalf("no free loopback address for the backstore proxy: %v", err)
	return nil
}

// serveBackstore proxies l to the simulator at simURL until the test ends.
func serveBackstore(t *testing.T, l net.Listener, simURL string) {
	t.Helper()
	target, err := url.Parse(simURL)
	require.NoError(t, err)
	srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(target), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}
