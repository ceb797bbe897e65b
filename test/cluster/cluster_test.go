package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/test/cluster"
)

func kwokNodes(names ...string) []cluster.NodeSpec {
	var nodes []cluster.NodeSpec
	for _, n := range names {
		nodes = append(nodes, cluster.NodeSpec{Name: n})
	}
	return nodes
}

// Test 1: pre-bound PVs bind to the claims the StatefulSet controller creates, and the pods
// are scheduled onto kwok nodes and report Running.
func TestStatefulSetWithPreBoundPVsRuns(t *testing.T) {
	cluster.RequireBinaries(t)
	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes("node-a", "node-b")})
	t.Logf("control plane ready in %s", c.StartupTime)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cs := c.Client

	_, err := cs.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: "datera"},
		Provisioner:       "petfabric.io/datera",
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimRetain),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	const replicas = 3
	for i := range replicas {
		claim := fmt.Sprintf("data-web-%d", i)
		_, err := cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv-" + claim},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              "datera",
				ClaimRef:                      &corev1.ObjectReference{Namespace: "default", Name: claim},
				PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
					Driver: "datera/iscsi", FSType: "xfs", Options: map[string]string{"volumeID": "test-" + claim},
				}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	_, err = cs.AppsV1().StatefulSets("default").Create(ctx, statefulSet("web", replicas, "datera"), metav1.CreateOptions{})
	require.NoError(t, err)

	waitPodsRunning(ctx, t, cs, "default", "app=web", replicas)
	for i := range replicas {
		claim := fmt.Sprintf("data-web-%d", i)
		pvc, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, claim, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, corev1.ClaimBound, pvc.Status.Phase, claim)
		assert.Equal(t, "pv-"+claim, pvc.Spec.VolumeName, claim)
	}
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	for _, p := range pods.Items {
		assert.Contains(t, []string{"node-a", "node-b"}, p.Spec.NodeName, p.Name)
	}
	var total int64
	for name, rss := range c.PeakMemory() {
		t.Logf("peak RSS %-24s %6.1f MiB", name, float64(rss)/(1<<20))
		total += rss
	}
	t.Logf("peak RSS control plane total %.1f MiB", float64(total)/(1<<20))
}

// Test 2: a scheduler extender served by the test over TLS rejects one node; no pod lands there.
func TestSchedulerExtenderRejectsNode(t *testing.T) {
	cluster.RequireBinaries(t)
	const rejected = "node-b"
	var filterCalls atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/filter", func(w http.ResponseWriter, r *http.Request) {
		filterCalls.Add(1)
		var args extenderv1.ExtenderArgs
		if err := json.NewDecoder(r.Body).Decode(&args); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		res := extenderv1.ExtenderFilterResult{FailedNodes: extenderv1.FailedNodesMap{}}
		passing := []string{}
		for _, n := range *args.NodeNames {
			if n == rejected {
				res.FailedNodes[n] = "rejected by the test extender"
				continue
			}
			passing = append(passing, n)
		}
		res.NodeNames = &passing
		_ = json.NewEncoder(w).Encode(&res)
	})
	srv, caPEM := serveTLS(t, mux)

	c := cluster.Start(t, cluster.Options{
		Nodes: kwokNodes("node-a", "node-b", "node-c"),
		Scheduler: &schedconfigv1.KubeSchedulerConfiguration{Extenders: []schedconfigv1.Extender{{
			URLPrefix:        srv,
			FilterVerb:       "filter",
			NodeCacheCapable: true,
			HTTPTimeout:      metav1.Duration{Duration: 5 * time.Second},
			TLSConfig:        &schedconfigv1.ExtenderTLSConfig{CAData: caPEM},
		}}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 9
	for i := range n {
		_, err := c.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": "spread"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pods := waitPodsRunning(ctx, t, c.Client, "default", "app=spread", n)
	used := map[string]int{}
	for _, p := range pods {
		used[p.Spec.NodeName]++
	}
	t.Logf("placement: %v; extender filter calls: %d", used, filterCalls.Load())
	assert.Zero(t, used[rejected], "no pod may land on the node the extender rejects")
	assert.GreaterOrEqual(t, int(filterCalls.Load()), n, "the scheduler must call the extender for every pod")
}

// Test 3: a mutating webhook served by the test over TLS (clientConfig.url, test CA) is called
// by the apiserver and its JSONPatch is applied.
func TestMutatingWebhookPatchApplied(t *testing.T) {
	cluster.RequireBinaries(t)
	var calls atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("/mutate", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
			return
		}
		// The object has no labels yet, so add the whole map (a key path would need ~1 escaping).
		patch := `[{"op":"add","path":"/metadata/labels","value":{"petfabric.io/mutated":"true"}}]`
		pt := admissionv1.PatchTypeJSONPatch
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: []byte(patch), PatchType: &pt}
		review.Request = nil
		_ = json.NewEncoder(w).Encode(&review)
	})
	srv, caPEM := serveTLS(t, mux)
	c := cluster.Start(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := c.Client

	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hooked"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "test-mutator"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "mutate.petfabric.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(srv + "/mutate"), CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "hooked"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](5),
		}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// The apiserver picks up a new webhook configuration asynchronously: retry until mutated.
	var got *corev1.ConfigMap
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		name := fmt.Sprintf("cm-%d", time.Now().UnixNano())
		cm, err := cs.CoreV1().ConfigMaps("hooked").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		got = cm
		return cm.Labels["petfabric.io/mutated"] == "true", nil
	})
	require.NoError(t, err, "the webhook's patch was never applied")
	assert.Equal(t, "true", got.Labels["petfabric.io/mutated"])
	assert.Positive(t, calls.Load())

	// Outside the selected namespace the webhook is not called and nothing is patched.
	before := calls.Load()
	cm, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Empty(t, cm.Labels)
	assert.Equal(t, before, calls.Load())
}

