package chart

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"github.com/petfabric/petfabric/test/product"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/pkg/iscsi/probetest"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/test/certmanager"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// TestChartRBAC runs each program the chart deploys — the built webhook, extender and node
// agent, and the pinned kube-scheduler as the secondary scheduler — as a host process under a
// token of the ServiceAccount the chart renders for it (TokenRequest; the agent's bound to a
// pod on its node, so it carries the node name), with the rendered flags, through its main
// path: the webhook admits a StatefulSet and creates its PVs, runs its reconcile loop and
// holds its leader Lease; the agent probes a real iSCSI target (tgtd) and writes its node's
// report; the extender passes the node for the StatefulSet's pod, reading its claim, PV and the
// node's report, and writes its requeue trigger on that report's recovery; the secondary
// scheduler schedules a pod that names it. No program's log shows a refused call. Then each
// token is refused (403) a call outside its role: the chart's RBAC is sufficient and minimal.
func TestChartRBAC(t *testing.T) {
	cluster.RequireBinaries(t)
	webhookBin := buildBinary(t, "./cmd/webhook")
	extenderBin := buildBinary(t, "./cmd/extender")
	flexBin := buildBinary(t, "./cmd/flex")
	schedulerBin, err := cluster.DefaultBinaries()
	require.NoError(t, err)

	webhookPort, webhookHealth, extenderPort, extenderHealth, agentMetrics, schedPort := fixtures.FreePort(t), fixtures.FreePort(t), fixtures.FreePort(t), fixtures.FreePort(t), fixtures.FreePort(t), fixtures.FreePort(t)
	webhookAddr := fmt.Sprintf("127.0.0.1:%d", webhookPort)
	secondary := ciValuesFile("secondary-scheduler")
	// The node's one backstore portal is a real iSCSI target (tgtd on loopback) that admits
	// the node's initiator: the agent's probe logs in to it.
	const initiator = "iqn.2026-11.io.petfabric.chart:node-0"
	tgt := probetest.Start(t)
	tgt.AddTarget(probetest.TargetOptions{IQN: "iqn.2026-11.io.petfabric.chart:vol", Initiators: []string{initiator}})
	values := storageClassValues + `node:
  config:
    allowedBackstores: ["datera.example.com:7718"]
  backstores:
    "datera.example.com:7718":
      portals: ["` + tgt.Portal + `"]
`
	urlValues := fmt.Sprintf("webhook:\n  url: https://%s\n%s", webhookAddr, values)
	urlObjs := helmchart.Objects(t, helmchart.Render(t, urlValues, "--values", ciValuesFile("default"), "--values", secondary))
	objs := helmchart.Objects(t, helmchart.Render(t, values, "--values", ciValuesFile("default"), "--values", secondary))

	c := cluster.Start(t, cluster.Options{Nodes: []cluster.NodeSpec{{Name: "node-0"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	certmanager.Start(t, c)
	createReleaseNamespace(ctx, t, c)
	out, err := helm(t, c, urlValues, "install", helmchart.Release, helmchart.ChartDir(), "--namespace", helmchart.Namespace,
		"--values", ciValuesFile("default"), "--values", secondary)
	require.NoError(t, err, "helm install:\n%s", out)
	for _, crt := range helmchart.OfKind(urlObjs, "Certificate") {
		_, err := c.Kubectl("wait", "--for=condition=Ready", "--timeout=60s", "certificate/"+crt.GetName(), "--namespace", helmchart.Namespace)
		require.NoError(t, err, "Certificate %s never Ready", crt.GetName())
	}
	mwc := helmchart.OfKind(urlObjs, "MutatingWebhookConfiguration")[0].GetName()
	waitCABundle(ctx, t, c, mwc, nil)
	env := map[string]string{"POD_NAMESPACE": helmchart.Namespace, "POD_NAME": "webhook-0", "NODE_NAME": "node-0"}

	// The webhook, serving its cert-manager Secret as kubelet projects it.
	webhookDeploy := helmchart.Find(objs, "Deployment", helmchart.Release+"-webhook")
	wctr, wvols := container(t, webhookDeploy, "webhook", false)
	webhookID := serviceAccountIdentity(ctx, t, c, helmchart.Namespace, ctrServiceAccount(t, webhookDeploy), nil)
	wSecret := secretOfMount(t, wctr, wvols)
	wDir := projectForTest(ctx, t, c, wSecret)
	webhook := startProgram(t, c.Dir, "webhook", webhookBin, product.HostArgs(wctr, env,
		map[string]string{mountPath(t, wctr, secretVolume(t, wvols, wSecret)): wDir},
		map[string]string{"--listen": webhookAddr, "--health-listen": fmt.Sprintf("127.0.0.1:%d", webhookHealth), "--kubeconfig": webhookID.kubeconfig}), nil)
	waitHTTP200(t, webhook, fmt.Sprintf("http://127.0.0.1:%d/readyz", webhookHealth), 30*time.Second)

	// The extender, serving its cert-manager Secret.
	extDeploy := helmchart.Find(objs, "Deployment", helmchart.Release+"-extender")
	ectr, evols := container(t, extDeploy, "extender", false)
	extID := serviceAccountIdentity(ctx, t, c, helmchart.Namespace, ctrServiceAccount(t, extDeploy), nil)
	eSecret := secretOfMount(t, ectr, evols)
	eDir := projectForTest(ctx, t, c, eSecret)
	extAddr := fmt.Sprintf("127.0.0.1:%d", extenderPort)
	extender := startProgram(t, c.Dir, "extender", extenderBin, product.HostArgs(ectr, env,
		map[string]string{mountPath(t, ectr, secretVolume(t, evols, eSecret)): eDir},
		map[string]string{"--listen": extAddr, "--health-listen": fmt.Sprintf("127.0.0.1:%d", extenderHealth), "--kubeconfig": extID.kubeconfig}), nil)
	waitHTTP200(t, extender, fmt.Sprintf("http://127.0.0.1:%d/readyz", extenderHealth), 30*time.Second)

	// The agent, started after the extender so that its first report is a recovery the
	// extender sees (a node with no report turning reachable), under a token bound to a pod
	// on node-0 (the node-reports policy reads the node name from it).
	ds := helmchart.Find(objs, "DaemonSet", helmchart.Release+"-node")
	actr, avols := container(t, ds, "agent", false)
	agentSA := ctrServiceAccount(t, ds)
	agentPod, err := c.Client.CoreV1().Pods(helmchart.Namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-node-0"},
		Spec: corev1.PodSpec{NodeName: "node-0", ServiceAccountName: agentSA,
			Containers: []corev1.Container{{Name: "agent", Image: "petfabric"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	agentID := serviceAccountIdentity(ctx, t, c, helmchart.Namespace, agentSA,
		&authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: agentPod.Name, UID: agentPod.UID})
	agentMounts := configMapMounts(t, actr, avols, objs)
	initiatorDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(initiatorDir, "initiatorname.iscsi"), []byte("InitiatorName="+initiator+"\n"), 0o600))
	agentMounts[mountPath(t, actr, "iscsi")] = initiatorDir
	agentMounts[mountPath(t, actr, "state")] = t.TempDir()
	agent := startProgram(t, c.Dir, "agent", flexBin, append([]string{"agent"}, product.HostArgs(actr, env, agentMounts,
		map[string]string{"--kubeconfig": agentID.kubeconfig, "--metrics-listen": fmt.Sprintf("127.0.0.1:%d", agentMetrics),
			"--interval": "1s", "--probe-timeout": "300ms"})...), nil)

	// Webhook main path: a StatefulSet admitted, its PV created, the loop leading.
	_, err = c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	waitMutating(ctx, t, c)
	sts, err := c.Client.AppsV1().StatefulSets("apps").Create(ctx, petSet("db"), metav1.CreateOptions{})
	require.NoError(t, err, "StatefulSet through the webhook under its ServiceAccount")
	require.Equal(t, "db", sts.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet])
	pvs, err := c.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: mutate.LabelManagedBy + "=" + mutate.ManagedByValue})
	require.NoError(t, err)
	require.Len(t, pvs.Items, 1, "the webhook created the pet's PV")
	require.Eventually(t, func() bool {
		l, err := c.Client.CoordinationV1().Leases(helmchart.Namespace).Get(ctx, "petfabric-webhook-reconcile", metav1.GetOptions{})
		return err == nil && ptr.Deref(l.Spec.HolderIdentity, "") == "webhook-0"
	}, 30*time.Second, 200*time.Millisecond, "the webhook never held its reconcile Lease")

	// Agent main path: node-0's report written.
	reportName := "petfabric-node-node-0"
	require.Eventually(t, func() bool {
		_, err := c.Client.CoordinationV1().Leases(helmchart.Namespace).Get(ctx, reportName, metav1.GetOptions{})
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "the agent never wrote its node report %s", reportName)

	// Extender main path: filter for the pet's pod, which needs its claim, its PV and node-0's
	// report.
	var pod *corev1.Pod
	require.Eventually(t, func() bool {
		pod, err = c.Client.CoreV1().Pods("apps").Get(ctx, "db-0", metav1.GetOptions{})
		if err != nil {
			return false
		}
		pvc, err := c.Client.CoreV1().PersistentVolumeClaims("apps").Get(ctx, "data-db-0", metav1.GetOptions{})
		return err == nil && pvc.Status.Phase == corev1.ClaimBound
	}, 60*time.Second, 200*time.Millisecond, "pod db-0 and its bound claim never appeared")
	caPEM := secretKey(ctx, t, c, eSecret, "ca.crt")
	var result extenderv1.ExtenderFilterResult
	require.Eventually(t, func() bool {
		result = filter(t, extAddr, dnsNameOf(t, objs, eSecret), caPEM, pod, "node-0")
		// node-0 passes only by its report: the agent reached the backstore's one portal.
		return result.Error == "" && slices.Equal(ptr.Deref(result.NodeNames, nil), []string{"node-0"})
	}, 30*time.Second, 500*time.Millisecond, "the extender never passed node-0 on its report (last answer %+v)", result)
	t.Logf("extender filter for apps/db-0 on node-0: passed %v, failed %v %v", ptr.Deref(result.NodeNames, nil), result.FailedNodes, result.FailedAndUnresolvableNodes)
	// The recovery (node-0's first report reaching its portal) made the extender write its
	// requeue trigger, a CSIStorageCapacity in the release namespace.
	trigger := argValue(t, ectr, "--requeue-trigger-name")
	require.Eventually(t, func() bool {
		_, err := c.Client.StorageV1().CSIStorageCapacities(helmchart.Namespace).Get(ctx, trigger, metav1.GetOptions{})
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "the extender never wrote its requeue trigger %s", trigger)

	// The secondary scheduler: the pinned kube-scheduler with the rendered configuration,
	// its client and delegated authentication on the ServiceAccount's token.
	schedDeploy := helmchart.Find(objs, "Deployment", "petfabric-scheduler")
	sctr, svols := container(t, schedDeploy, "kube-scheduler", false)
	schedID := serviceAccountIdentity(ctx, t, c, helmchart.Namespace, ctrServiceAccount(t, schedDeploy), nil)
	schedMounts := configMapMounts(t, sctr, svols, objs)
	extCADir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(extCADir, "ca.crt"), caPEM, 0o600))
	schedMounts[mountPath(t, sctr, "extender-ca")] = extCADir
	schedConfig := schedulerConfig(t, schedMounts, "scheduler-config.yaml", schedID.kubeconfig)
	scheduler := startProgram(t, c.Dir, "petfabric-scheduler", schedulerBin.KubeScheduler, product.HostArgs(sctr, env, schedMounts, map[string]string{
		"--config": schedConfig, "--bind-address": "127.0.0.1", "--secure-port": fmt.Sprint(schedPort),
		"--authentication-kubeconfig": schedID.kubeconfig, "--authorization-kubeconfig": schedID.kubeconfig,
	}), nil)
	_, err = c.Client.CoreV1().Pods("apps").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec: corev1.PodSpec{SchedulerName: "petfabric-scheduler", Containers: []corev1.Container{{Name: "app", Image: "nginx",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}}}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		p, err := c.Client.CoreV1().Pods("apps").Get(ctx, "plain", metav1.GetOptions{})
		return err == nil && p.Spec.NodeName == "node-0"
	}, 60*time.Second, 200*time.Millisecond, "the secondary scheduler never scheduled apps/plain")
	require.Eventually(t, func() bool {
		l, err := c.Client.CoordinationV1().Leases(helmchart.Namespace).Get(ctx, "petfabric-scheduler", metav1.GetOptions{})
		return err == nil && ptr.Deref(l.Spec.HolderIdentity, "") != ""
	}, 30*time.Second, 200*time.Millisecond, "the secondary scheduler never held its leader Lease")

	// Nothing any program did was refused.
	time.Sleep(2 * time.Second) // a few more rounds of each loop
	for _, p := range []*program{webhook, agent, extender, scheduler} {
		assert.NotContains(t, strings.ToLower(p.log()), "forbidden", "%s was refused a call under the chart's RBAC", p.name)
	}

	// Outside each role: refused.
	refused := []struct {
		name string
		call func() error
	}{
		{"webhook deletes a Node", func() error {
			return webhookID.client.CoreV1().Nodes().Delete(ctx, "node-0", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{"webhook reads another Secret", func() error {
			_, err := webhookID.client.CoreV1().Secrets(helmchart.Namespace).Get(ctx, wSecret, metav1.GetOptions{})
			return err
		}},
		{"extender creates a PV", func() error {
			_, err := extID.client.CoreV1().PersistentVolumes().Create(ctx, pvs.Items[0].DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"extender writes a node report", func() error {
			l, err := c.Client.CoordinationV1().Leases(helmchart.Namespace).Get(ctx, reportName, metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = extID.client.CoordinationV1().Leases(helmchart.Namespace).Update(ctx, l, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}},
		{"agent lists Secrets", func() error {
			_, err := agentID.client.CoreV1().Secrets(helmchart.Namespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"agent reads PVs", func() error {
			_, err := agentID.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"scheduler reads the Datera Secret", func() error {
			_, err := schedID.client.CoreV1().Secrets(helmchart.Namespace).Get(ctx, helmchart.Release+"-datera", metav1.GetOptions{})
			return err
		}},
	}
	for _, r := range refused {
		err := r.call()
		assert.True(t, apierrors.IsForbidden(err), "%s: want 403 Forbidden, got %v", r.name, err)
	}
}

// argValue is the value of --flag in the container's args.
func argValue(t *testing.T, c corev1.Container, flag string) string {
	t.Helper()
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	t.Fatalf("container %s has no %s", c.Name, flag)
	return ""
}

// secretOfMount is the Secret of the container's TLS volume (the one mounted with the
// --tls-cert-file directory).
func secretOfMount(t *testing.T, c corev1.Container, vols []corev1.Volume) string {
	t.Helper()
	for _, a := range c.Args {
		if file, ok := strings.CutPrefix(a, "--tls-cert-file="); ok {
			for _, m := range c.VolumeMounts {
				if strings.HasPrefix(file, m.MountPath+"/") {
					for _, v := range vols {
						if v.Name == m.Name && v.Secret != nil {
							return v.Secret.SecretName
						}
					}
				}
			}
		}
	}
	t.Fatalf("container %s has no --tls-cert-file in a Secret volume", c.Name)
	return ""
}

// projectForTest projects Secret name into a new directory for the rest of the test.
func projectForTest(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	dir := t.TempDir()
	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	first := make(chan struct{})
	var once bool
	go func() {
		done <- projectSecret(pctx, c.Client, helmchart.Namespace, name, dir, 500*time.Millisecond, func(string) {
			if !once {
				once = true
				close(first)
			}
		})
	}()
	t.Cleanup(func() {
		stop()
		assert.NoError(t, <-done, "projecting Secret %s", name)
	})
	select {
	case <-first:
	case <-time.After(30 * time.Second):
		t.Fatalf("Secret %s never projected", name)
	}
	return dir
}

// configMapMounts writes each ConfigMap volume the container mounts (from the rendering) into
// a directory, and maps the mount path to it.
func configMapMounts(t *testing.T, c corev1.Container, vols []corev1.Volume, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range vols {
		if v.ConfigMap == nil {
			continue
		}
		path := ""
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name {
				path = m.MountPath
			}
		}
		if path == "" {
			continue
		}
		var cm corev1.ConfigMap
		require.NoError(t, helmchart.Decode(helmchart.Find(objs, "ConfigMap", v.ConfigMap.Name), &cm))
		dir := t.TempDir()
		for k, data := range cm.Data {
			require.NoError(t, os.WriteFile(filepath.Join(dir, k), []byte(data), 0o600))
		}
		out[path] = dir
	}
	return out
}

// schedulerConfig rewrites the rendered KubeSchedulerConfiguration (file in the directory a
// mount maps to) for a host process: its client on kubeconfig, every mounted path (the
// extender CA) in its local directory, and the extender reached at its local address by the
// name its certificate carries.
func schedulerConfig(t *testing.T, mounts map[string]string, file, kubeconfig string) string {
	t.Helper()
	var path string
	for _, dir := range mounts {
		if _, err := os.Stat(filepath.Join(dir, file)); err == nil {
			path = filepath.Join(dir, file)
		}
	}
	require.NotEmpty(t, path, "no mounted %s", file)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, yaml.Unmarshal(data, &cfg))
	cfg["clientConnection"] = map[string]any{"kubeconfig": kubeconfig}
	text, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	s := string(text)
	for from, to := range mounts {
		s = strings.ReplaceAll(s, from+"/", to+"/")
	}
	out := filepath.Join(t.TempDir(), file)
	require.NoError(t, os.WriteFile(out, []byte(s), 0o600))
	return out
}

// secretKey is key of Secret name in the release namespace.
func secretKey(ctx context.Context, t *testing.T, c *cluster.Cluster, name, key string) []byte {
	t.Helper()
	s, err := c.Client.CoreV1().Secrets(helmchart.Namespace).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, s.Data[key], "Secret %s has no %s", name, key)
	return s.Data[key]
}

// dnsNameOf is the first DNS name of the Certificate whose Secret is secretName.
func dnsNameOf(t *testing.T, objs []*unstructured.Unstructured, secretName string) string {
	t.Helper()
	for _, o := range helmchart.OfKind(objs, "Certificate") {
		s, _, _ := unstructuredString(o.Object, "spec", "secretName")
		if s != secretName {
			continue
		}
		names, _ := o.Object["spec"].(map[string]any)["dnsNames"].([]any)
		require.NotEmpty(t, names, "Certificate %s has no dnsNames", o.GetName())
		return names[0].(string)
	}
	t.Fatalf("no Certificate writes Secret %s", secretName)
	return ""
}

// filter posts a names-only ExtenderArgs for pod and nodes to the extender at addr, verifying
// its certificate for serverName against caPEM as kube-scheduler does.
func filter(t *testing.T, addr, serverName string, caPEM []byte, pod *corev1.Pod, nodes ...string) extenderv1.ExtenderFilterResult {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12},
	}}
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes})
	require.NoError(t, err)
	resp, err := client.Post("https://"+addr+"/filter", "application/json", bytes.NewReader(body)) //nolint:noctx // bounded by the client timeout
	if err != nil {
		return extenderv1.ExtenderFilterResult{Error: err.Error()}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return extenderv1.ExtenderFilterResult{Error: fmt.Sprintf("%s: %s", resp.Status, data)}
	}
	var out extenderv1.ExtenderFilterResult
	require.NoError(t, json.Unmarshal(data, &out), "filter answer %s", data)
	return out
}
