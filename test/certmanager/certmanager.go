// Package certmanager runs cert-manager's own issuing controllers and cainjector in the test
// process, against a test/cluster control plane: the chart's self-signed Issuer → CA
// Certificate → CA Issuer → serving Certificate chain is issued by the real cert-manager code,
// and the real cainjector fills the MutatingWebhookConfiguration's caBundle. cert-manager ships
// its binaries as separate modules the module proxy does not serve, so the library packages are
// wired up here the way its controller and cainjector commands wire them.
//
// Test code only: cmd/ and pkg/ never import it, so cert-manager stays out of the programs.
package certmanager

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// The controllers an Issuer/Certificate chain of self-signed and CA issuers needs; each
	// registers itself with controllerpkg.Known() (cert-manager's controller command imports
	// the same packages).
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"

	"github.com/petfabric/petfabric/test/cluster"
)

// Module is cert-manager's module path; its version is pinned in go.mod.
const Module = "github.com/cert-manager/cert-manager"

// CRDDir is the directory of cert-manager's plain CRD manifests inside the pinned module.
func CRDDir() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return "", fmt.Errorf("locate module %s: %w: %s", Module, err, stderr)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("cert-manager CRDs: %w", err)
	}
	return dir, nil
}

// CRDFiles lists the CRD manifests (*.yaml) in CRDDir.
func CRDFiles() ([]string, error) {
	dir, err := CRDDir()
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*cert-manager.io_*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("list cert-manager CRDs in %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no cert-manager CRDs in %s", dir)
	}
	sort.Strings(files)
	return files, nil
}

// InstallCRDs applies cert-manager's CRDs to c and waits until the apiserver serves them.
func InstallCRDs(c *cluster.Cluster) error {
	files, err := CRDFiles()
	if err != nil {
		return err
	}
	args := []string{"apply", "--server-side", "--field-manager=petfabric-test"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	if _, err := c.Kubectl(args...); err != nil {
		return fmt.Errorf("install cert-manager CRDs: %w", err)
	}
	wait := []string{"wait", "--for=condition=Established", "--timeout=60s"}
	for _, f := range files {
		// acme.cert-manager.io_challenges.yaml → crd/challenges.acme.cert-manager.io
		group, plural, _ := strings.Cut(strings.TrimSuffix(filepath.Base(f), ".yaml"), "_")
		wait = append(wait, "crd/"+plural+"."+group)
	}
	if _, err := c.Kubectl(wait...); err != nil {
		return fmt.Errorf("wait for cert-manager CRDs: %w", err)
	}
	// The apiserver publishes a new CRD in discovery shortly after it is Established, and
	// kubectl caches discovery on disk from before the CRDs existed: api-resources refreshes
	// that cache, so poll it until the kinds show.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.Kubectl("api-resources", "--api-group=cert-manager.io", "-o", "name")
		if err == nil && strings.Contains(out, "certificates.cert-manager.io") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the apiserver's discovery never listed cert-manager.io certificates (%v): %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// fileLogger writes one timestamped line per log call to w.
func fileLogger(w io.Writer) logr.Logger {
	var mu sync.Mutex
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s %s %s\n", time.Now().UTC().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{Verbosity: 2})
}

// switchWriter forwards to the current test's log file (nothing when there is none).
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = w
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return len(p), nil
	}
	return s.w.Write(p)
}

var (
	globalLog     switchWriter
	globalLogOnce sync.Once
)

// CertManager is cert-manager running in the test process.
type CertManager struct {
	// LogPath is the file both components log to.
	LogPath string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	errs   []error
}