// Test 4: bad setup names what failed and where.
func TestBadSetupIsReportedClearly(t *testing.T) {
	cluster.RequireBinaries(t)
	good, err := cluster.DefaultBinaries()
	require.NoError(t, err)

	t.Run("missing binary", func(t *testing.T) {
		b := good
		b.KubeScheduler = filepath.Join(t.TempDir(), "no-such-kube-scheduler")
		_, err := cluster.New(context.Background(), cluster.Options{Binaries: &b, Dir: t.TempDir()})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "kube-scheduler")
		assert.Contains(t, err.Error(), b.KubeScheduler)
		assert.Contains(t, err.Error(), "make tools")
	})
	t.Run("port clash", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		_, err = cluster.New(context.Background(), cluster.Options{APIServerPort: port, Dir: t.TempDir()})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "kube-apiserver")
		assert.Contains(t, err.Error(), fmt.Sprintf("127.0.0.1:%d", port))
		assert.Contains(t, err.Error(), "address already in use")
	})
	t.Run("component fails at start-up", func(t *testing.T) {
		dir := t.TempDir()
		_, err := cluster.New(context.Background(), cluster.Options{Dir: dir, ExtraAPIServerFlags: []string{"--no-such-flag"}})
		require.Error(t, err)
		msg := err.Error()
		assert.Contains(t, msg, "kube-apiserver exited during start-up")
		assert.Contains(t, msg, "unknown flag: --no-such-flag", "the error carries the tail of the component's log")
		assert.Contains(t, msg, filepath.Join(dir, "kube-apiserver.log"))
		assertNoProcessMentions(t, dir)
	})
}

// A test that panics, fails or times out with a cluster running leaves no process behind.
// The scenario runs in a child `go test` process (this binary, re-executed).
func TestNoProcessLeftBehind(t *testing.T) {
	if mode := os.Getenv("PETFABRIC_CLUSTER_CHILD"); mode != "" {
		c := cluster.Start(t, cluster.Options{Dir: os.Getenv("PETFABRIC_CLUSTER_DIR"), Nodes: kwokNodes("n1")})
		fmt.Printf("cluster up in %s\n", c.StartupTime)
		switch mode {
		case "panic":
			panic("deliberate panic with a cluster running")
		case "fatal":
			t.Fatal("deliberate failure with a cluster running")
		case "timeout":
			time.Sleep(time.Hour) // -test.timeout ends the process
		}
		return
	}
	cluster.RequireBinaries(t)
	for _, mode := range []string{"panic", "fatal", "timeout"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^TestNoProcessLeftBehind$", "-test.timeout=60s", "-test.v")
			cmd.Env = append(os.Environ(), "PETFABRIC_CLUSTER_CHILD="+mode, "PETFABRIC_CLUSTER_DIR="+dir)
			if mode == "timeout" {
				cmd.Args[2] = "-test.timeout=25s"
			}
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "the child must fail: %s", out)
			require.Contains(t, string(out), "cluster up in", "the child must have started a cluster: %s", out)
			assertNoProcessMentions(t, dir)
		})
	}
}

// assertNoProcessMentions waits briefly for processes whose command line mentions dir (every
// component's flags do) to disappear, and fails naming any that remain.
func assertNoProcessMentions(t *testing.T, dir string) {
	t.Helper()
	var left []string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		left = processesMentioning(dir)
		return len(left) == 0, nil
	})
	assert.NoError(t, err, "processes left behind: %v", left)
}

func processesMentioning(s string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(data), s) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(stat), ") Z ") {
			continue // a zombie is already dead; its parent just has not reaped it
		}
		found = append(found, e.Name()+": "+strings.ReplaceAll(string(data), "\x00", " ")[:min(120, len(data))])
	}
	return found
}

func statefulSet(name string, replicas int32, class string) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "nginx",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
				}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					StorageClassName: &class,
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}

// waitPodsRunning waits until n pods match the selector, all Running on a node.
func waitPodsRunning(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		running := 0
		for _, p := range pods {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName != "" {
				running++
			}
		}
		return running == n && len(pods) == n, nil
	})
	if err != nil {
		var states []string
		for _, p := range pods {
			states = append(states, fmt.Sprintf("%s=%s@%s", p.Name, p.Status.Phase, p.Spec.NodeName))
		}
		t.Fatalf("waiting for %d Running pods (%s): %v; pods: %v", n, selector, err, states)
	}
	return pods
}

// serveTLS serves h over HTTPS on 127.0.0.1 with a fresh test CA; returns the URL and CA PEM.
func serveTLS(t *testing.T, h http.Handler) (string, []byte) {
	t.Helper()
	ca, err := testpki.NewCA("petfabric-test-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")}, "localhost")
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(h)
	cert, err := tlsCert(pair)
	require.NoError(t, err)
	srv.TLS = cert
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, ca.CertPEM
}
