package e2e

import (
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
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

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/test/cluster"
)

// buildWebhook builds cmd/webhook into a temporary directory and returns the binary's path.
func buildWebhook(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "webhook")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/petfabric/petfabric/cmd/webhook").CombinedOutput()
	require.NoError(t, err, "build cmd/webhook: %s", out)
	return bin
}

// webhookProcess is the built cmd/webhook running as a process against a test cluster.
type webhookProcess struct {
	cmd     *exec.Cmd
	exited  chan error
	health  string          // http://127.0.0.1:<port> serving /healthz, /readyz, /metrics
	webhook *runningWebhook // the HTTPS address and CA, for registerWebhook
}

// startWebhookProcess runs bin against c with a serving certificate from a fresh CA, the
// listen, TLS and kubeconfig flags, and flags; its log goes to c.Dir/<name>.log and is shown
// when the test fails. It returns once /readyz answers 200; the process is killed at cleanup.
func startWebhookProcess(t *testing.T, c *cluster.Cluster, bin, name string, flags ...string) *webhookProcess {
	t.Helper()
	ca, err := testpki.NewCA(name + "-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)
	port, healthPort := fixtures.FreePort(t), fixtures.FreePort(t)

	logPath := filepath.Join(c.Dir, name+".log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	t.Cleanup(func() { _ = logFile.Close() })
	args := append([]string{
		"--kubeconfig=" + c.Kubeconfig,
		fmt.Sprintf("--listen=127.0.0.1:%d", port), fmt.Sprintf("--health-listen=127.0.0.1:%d", healthPort),
		"--tls-cert-file=" + certFile, "--tls-key-file=" + keyFile,
	}, flags...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	p := &webhookProcess{cmd: cmd, exited: make(chan error, 1), health: fmt.Sprintf("http://127.0.0.1:%d", healthPort),
		webhook: &runningWebhook{URL: fmt.Sprintf("https://127.0.0.1:%d", port), CAPEM: ca.CertPEM}}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, data)
		}
	})
	require.Eventually(t, func() bool { return httpStatus(p.health+"/readyz") == http.StatusOK }, 30*time.Second, 100*time.Millisecond, "webhook never ready")
	return p
}

// stop sends SIGTERM and requires a clean exit within 40 seconds.
func (p *webhookProcess) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.exited:
		require.NoError(t, err, "SIGTERM must end the webhook cleanly")
	case <-time.After(40 * time.Second):
		t.Fatal("webhook did not exit after SIGTERM")
	}
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
