package e2e

import (
	"context"
	"fmt"
	"io"
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
	"github.com/petfabric/petfabric/test/cluster"
)

// TestWebhookBinary runs the built cmd/webhook as a process, configured by flags as the chart
// configures it: it must become ready, mutate and pre-create PVs through the apiserver, run
// the reconcile loop (its metrics show), and exit cleanly on SIGTERM.
func TestWebhookBinary(t *testing.T) {
	cluster.RequireBinaries(t)
	bin := filepath.Join(t.TempDir(), "webhook")
	build := exec.Command("go", "build", "-o", bin, "github.com/petfabric/petfabric/cmd/webhook")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build cmd/webhook: %s", out)

	c := cluster.Start(t, cluster.Options{Nodes: kwokNodes(1)})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	setupDateraNamespaces(ctx, t, c.Client, map[string]map[string]string{"apps": nil})

	ca, err := testpki.NewCA("webhook-binary-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)
	port, healthPort := freePort(t), freePort(t)

	logPath := filepath.Join(c.Dir, "webhook-binary.log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--kubeconfig="+c.Kubeconfig,
		fmt.Sprintf("--listen=127.0.0.1:%d", port), fmt.Sprintf("--health-listen=127.0.0.1:%d", healthPort),
		"--tls-cert-file="+certFile, "--tls-key-file="+keyFile,
		"--cluster-id=bin", "--lease-namespace="+credsNamespace, "--identity=webhook-0",
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
	assert.Equal(t, http.StatusOK, httpStatus(health+"/healthz"))

	w := &runningWebhook{URL: fmt.Sprintf("https://127.0.0.1:%d", port), CAPEM: ca.CertPEM}
	registerWebhook(ctx, t, c, w, admissionregistrationv1.Fail)
	_, err = c.Client.AppsV1().StatefulSets("apps").Create(ctx, statefulSet("apps", "db", 2, ptr.To("datera-gold")), metav1.CreateOptions{})
	require.NoError(t, err)
	for n := range 2 {
		pv := getPV(ctx, t, c.Client, "apps", fmt.Sprintf("data-db-%d", n))
		assert.Equal(t, fmt.Sprintf("bin_apps_data-db-%d", n), pv.Spec.FlexVolume.Options["volumeID"])
	}
	waitClaimsBound(ctx, t, c.Client, "apps", "data", "db", 2)

	metrics := httpBody(t, health+"/metrics")
	assert.Contains(t, metrics, `petfabric_webhook_admission_requests_total{result="patched",route="statefulsets"}`)
	assert.Contains(t, metrics, "petfabric_webhook_persistentvolumes_created_total 2")
	assert.Contains(t, metrics, "petfabric_reconcile_is_leader 1", "the single replica leads the reconcile loop")
	lease, err := c.Client.CoordinationV1().Leases(credsNamespace).Get(ctx, "petfabric-webhook-reconcile", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "webhook-0", *lease.Spec.HolderIdentity)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "SIGTERM must end the webhook cleanly")
	case <-time.After(40 * time.Second):
		t.Fatal("webhook did not exit after SIGTERM")
	}
	// It released its lease on the way out, so a successor leads at once.
	lease, err = c.Client.CoordinationV1().Leases(credsNamespace).Get(ctx, "petfabric-webhook-reconcile", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""), "lease released on shutdown")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpStatus(url string) int {
	resp, err := http.Get(url) //nolint:noctx // short-lived test probe
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}
