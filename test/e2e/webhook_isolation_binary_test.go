package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookIsolationBinaryDefaults runs the built cmd/webhook without --cluster-id: it derives
// the cluster ID from the kube-system namespace's UID (never an empty prefix, which let two
// clusters on one backstore share volumes), applies --max-ordinals, takes the client limits
// by flag, and refuses a limit that cannot work, naming the flag.
func TestWebhookIsolationBinaryDefaults(t *testing.T) {
	cluster.RequireBinaries(t)
	bin := filepath.Join(t.TempDir(), "webhook")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/petfabric/petfabric/cmd/webhook").CombinedOutput()
	require.NoError(t, err, "build cmd/webhook: %s", out)

	out, err = exec.Command(bin, "--kube-api-burst=0").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "--kube-api-burst 0: want at least 1")

	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(1)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	setupDateraNamespaces(ctx, t, c.Client, map[string]map[string]string{"apps": nil})
	ks, err := c.Client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	require.NoError(t, err)
	wantID, err := pvoptions.DefaultClusterID(string(ks.UID))
	require.NoError(t, err)

	ca, err := testpki.NewCA("webhook-isolation-binary-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)
	port, healthPort := freePort(t), freePort(t)
	logPath := filepath.Join(c.Dir, "webhook-isolation-binary.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--kubeconfig="+c.Kubeconfig,
		fmt.Sprintf("--listen=127.0.0.1:%d", port), fmt.Sprintf("--health-listen=127.0.0.1:%d", healthPort),
		"--tls-cert-file="+certFile, "--tls-key-file="+keyFile,
		"--lease-namespace="+credsNamespace, "--identity=webhook-iso",
		"--max-ordinals=3", "--kube-api-qps=20", "--kube-api-burst=40",
		"--reconcile-kube-api-qps=10", "--reconcile-kube-api-burst=20",
		"--read-header-timeout=3s", "--idle-timeout=10s",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("webhook log:\n%s", data)
		}
	})
	health := fmt.Sprintf("http://127.0.0.1:%d", healthPort)
	require.Eventually(t, func() bool { return httpStatus(health+"/readyz") == http.StatusOK }, 30*time.Second, 100*time.Millisecond, "webhook never ready")
	w := &runningWebhook{URL: fmt.Sprintf("https://127.0.0.1:%d", port), CAPEM: ca.CertPEM}
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)

	_, err = c.Client.AppsV1().StatefulSets("apps").Create(ctx, statefulSet("apps", "db", 3, ptr.To("datera-gold")), metav1.CreateOptions{})
	require.NoError(t, err)
	pv := getPV(ctx, t, c.Client, "apps", "data-db-0")
	assert.Equal(t, wantID+"_apps_data-db-0", pv.Spec.FlexVolume.Options["volumeID"])
	assert.Equal(t, wantID, pv.Spec.FlexVolume.Options[pvoptions.OptClusterID])
	assert.True(t, strings.HasPrefix(wantID, "k"))

	_, err = c.Kubectl("-n", "apps", "scale", "statefulset", "db", "--replicas=4")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at most 3")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "SIGTERM must end the webhook cleanly")
	case <-time.After(40 * time.Second):
		t.Fatal("webhook did not exit after SIGTERM")
	}
}