// Start installs the CRDs, then runs the issuing controllers (every constructor in
// controllerpkg.Known(): certificates-*, certificaterequests-{approver,issuer-ca,
// issuer-selfsigned}, issuers) and cainjector (Mutating/ValidatingWebhookConfigurations,
// sourcing CAs from Certificates and Secrets) against c, as cluster-admin. Both stop when the
// test ends; a component that failed is reported then.
func Start(t testing.TB, c *cluster.Cluster) *CertManager {
	t.Helper()
	if err := InstallCRDs(c); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(c.Dir, "cert-manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create cert-manager log: %v", err)
	}
	log := fileLogger(logFile)
	// cainjector's reconcilers log through controller-runtime's global logger: point it at
	// this test's file (tests of a package start cert-manager one at a time).
	globalLog.set(logFile)
	globalLogOnce.Do(func() { ctrl.SetLogger(fileLogger(&globalLog)) })

	ctx, cancel := context.WithCancel(logf.NewContext(context.Background(), log))
	cm := &CertManager{LogPath: logPath, cancel: cancel}
	t.Cleanup(func() {
		cm.Stop()
		globalLog.set(nil)
		logFile.Close()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("=== cert-manager log (%s), last %d lines:\n%s", logPath, len(lines), strings.Join(lines, "\n"))
		}
		if err := cm.Err(); err != nil {
			t.Errorf("cert-manager: %v", err)
		}
	})
	if err := cm.startControllers(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := cm.startCAInjector(ctx, c, log); err != nil {
		t.Fatal(err)
	}
	return cm
}

// Stop stops both components and waits for them. Safe to call more than once.
func (cm *CertManager) Stop() {
	cm.cancel()
	cm.wg.Wait()
}

// Err is the first error a component ended with, if any.
func (cm *CertManager) Err() error {
	cm.errMu.Lock()
	defer cm.errMu.Unlock()
	if len(cm.errs) == 0 {
		return nil
	}
	return cm.errs[0]
}

func (cm *CertManager) fail(err error) {
	cm.errMu.Lock()
	defer cm.errMu.Unlock()
	cm.errs = append(cm.errs, err)
}

// startControllers builds a controller context and runs every registered controller with the
// informer factories started after all of them registered their informers.
func (cm *CertManager) startControllers(ctx context.Context, c *cluster.Cluster) error {
	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         c.Kubeconfig,
		KubernetesAPIQPS:   100,
		KubernetesAPIBurst: 200,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: "kube-system"},
		CertificateOptions: controllerpkg.CertificateOptions{
			// A failed request is retried after seconds, not cert-manager's production hour.
			CertificateRequestMinimumBackoffDuration: time.Second,
			CertificateRequestMaximumBackoffDuration: 10 * time.Second,
		},
	})
	if err != nil {
		return fmt.Errorf("cert-manager controller context: %w", err)
	}
	names := make([]string, 0, len(controllerpkg.Known()))
	for name := range controllerpkg.Known() {
		names = append(names, name)
	}
	sort.Strings(names)
	var ctrls []controllerpkg.Interface
	for _, name := range names {
		ctl, err := controllerpkg.Known()[name](factory)
		if err != nil {
			return fmt.Errorf("cert-manager controller %s: %w", name, err)
		}
		ctrls = append(ctrls, ctl)
	}
	base, err := factory.Build()
	if err != nil {
		return fmt.Errorf("cert-manager controller context: %w", err)
	}
	for i, ctl := range ctrls {
		cm.wg.Go(func() {
			if err := ctl.Run(2, ctx); err != nil && ctx.Err() == nil {
				cm.fail(fmt.Errorf("controller %s: %w", names[i], err))
			}
		})
	}
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.SharedInformerFactory.Start(ctx.Done())
	cm.wg.Go(func() {
		<-ctx.Done()
		base.KubeSharedInformerFactory.Shutdown()
		base.SharedInformerFactory.Shutdown()
	})
	return nil
}

// startCAInjector runs cainjector in a controller-runtime manager, as its command does: Secrets
// read uncached (the manager caches only their metadata), no leader election, no metrics or
// health listeners.
func (cm *CertManager) startCAInjector(ctx context.Context, c *cluster.Cluster, log logr.Logger) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))
	cfg := rest.CopyConfig(c.Config)
	// cainjector derives its field manager from the user agent; an empty one fails every patch.
	cfg.UserAgent = "cert-manager-cainjector"
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Logger:                 log.WithName("cainjector"),
		LeaderElection:         false,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Client:                 client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		// controller-runtime refuses a controller name already used in this process; tests
		// of a package start cert-manager once per control plane.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return fmt.Errorf("cainjector manager: %w", err)
	}
	if err := cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   true,
			cainjector.ValidatingWebhookConfigurationName: true,
		},
	}); err != nil {
		return fmt.Errorf("cainjector: %w", err)
	}
	cm.wg.Go(func() {
		if err := mgr.Start(ctx); err != nil && ctx.Err() == nil {
			cm.fail(fmt.Errorf("cainjector: %w", err))
		}
	})
	return nil
}
