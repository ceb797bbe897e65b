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

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/pkg/webhook"
	"github.com/petfabric/petfabric/test/cluster"
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

// registerWebhook installs the MutatingWebhookConfiguration the chart installs, pointed at
// the test's webhook by URL (no Service network in a kwok cluster), and waits until the
// apiserver calls it.
func registerWebhook(ctx context.Context, t testing.TB, c *cluster.Cluster, w *runningWebhook, policy admissionregistrationv1.FailurePolicyType) {
	t.Helper()
	sideEffects := admissionregistrationv1.SideEffectClassNoneOnDryRun
	hook := func(name, path string, ops []admissionregistrationv1.OperationType, resources ...string) admissionregistrationv1.MutatingWebhook {
		group := ""
		if resources[0] == "statefulsets" || resources[0] == "statefulsets/scale" {
			group = "apps"
		}
		return admissionregistrationv1.MutatingWebhook{
			Name:         name,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(w.URL + path), CABundle: w.CAPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: admissionregistrationv1.Rule{
				APIGroups: []string{group}, APIVersions: []string{"v1"}, Resources: resources,
			}}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "kube-public"}},
				{Key: webhookIgnoreLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"ignore"}},
			}},
			FailurePolicy:           &policy,
			SideEffects:             &sideEffects,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
		}
	}
	create, update := admissionregistrationv1.Create, admissionregistrationv1.Update
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "petfabric"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook("statefulsets.petfabric.io", webhook.PathStatefulSets, []admissionregistrationv1.OperationType{create, update}, "statefulsets"),
			hook("scale.petfabric.io", webhook.PathScale, []admissionregistrationv1.OperationType{update}, "statefulsets/scale"),
			hook("claims.petfabric.io", webhook.PathClaims, []admissionregistrationv1.OperationType{create}, "persistentvolumeclaims"),
		},
	}
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

// webhookIgnoreLabel=ignore on a namespace keeps the apiserver from calling the webhook there.
const webhookIgnoreLabel = "petfabric.io/webhook"

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
