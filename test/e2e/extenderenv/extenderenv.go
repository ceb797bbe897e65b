// Package extenderenv starts a real control plane (test/cluster) whose kube-scheduler calls
// petfabric's extender, run in the test process by pkg/extender.Run (what cmd/extender runs),
// over mTLS; and writes node report Leases the way the node agent does. It serves tests and
// benchmarks alike (testing.TB), in test/e2e and test/e2e/extender.
package extenderenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/test/cluster"
)

// Options configure Start.
type Options struct {
	// Nodes are the kwok nodes.
	Nodes []cluster.NodeSpec
	// Namespace holds the report Leases (and the requeue trigger); Start creates it.
	Namespace string
	// Requeue is the extender's requeue trigger configuration.
	Requeue extender.RequeueConfig
	// ExtraControllerManagerFlags are passed to kube-controller-manager.
	ExtraControllerManagerFlags []string
	// ManagedResources, when set, limit the extender to the pods requesting one of these (the
	// chart's configuration: petfabric's managedResource, ignoredByScheduler); other pods are
	// scheduled without calling it.
	ManagedResources []schedconfigv1.ExtenderManagedResource
}

// Env is a running control plane with the extender in the scheduler's path.
type Env struct {
	C          *cluster.Cluster
	Client     kubernetes.Interface
	Namespace  string
	HealthAddr string
	// APIAddr is the extender's TLS address; scheduler is an mTLS client to it with the
	// scheduler's identity.
	APIAddr   string
	scheduler *http.Client
}

// Start binds the extender's ports, starts the control plane with a scheduler configured to
// call them (names-only mode, not ignorable), runs the extender until the test ends and
// waits until it is ready. Its JSON log is extender.log in the cluster directory; the tail is
// printed when the test fails.
func Start(tb testing.TB, o Options) *Env {
	tb.Helper()
	cluster.RequireBinaries(tb)
	ca, err := testpki.NewCA("petfabric-extenderenv-ca")
	require.NoError(tb, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(tb, err)
	clientPair, err := ca.Client("system:kube-scheduler")
	require.NoError(tb, err)
	dir := tb.TempDir()
	certFile, keyFile, err := pair.WriteFiles(dir, "extender")
	require.NoError(tb, err)
	caFile := filepath.Join(dir, "client-ca.crt")
	require.NoError(tb, os.WriteFile(caFile, ca.CertPEM, 0o600))
	api, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	health, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)

	c := cluster.Start(tb, cluster.Options{
		Nodes:                       o.Nodes,
		ExtraControllerManagerFlags: o.ExtraControllerManagerFlags,
		Scheduler: &schedconfigv1.KubeSchedulerConfiguration{Extenders: []schedconfigv1.Extender{{
			URLPrefix: "https://" + api.Addr().String(), FilterVerb: "filter", PrioritizeVerb: "prioritize",
			Weight: 1, EnableHTTPS: true, NodeCacheCapable: true, Ignorable: false, ManagedResources: o.ManagedResources,
			HTTPTimeout: metav1.Duration{Duration: 5 * time.Second},
			TLSConfig:   &schedconfigv1.ExtenderTLSConfig{CAData: ca.CertPEM, CertData: clientPair.CertPEM, KeyData: clientPair.KeyPEM},
		}}},
	})
	ctx := context.Background()
	_, err = c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}}, metav1.CreateOptions{})
	require.NoError(tb, cluster.IgnoreAlreadyExists(err))

	logFile, err := os.Create(filepath.Join(c.Dir, "extender.log"))
	require.NoError(tb, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- extender.Run(runCtx, c.Client, extender.Config{
			Namespace: o.Namespace, Requeue: o.Requeue, Serving: serving.Config{
				Listener: api, HealthListener: health, CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile,
				Logger: slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})),
			},
		})
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(tb, err)
		case <-time.After(20 * time.Second):
			tb.Error("extender did not stop")
		}
		_ = logFile.Close()
		if tb.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				tb.Logf("extender log (tail):\n%s", tail(b, 4000))
			}
		}
	})
	roots := x509.NewCertPool()
	require.True(tb, roots.AppendCertsFromPEM(ca.CertPEM))
	clientCert, err := tls.X509KeyPair(clientPair.CertPEM, clientPair.KeyPEM)
	require.NoError(tb, err)
	e := &Env{C: c, Client: c.Client, Namespace: o.Namespace, HealthAddr: health.Addr().String(), APIAddr: api.Addr().String(),
		scheduler: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12}}}}
	tb.Cleanup(e.scheduler.CloseIdleConnections)
	require.NoError(tb, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		body, err := e.get("/readyz")
		return err == nil && body == "ok\n", nil
	}), "extender never became ready")
	return e
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var httpClient = http.Client{Timeout: 5 * time.Second}

