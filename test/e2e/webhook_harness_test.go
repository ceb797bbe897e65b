package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// runningWebhook is the real webhook server (pkg/webhook.Run, as cmd/webhook runs it) serving
// a test cluster from this process over TLS on 127.0.0.1.
type runningWebhook struct {
	URL   string // https://127.0.0.1:port
	CAPEM []byte
	stop  context.CancelFunc
	done  chan struct{} // closed when Run has returned; err holds its result
	err   error
}

// Stop shuts the webhook down gracefully and waits for it. Safe to call more than once.
func (w *runningWebhook) Stop(t testing.TB) {
	w.stop()
	select {
	case <-w.done:
		require.NoError(t, w.err)
	case <-time.After(40 * time.Second):
		t.Fatal("webhook did not shut down")
	}
}

func startWebhook(t testing.TB, c *cluster.Cluster, cfg mutate.Config, opts ...func(*webhook.RunConfig)) *runningWebhook {
	t.Helper()
	ca, err := testpki.NewCA("petfabric-webhook-test-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")}, "localhost")
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)

	logFile, err := os.Create(filepath.Join(c.Dir, "webhook.log"))
	require.NoError(t, err)
	t.Cleanup(func() { logFile.Close() })

	ready := make(chan string, 1)
	rc := webhook.RunConfig{
		Mutate: cfg,
		Serving: serving.Config{
			Listen: "127.0.0.1:0", HealthListen: "127.0.0.1:0",
			CertFile: certFile, KeyFile: keyFile, ShutdownTimeout: 5 * time.Second,
			Logger: slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
		OnServing: func(tlsAddr, _ string) { ready <- tlsAddr },
	}
	for _, o := range opts {
		o(&rc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &runningWebhook{CAPEM: ca.CertPEM, stop: cancel, done: make(chan struct{})}
	go func() {
		w.err = webhook.Run(ctx, c.Client, rc)
		close(w.done)
	}()
	select {
	case addr := <-ready:
		w.URL = "https://" + addr
	case <-w.done:
		t.Fatalf("webhook exited at start: %v", w.err)
	case <-time.After(30 * time.Second):
		t.Fatal("webhook did not become ready")
	}
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// registerWebhook installs the MutatingWebhookConfiguration the chart renders (test/helmchart),
// in url mode pointed at the test's webhook (no Service network in a kwok cluster) with the
// test CA as caBundle and the given failurePolicy, and waits until the apiserver calls it.
func registerWebhook(ctx context.Context, t testing.TB, c *cluster.Cluster, w *runningWebhook, policy admissionregistrationv1.FailurePolicyType) {
	t.Helper()
	cfg := chartWebhookConfig(t, w.URL, w.CAPEM, policy)
	_, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{})
	require.NoError(t, err)
	// The apiserver loads webhook configurations asynchronously: probe with a dry-run create
	// until the patch shows.
	probe := statefulSet("default", "webhook-probe", 1, ptr.To("datera-gold"))
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := c.Client.AppsV1().StatefulSets("default").Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, nil
		}
		return got.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet] == "webhook-probe", nil
	})
	require.NoError(t, err, "the apiserver never called the webhook")
}

// chartWebhookClasses are the Datera classes the e2e tests create (dateraClass); the chart's
// claim hook is called for claims of these (webhook.claimClasses) and for pinned claims.
var chartWebhookClasses = []string{"datera-gold"}

// chartWebhookConfig renders the chart's MutatingWebhookConfiguration for a webhook served at
// url (https://host:port) with the CA caPEM, under failurePolicy policy.
func chartWebhookConfig(t testing.TB, url string, caPEM []byte, policy admissionregistrationv1.FailurePolicyType) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	values, err := yaml.Marshal(map[string]any{
		"webhook": map[string]any{"url": url, "failurePolicy": string(policy), "claimClasses": chartWebhookClasses},
		// With a provided caBundle the chart needs the extender's Secret name too; only the
		// webhook configuration is used here.
		"tls": map[string]any{"caBundle": string(caPEM), "extenderSecretName": "petfabric-extender-serving"},
	})
	require.NoError(t, err)
	objs := helmchart.Objects(t, helmchart.Render(t, string(values)))
	var cfg admissionregistrationv1.MutatingWebhookConfiguration
	require.NoError(t, helmchart.Decode(helmchart.Find(objs, "MutatingWebhookConfiguration", helmchart.Release), &cfg), "the chart's webhook configuration")
	return &cfg
}

// webhookIgnoreLabel=webhookIgnoreValue on a namespace (or an object) keeps the apiserver from
// calling the webhook there (the chart's webhook.optOutLabel).
const (
	webhookIgnoreLabel = "petfabric.io/webhook"
	webhookIgnoreValue = "disabled"
)

const (
	credsNamespace = "petfabric-system"
	credsSecret    = "datera-creds"
)

// dateraClass is the StorageClass an admin installs (ARCHITECTURE.md, data flow step 1).
func dateraClass(name, backstore string, reclaim corev1.PersistentVolumeReclaimPolicy, params map[string]string) *storagev1.StorageClass {
	p := map[string]string{
		"replica": "3", "fsType": "xfs", "backstoreServer": backstore,
		"secretName": credsSecret, "secretNamespace": credsNamespace,
	}
	for k, v := range params {
		p[k] = v
	}
	return &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name},
		Provisioner:       mutate.Provisioner,
		Parameters:        p,
		ReclaimPolicy:     &reclaim,
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
}

func statefulSet(ns, name string, replicas int32, class *string, templates ...string) *appsv1.StatefulSet {
	if len(templates) == 0 {
		templates = []string{"data"}
	}
	labels := map[string]string{"app": name}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            &replicas,
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
			},
		},
	}
	for _, tpl := range templates {
		sts.Spec.Template.Spec.Containers[0].VolumeMounts = append(sts.Spec.Template.Spec.Containers[0].VolumeMounts,
			corev1.VolumeMount{Name: tpl, MountPath: "/" + tpl})
		sts.Spec.VolumeClaimTemplates = append(sts.Spec.VolumeClaimTemplates, corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: tpl},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: class,
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		})
	}
	return sts
}

func kwokNodes(n int) []cluster.NodeSpec {
	nodes := make([]cluster.NodeSpec, n)
	for i := range nodes {
		nodes[i] = cluster.NodeSpec{Name: fmt.Sprintf("node-%d", i)}
	}
	return nodes
}

func getQuantity(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}
