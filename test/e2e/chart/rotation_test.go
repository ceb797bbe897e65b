package chart

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"github.com/petfabric/petfabric/test/product"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/test/certmanager"
	"github.com/petfabric/petfabric/test/cluster"
	"github.com/petfabric/petfabric/test/helmchart"
)

// TestChartCertificateRotation installs the chart in url mode with its cert-manager chain
// (self-signed Issuer → CA Certificate → CA Issuer → serving Certificate for 127.0.0.1),
// issued by cert-manager's own controllers in-process, cainjector filling the webhook
// configuration's caBundle. The built webhook runs with the rendered Deployment's flags,
// serving the Secret's files as kubelet projects them (..data symlink swap), under
// failurePolicy Fail. While StatefulSets are created in a loop, (a) the serving Certificate is
// re-issued, then (b) the CA Certificate and after it the serving Certificate again. Every
// creation must succeed and be mutated, and each time the webhook must be seen serving the new
// certificate (new serial; after (b) signed by the new CA).
func TestChartCertificateRotation(t *testing.T) {
	cluster.RequireBinaries(t)
	bin := buildBinary(t, "./cmd/webhook")
	port, healthPort := fixtures.FreePort(t), fixtures.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// The class's Datera endpoint must be one the webhook accepts (pvoptions: port 7718/7717).
	values := fmt.Sprintf("webhook:\n  url: https://%s\n%s", addr, storageClassValues)
	urlObjs := helmchart.Objects(t, helmchart.Render(t, values, "--values", ciValuesFile("default")))
	// The url-mode rendering has no webhook Deployment (the webhook runs elsewhere): its flags
	// come from the in-cluster rendering of the same values.
	deployObjs := helmchart.Objects(t, helmchart.Render(t, storageClassValues, "--values", ciValuesFile("default")))

	var mwcName, leafName, caName string
	for _, o := range helmchart.OfKind(urlObjs, "MutatingWebhookConfiguration") {
		mwcName = o.GetName()
		ns, name, _ := strings.Cut(o.GetAnnotations()["cert-manager.io/inject-ca-from"], "/")
		require.Equal(t, helmchart.Namespace, ns, "inject-ca-from names the release namespace")
		leafName = name
	}
	require.NotEmpty(t, leafName, "the url-mode rendering injects the CA from a Certificate")
	var leaf cmapi.Certificate
	require.NoError(t, helmchart.Decode(helmchart.Find(urlObjs, "Certificate", leafName), &leaf))
	assert.Equal(t, []string{"127.0.0.1"}, leaf.Spec.IPAddresses, "the serving certificate names the url's host")
	for _, o := range helmchart.OfKind(urlObjs, "Certificate") {
		var crt cmapi.Certificate
		require.NoError(t, helmchart.Decode(o, &crt))
		if crt.Spec.IsCA {
			caName = crt.Name
		}
	}
	require.NotEmpty(t, caName, "the rendering has a CA Certificate")

	deploy := helmchart.Find(deployObjs, "Deployment", helmchart.Release+"-webhook")
	ctr, vols := container(t, deploy, "webhook", false)
	tlsMount := mountPath(t, ctr, secretVolume(t, vols, leaf.Spec.SecretName))

	c := cluster.Start(t, cluster.Options{Nodes: []cluster.NodeSpec{{Name: "node-0"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	certmanager.Start(t, c)
	cm, err := cmclient.NewForConfig(c.Config)
	require.NoError(t, err)
	createReleaseNamespace(ctx, t, c)
	out, err := helm(t, c, values, "install", helmchart.Release, helmchart.ChartDir(), "--namespace", helmchart.Namespace,
		"--values", ciValuesFile("default"))
	require.NoError(t, err, "helm install:\n%s", out)
	_, err = c.Kubectl("wait", "--for=condition=Ready", "--timeout=60s", "certificate/"+leafName, "certificate/"+caName, "--namespace", helmchart.Namespace)
	require.NoError(t, err, "the chart's certificates never became Ready")
	waitCABundle(ctx, t, c, mwcName, nil)

	// The Secret projected like a kubelet volume, and the webhook serving it.
	// The webhook runs as its rendered ServiceAccount (the chart's PV-writers policy admits
	// Datera PVs from that identity only).
	var sa corev1.ServiceAccount
	require.NoError(t, helmchart.Decode(helmchart.Find(deployObjs, "ServiceAccount", ctrServiceAccount(t, deploy)), &sa))
	webhookID := serviceAccountIdentity(ctx, t, c, helmchart.Namespace, sa.Name, nil)
	certDir := t.TempDir()
	var projections atomic.Int64
	projCtx, stopProjection := context.WithCancel(ctx)
	projDone := make(chan error, 1)
	go func() {
		projDone <- projectSecret(projCtx, c.Client, helmchart.Namespace, leaf.Spec.SecretName, certDir, 200*time.Millisecond, func(string) { projections.Add(1) })
	}()
	t.Cleanup(func() {
		stopProjection()
		assert.NoError(t, <-projDone, "projecting the serving Secret")
	})
	require.Eventually(t, func() bool { return projections.Load() > 0 }, 30*time.Second, 50*time.Millisecond, "serving Secret never projected")
	args := product.HostArgs(ctr, map[string]string{"POD_NAMESPACE": helmchart.Namespace, "POD_NAME": "webhook-0"},
		map[string]string{tlsMount: certDir},
		map[string]string{
			"--listen": addr, "--health-listen": fmt.Sprintf("127.0.0.1:%d", healthPort),
			"--kubeconfig": webhookID.kubeconfig, "--cert-reload-interval": "1s",
		})
	p := startProgram(t, c.Dir, "webhook", bin, args, nil)
	waitHTTP200(t, p, fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort), 30*time.Second)

	_, err = c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	waitMutating(ctx, t, c)

	// The load: one StatefulSet after another, each through the webhook under Fail.
	var attempts, failures atomic.Int64
	var failMu sync.Mutex
	var failMsgs []string
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; loadCtx.Err() == nil; i++ {
			attempts.Add(1)
			got, err := c.Client.AppsV1().StatefulSets("apps").Create(loadCtx, petSet(fmt.Sprintf("rot-%d", i)), metav1.CreateOptions{})
			if loadCtx.Err() != nil {
				attempts.Add(-1)
				return
			}
			if err == nil && got.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet] != got.Name {
				err = fmt.Errorf("created without the webhook's mutation")
			}
			if err != nil {
				failures.Add(1)
				failMu.Lock()
				if len(failMsgs) < 5 {
					failMsgs = append(failMsgs, fmt.Sprintf("rot-%d: %v", i, err))
				}
				failMu.Unlock()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	settle := func() { time.Sleep(2 * time.Second) } // admissions before and after each step

	settle()
	served0 := waitServed(t, addr, secretCert(ctx, t, c, leaf.Spec.SecretName))
	ca0 := secretCert(ctx, t, c, caSecretName(ctx, t, cm, caName))

	// (a) The serving certificate re-issued under the same CA.
	leafBefore := attempts.Load()
	reissue(ctx, t, cm, leafName)
	served1 := waitServed(t, addr, waitNewSecretCert(ctx, t, c, leaf.Spec.SecretName, served0))
	settle()
	leafAttempts := attempts.Load() - leafBefore
	require.NotEqual(t, served0.SerialNumber.String(), served1.SerialNumber.String())
	require.NoError(t, served1.CheckSignatureFrom(ca0), "the re-issued leaf is signed by the same CA")

	// (b) The CA re-issued, then the serving certificate: the new leaf chains to the new CA,
	// which cainjector added to caBundle next to the old one.
	caBefore := attempts.Load()
	reissue(ctx, t, cm, caName)
	ca1 := waitNewSecretCert(ctx, t, c, caSecretName(ctx, t, cm, caName), ca0)
	settle()
	reissue(ctx, t, cm, leafName)
	served2 := waitServed(t, addr, waitNewSecretCert(ctx, t, c, leaf.Spec.SecretName, served1))
	waitCABundle(ctx, t, c, mwcName, ca1)
	settle()
	caAttempts := attempts.Load() - caBefore
	stopLoad()
	<-loadDone

	require.NotEqual(t, served1.SerialNumber.String(), served2.SerialNumber.String())
	require.NoError(t, served2.CheckSignatureFrom(ca1), "after the CA and leaf re-issue the webhook serves a leaf of the new CA")
	assert.NotEqual(t, ca0.SerialNumber.String(), ca1.SerialNumber.String())
	failMu.Lock()
	defer failMu.Unlock()
	t.Logf("rotation: %d StatefulSet creations, %d failed; %d during the leaf re-issue, %d during the CA + leaf re-issue; serving serials %s → %s → %s",
		attempts.Load(), failures.Load(), leafAttempts, caAttempts, served0.SerialNumber, served1.SerialNumber, served2.SerialNumber)
	assert.Positive(t, leafAttempts)
	assert.Positive(t, caAttempts)
	assert.Zero(t, failures.Load(), "StatefulSet creations failed during rotation (first 5):\n%s", strings.Join(failMsgs, "\n"))
	assert.NotContains(t, p.log(), `"level":"ERROR"`, "the webhook logged errors")
	assert.NotContains(t, p.log(), "forbidden", "the webhook was refused a call under the chart's RBAC")
}

// storageClassValues is the chart's one Datera class, datera-gold, as the tests use it.
const storageClassValues = `storageClasses:
  - name: datera-gold
    backstoreServer: datera.example.com:7718
    fsType: xfs
    replica: 3
    reclaimPolicy: Retain
    volumeBindingMode: WaitForFirstConsumer
`

// petSet is a one-replica StatefulSet with a claim template of the chart's datera-gold class.
func petSet(name string) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "apps"},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To[int32](1),
			ServiceName: name,
			Selector:    &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}}},
			},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					StorageClassName: ptr.To("datera-gold"),
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			}},
		},
	}
}