func (e *Env) get(path string) (string, error) {
	resp, err := httpClient.Get("http://" + e.HealthAddr + path)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Metrics returns the extender's /metrics text.
func (e *Env) Metrics(tb testing.TB) string {
	tb.Helper()
	body, err := e.get("/metrics")
	require.NoError(tb, err)
	return body
}

// Filter asks the extender, as kube-scheduler does (names-only), which of nodes can host pod,
// and returns the names it passed.
func (e *Env) Filter(ctx context.Context, pod *corev1.Pod, nodes []string) ([]string, error) {
	body, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nodes})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+e.APIAddr+"/filter", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.scheduler.Do(req)
	if err != nil {
		return nil, fmt.Errorf("extender filter: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("extender filter: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("extender filter: status %d: %s", resp.StatusCode, out)
	}
	var res extenderv1.ExtenderFilterResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("extender filter: %w", err)
	}
	if res.Error != "" {
		return nil, fmt.Errorf("extender filter: %s", res.Error)
	}
	if res.NodeNames == nil {
		return nil, nil
	}
	return *res.NodeNames, nil
}

// WaitFilter waits until the extender passes exactly want of nodes for pod: its caches have
// seen the reports, claims and PVs a test just wrote, so what the scheduler does next is
// decided on them and not on an informer's lag.
func (e *Env) WaitFilter(tb testing.TB, pod *corev1.Pod, nodes, want []string) {
	tb.Helper()
	var got []string
	var ferr error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, ferr = e.Filter(ctx, pod, nodes)
		return ferr == nil && slices.Equal(got, want), nil
	})
	require.NoError(tb, err, "the extender never passed %v for %s/%s (last answer %v, error %v)", want, pod.Namespace, pod.Name, got, ferr)
}

// Report writes (creates or replaces) node's report Lease as the node agent does, renewed
// now, with the given portals of one backstore.
func (e *Env) Report(tb testing.TB, node, backstore string, portals map[string]placement.PortalReport, ttl time.Duration, attached ...string) {
	tb.Helper()
	require.NoError(tb, e.WriteReport(context.Background(), node, map[string]placement.BackstoreReport{backstore: {Portals: portals}}, ttl, attached...))
}

// WriteReport is Report returning the error (for writers running in goroutines).
func (e *Env) WriteReport(ctx context.Context, node string, backstores map[string]placement.BackstoreReport, ttl time.Duration, attached ...string) error {
	if attached == nil {
		attached = []string{}
	}
	r := &placement.Report{Version: placement.ReportVersion, Initiator: "iqn.2024-01.io.petfabric.e2e:" + node,
		ProbedAt: time.Now(), Attached: attached, Backstores: backstores}
	enc, err := r.Encode()
	if err != nil {
		return err
	}
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName(node), Namespace: e.Namespace,
			Labels: map[string]string{placement.LeaseManagedByLabel: placement.LeaseManagedByValue,
				placement.LeaseComponentLabel: placement.LeaseComponentValue},
			Annotations: map[string]string{placement.ReportAnnotation: enc}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To(int32(ttl / time.Second)),
			RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}
	leases := e.Client.CoordinationV1().Leases(e.Namespace)
	cur, err := leases.Get(ctx, l.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
	case err == nil:
		l.ResourceVersion = cur.ResourceVersion
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	return err
}
