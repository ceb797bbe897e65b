package extendere2e

import (
	"github.com/petfabric/petfabric/test/fixtures"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/iscsi/probetest"
	"github.com/petfabric/petfabric/test/cluster"
)

// TestBuiltBinariesPlacePod runs the shipped programs, configured by their flags as the
// DaemonSet and Deployment run them: `flex agent` probes a real tgtd portal and writes its
// Lease, the built `extender` serves the real kube-scheduler over mTLS, and a pod with a
// Datera volume lands on the probed node. Both exit cleanly on SIGTERM.
func TestBuiltBinariesPlacePod(t *testing.T) {
	const initiator = "iqn.2024-01.io.petfabric.e2e:probed-bin"
	tgt := probetest.Start(t)
	tgt.AddTarget(probetest.TargetOptions{IQN: "iqn.2024-01.io.petfabric.e2e:vol-bin", Initiators: []string{initiator}})
	bins := buildBinaries(t, "extender", "flex")

	e := startWith(t, func(t *testing.T, c *cluster.Cluster, api, health net.Listener, certFile, keyFile, caFile string) {
		apiAddr, healthAddr := api.Addr().String(), health.Addr().String()
		// The binary binds the addresses itself.
		api.Close()
		health.Close()
		runBinary(t, c, bins["extender"], "--kubeconfig="+c.Kubeconfig, "--namespace="+releaseNS,
			"--listen="+apiAddr, "--health-listen="+healthAddr,
			"--tls-cert-file="+certFile, "--tls-key-file="+keyFile, "--client-ca-file="+caFile)
	}, true, "probed", "silent")
	e.backstore = "127.0.0.1:7717"

	dir := t.TempDir()
	backstores := filepath.Join(dir, "backstores.json")
	require.NoError(t, os.WriteFile(backstores, []byte(`{"backstores": {"127.0.0.1:7717": {"portals": ["`+tgt.Portal+`"]}}}`), 0o600))
	runBinary(t, e.c, bins["flex"], "agent", "--kubeconfig="+e.c.Kubeconfig, "--node=probed", "--namespace="+releaseNS,
		"--initiator="+initiator, "--backstores="+backstores, "--state-dir="+filepath.Join(dir, "state"),
		"--interval=500ms", "--ttl=30s", "--metrics-listen=127.0.0.1:0")

	e.waitPortalReported(t, "probed", "127.0.0.1:7717", tgt.Portal, true)

	e.volume(t, "bin", "pf-bin", nil, true)
	e.pod(t, "bin", "bin")
	require.Equal(t, "probed", e.waitScheduled(t, "bin"))
}

// buildBinaries builds the named cmd/ programs once per test into a temp dir.
func buildBinaries(t *testing.T, names ...string) map[string]string {
	t.Helper()
	var programs []fixtures.Program
	for _, n := range names {
		programs = append(programs, fixtures.Program{Name: n})
	}
	return fixtures.Build(t, programs...)
}

// runBinary starts a program with its output in the cluster dir; when the test ends it sends
// SIGTERM and requires a clean exit (printing the log when the test failed).
func runBinary(t *testing.T, c *cluster.Cluster, bin string, args ...string) {
	t.Helper()
	name := filepath.Base(bin)
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name += "-" + args[0] // the mode, e.g. flex-agent
	}
	logPath := filepath.Join(c.Dir, name+".log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	var once sync.Once
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				require.NoError(t, err, "%s must exit cleanly on SIGTERM", bin)
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Errorf("%s did not exit within 30s of SIGTERM", bin)
			}
			logFile.Close()
			if t.Failed() {
				if b, err := os.ReadFile(logPath); err == nil {
					t.Logf("%s log (tail):\n%s", name, fixtures.Tail(string(b), 30))
				}
			}
		})
	})
}
