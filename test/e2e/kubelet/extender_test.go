package kubelete2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/fixtures"
)

// schedulerExtender is the built cmd/extender in kube-scheduler's path, as test/e2e/extender
// runs it: HTTPS with client certificates, not ignorable.
type schedulerExtender struct {
	api, health            net.Listener
	certFile, keyFile, caF string
	healthAddr             string
}

// newSchedulerExtender reserves the extender's ports and certificates and returns the scheduler
// configuration that calls it (the control plane must start with it).
func newSchedulerExtender(t testing.TB) (*schedulerExtender, *schedconfigv1.KubeSchedulerConfiguration) {
	t.Helper()
	ca, err := testpki.NewCA("kubelet-e2e-extender-ca")
	require.NoError(t, err)
	serving, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	clientPair, err := ca.Client("system:kube-scheduler")
	require.NoError(t, err)
	dir := t.TempDir()
	x := &schedulerExtender{}
	x.certFile, x.keyFile, err = serving.WriteFiles(dir, "extender")
	require.NoError(t, err)
	x.caF = filepath.Join(dir, "client-ca.crt")
	require.NoError(t, os.WriteFile(x.caF, ca.CertPEM, 0o600))
	x.api, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	x.health, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return x, &schedconfigv1.KubeSchedulerConfiguration{Extenders: []schedconfigv1.Extender{{
		URLPrefix: "https://" + x.api.Addr().String(), FilterVerb: "filter", PrioritizeVerb: "prioritize", Weight: 1,
		EnableHTTPS: true, NodeCacheCapable: true, Ignorable: false, HTTPTimeout: metav1.Duration{Duration: 5 * time.Second},
		TLSConfig: &schedconfigv1.ExtenderTLSConfig{CAData: ca.CertPEM, CertData: clientPair.CertPEM, KeyData: clientPair.KeyPEM},
	}}}
}

// run starts the binary on the reserved addresses and waits until it is ready; it is stopped
// with SIGTERM when the test ends.
func (x *schedulerExtender) run(t testing.TB, c *cluster.Cluster, bin string) {
	t.Helper()
	apiAddr, healthAddr := x.api.Addr().String(), x.health.Addr().String()
	x.healthAddr = healthAddr
	x.api.Close() // the binary binds the addresses itself
	x.health.Close()
	cmd := exec.Command(bin, "--kubeconfig="+c.Kubeconfig, "--namespace="+releaseNS, "--listen="+apiAddr,
		"--health-listen="+healthAddr, "--tls-cert-file="+x.certFile, "--tls-key-file="+x.keyFile, "--client-ca-file="+x.caF)
	startProcess(t, c, "extender", cmd)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + healthAddr + "/readyz") //nolint:noctx // test probe
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && string(b) == "ok\n"
	}, 30*time.Second, 100*time.Millisecond, "extender never ready")
}

// simPortal is the portal the simulator hands out for every volume.
const simPortal = "192.0.2.1:3260"

// reportNodes writes every node's report Lease, as its agent would (the agent probes iSCSI
// portals, and the loop-device stand-in has none to probe): the node reaches the backstore's
// portal. It renews them every 5s until the test ends.
func (e *env) reportNodes(t testing.TB, backstore string) {
	t.Helper()
	write := func(ctx context.Context) error {
		for _, name := range e.names {
			r := &placement.Report{Version: placement.ReportVersion, Initiator: e.nodes[name].InitiatorName, ProbedAt: time.Now(),
				Attached:   []string{},
				Backstores: map[string]placement.BackstoreReport{backstore: {Portals: map[string]placement.PortalReport{simPortal: {OK: true, RTTMicros: 100}}}}}
			enc, err := r.Encode()
			if err != nil {
				return err
			}
			l := &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName(name), Namespace: releaseNS,
					Labels: map[string]string{placement.LeaseManagedByLabel: placement.LeaseManagedByValue,
						placement.LeaseComponentLabel: placement.LeaseComponentValue},
					Annotations: map[string]string{placement.ReportAnnotation: enc}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](30),
					RenewTime: &metav1.MicroTime{Time: time.Now()}},
			}
			leases := e.cs.CoordinationV1().Leases(releaseNS)
			cur, err := leases.Get(ctx, l.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				_, err = leases.Create(ctx, l, metav1.CreateOptions{})
			case err == nil:
				l.ResourceVersion = cur.ResourceVersion
				_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
			}
			if err != nil {
				return fmt.Errorf("report of %s: %w", name, err)
			}
		}
		return nil
	}
	require.NoError(t, write(e.ctx))
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = write(ctx)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// metric returns the value of one sample (name with its labels, as exposed) of the extender's
// /metrics.
func (x *schedulerExtender) metric(t testing.TB, sample string) float64 {
	t.Helper()
	return fixtures.MetricSample(t, "http://"+x.healthAddr+"/metrics", sample)
}