// waitMutating waits until the apiserver calls the webhook (a dry-run create comes back mutated).
func waitMutating(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := c.Client.AppsV1().StatefulSets("apps").Create(ctx, petSet("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if last = err; err != nil {
			return false, nil
		}
		return got.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet] == "probe", nil
	})
	require.NoError(t, err, "the apiserver never called the webhook (last: %v)", last)
}

// waitCABundle waits until every hook of the webhook configuration carries a caBundle, and
// one holding want when want is not nil.
func waitCABundle(ctx context.Context, t *testing.T, c *cluster.Cluster, name string, want *x509.Certificate) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		cfg, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, h := range cfg.Webhooks {
			if len(h.ClientConfig.CABundle) == 0 {
				return false, nil
			}
			if want != nil && !bundleHas(h.ClientConfig.CABundle, want) {
				return false, nil
			}
		}
		return true, nil
	})
	require.NoError(t, err, "cainjector never injected the CA into %s", name)
}

func bundleHas(bundle []byte, cert *x509.Certificate) bool {
	for rest := bundle; ; {
		c, r, err := nextCert(rest)
		if err != nil {
			return false
		}
		if bytes.Equal(c.Raw, cert.Raw) {
			return true
		}
		rest = r
	}
}

// secretCert is the certificate (tls.crt) in the release namespace's Secret name.
func secretCert(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) *x509.Certificate {
	t.Helper()
	s, err := c.Client.CoreV1().Secrets(helmchart.Namespace).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	cert, err := parseCert(s.Data[corev1.TLSCertKey])
	require.NoError(t, err, "Secret %s tls.crt", name)
	return cert
}

// waitNewSecretCert waits until the Secret holds a certificate other than old, and returns it.
func waitNewSecretCert(ctx context.Context, t *testing.T, c *cluster.Cluster, name string, old *x509.Certificate) *x509.Certificate {
	t.Helper()
	var cur *x509.Certificate
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		cur = secretCert(ctx, t, c, name)
		return !bytes.Equal(cur.Raw, old.Raw), nil
	})
	require.NoError(t, err, "cert-manager never re-issued Secret %s", name)
	return cur
}

// waitServed waits until the webhook at addr serves want, and returns it.
func waitServed(t *testing.T, addr string, want *x509.Certificate) *x509.Certificate {
	t.Helper()
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := servedCert(addr)
		if err == nil && bytes.Equal(got.Raw, want.Raw) {
			return got
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("the webhook never served certificate serial %s (last error %v)", want.SerialNumber, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// caSecretName is the Secret of the CA Certificate name.
func caSecretName(ctx context.Context, t *testing.T, cm cmclient.Interface, name string) string {
	t.Helper()
	crt, err := cm.CertmanagerV1().Certificates(helmchart.Namespace).Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	return crt.Spec.SecretName
}

// reissue asks cert-manager to issue the Certificate again now, as `cmctl renew` does: it sets
// the Issuing condition.
func reissue(ctx context.Context, t *testing.T, cm cmclient.Interface, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crt, err := cm.CertmanagerV1().Certificates(helmchart.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if apiutil.CertificateHasCondition(crt, cmapi.CertificateCondition{Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionTrue}) {
			return false, nil // a previous issuance still running
		}
		apiutil.SetCertificateCondition(crt, crt.Generation, cmapi.CertificateConditionIssuing, cmmeta.ConditionTrue, "ManuallyTriggered", "re-issued by the rotation test")
		_, err = cm.CertmanagerV1().Certificates(helmchart.Namespace).UpdateStatus(ctx, crt, metav1.UpdateOptions{})
		return err == nil, nil
	})
	require.NoError(t, err, "trigger re-issue of Certificate %s", name)
}
